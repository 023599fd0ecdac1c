"""Event-driven 2-D convolution: scatter each non-zero input (a spike) into the outputs it reaches."""
import numpy as np
from numba import njit, prange


def tap_targets(size: int, kernel: int, stride: int, pad: int, dilation: int, out_size: int) -> np.ndarray:
    """targets[p, k]: the output index that input position p reaches through kernel tap k, or -1.

    Input p feeds output i through tap k when i * stride - pad + k * dilation == p.
    """
    targets = np.full((size, kernel), -1, np.int64)
    for p in range(size):
        for k in range(kernel):
            num = p + pad - k * dilation
            if num >= 0 and num % stride == 0 and num // stride < out_size:
                targets[p, k] = num // stride
    return targets


@njit(cache=True, inline="always")
def _axpy(dst, src, val, start, count):
    """dst[start:start+count] += val * src[start:start+count] (a contiguous, vectorisable loop)."""
    for o in range(start, start + count):
        dst[o] += val * src[o]


@njit(parallel=True, cache=True, fastmath=False)
def conv2d_events(x, wt, bias, rows, cols, groups, out):
    """out[b] = conv(x[b]) + bias for every sample b, touching only non-zero inputs.

    x: (B, C, H, W) float32. wt: (Cg, KH, KW, O) float64, the weight with output channels last.
    bias: (O,) float64. rows: (H, KH) and cols: (W, KW) from ``tap_targets`` (strides, pads, dilations).
    out: (B, O, Ho, Wo) float32. Sums are float64, rounded once to float32, like the reference ops.
    Each thread owns whole samples, so no two threads write the same output and the order of accumulation
    per output is fixed: bit-identical results for any thread count.
    """
    n_batch, n_in, height, width = x.shape
    cg, kh, kw, n_out = wt.shape
    ho, wo = out.shape[2], out.shape[3]
    og = n_out // groups
    for b in prange(n_batch):
        acc = np.empty((ho, wo, n_out), np.float64)
        for i in range(ho):
            for j in range(wo):
                for o in range(n_out):
                    acc[i, j, o] = bias[o]
        for c in range(n_in):
            g = c // cg
            ci = c - g * cg
            o0 = g * og
            for y in range(height):
                for xx in range(width):
                    val = np.float64(x[b, c, y, xx])
                    if val == 0.0:
                        continue
                    for ky in range(kh):
                        i = rows[y, ky]
                        if i < 0:
                            continue
                        for kx in range(kw):
                            j = cols[xx, kx]
                            if j >= 0:
                                _axpy(acc[i, j], wt[ci, ky, kx], val, o0, og)
        for o in range(n_out):
            for i in range(ho):
                for j in range(wo):
                    out[b, o, i, j] = np.float32(acc[i, j, o])
