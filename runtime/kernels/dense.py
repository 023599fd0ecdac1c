"""Event-driven fully connected layers: add one weight row per non-zero input."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=False)
def matmul_events(x, w, bias, out, n_blocks):
    """out[b] = x[b] @ w + bias, touching only non-zero entries of x.

    x: (B, K) float32, w: (K * N,) float64 (the (K, N) weight flattened), bias: (N,) float64, out: (B, N) float32.
    Each thread owns a block of samples; sums are float64, rounded once to float32, like the reference ops.
    Unsigned indices let LLVM vectorise the row update.
    """
    n_batch, k_in = x.shape
    n_out = bias.shape[0]
    per = (n_batch + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        acc = np.empty(n_out, np.float64)
        for b in range(blk * per, min(n_batch, (blk + 1) * per)):
            for o in range(n_out):
                acc[o] = bias[o]
            for k in range(k_in):
                val = np.float64(x[b, k])
                if val == 0.0:
                    continue
                w0 = np.uint64(k * n_out)
                for o in range(np.uint64(n_out)):
                    acc[o] += val * w[w0 + o]
            for o in range(n_out):
                out[b, o] = np.float32(acc[o])
