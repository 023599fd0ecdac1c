"""Event-driven fully connected layers: add one weight row per non-zero input."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=False)
def matmul_events(x, w, bias, out, n_blocks):
    """out[b] = x[b] @ w + bias, touching only non-zero entries of x.

    x: (B, K) float32, w: (K * N,) (the (K, N) weight flattened) and bias: (N,), both float64 or both float32,
    out: (B, N) float32. Each thread owns a block of samples. Sums are in the bias's dtype, from the bias, k
    ascending: float64 sums of exact products, rounded once to float32, like the float64 reference ops; or float32
    sums in the canonical order of ``reference_ops.gemm_float32`` (a zero input adds nothing to either).
    Unsigned indices let LLVM vectorise the row update.
    """
    n_batch, k_in = x.shape
    n_out = bias.shape[0]
    per = (n_batch + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        acc = np.empty(n_out, bias.dtype)
        for b in range(blk * per, min(n_batch, (blk + 1) * per)):
            for o in range(n_out):
                acc[o] = bias[o]
            for k in range(k_in):
                val = x[b, k]  # promoted to the weights' dtype by the product
                if val == 0.0:
                    continue
                w0 = np.uint64(k * n_out)
                for o in range(np.uint64(n_out)):
                    acc[o] += val * w[w0 + o]
            for o in range(n_out):
                out[b, o] = np.float32(acc[o])
