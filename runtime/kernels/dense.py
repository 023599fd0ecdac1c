"""Event-driven fully connected layers: add one weight row per non-zero input."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=False)
def matmul_events(x, w, bias, out):
    """out[b] = x[b] @ w + bias, touching only non-zero entries of x.

    x: (B, K) float32, w: (K, N) float64, bias: (N,) float64, out: (B, N) float32. One thread per sample;
    sums are float64, rounded once to float32, like the reference ops.
    """
    n_batch, k_in = x.shape
    n_out = w.shape[1]
    for b in prange(n_batch):
        acc = bias.copy()
        for k in range(k_in):
            val = np.float64(x[b, k])
            if val == 0.0:
                continue
            for o in range(n_out):
                acc[o] += val * w[k, o]
        for o in range(n_out):
            out[b, o] = np.float32(acc[o])
