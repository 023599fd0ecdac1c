"""Average pooling over the last two axes of (B, C, H, W), one thread per block of (sample, channel) planes."""
import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _plane_general(src, dst, height, width, ho, wo, kh, kw, sh, sw, pt, pl, div):
    for i in range(ho):
        y0 = i * sh - pt
        ys, ye = max(y0, 0), min(y0 + kh, height)
        for j in range(wo):
            x0 = j * sw - pl
            xs, xe = max(x0, 0), min(x0 + kw, width)
            acc = 0.0
            for y in range(ys, ye):
                row = np.uint64(y * width)
                for xx in range(xs, xe):
                    acc += src[row + np.uint64(xx)]
            dst[np.uint64(i * wo + j)] = np.float32(acc / div[i * wo + j])


@njit(cache=True, inline="always")
def _plane_tiled(src, dst, width, ho, wo, kh, kw, div, acc):
    """Non-overlapping windows inside the input (stride == kernel, no padding): a row of outputs at a time, in
    the same order per window (rows, then columns) as the general loop, so the same float64 sums."""
    for i in range(ho):
        for j in range(wo):
            acc[j] = 0.0
        for a in range(kh):
            row = np.uint64((i * kh + a) * width)
            for j in range(wo):
                for b in range(kw):
                    acc[j] += src[row + np.uint64(j * kw + b)]
        for j in range(wo):
            dst[np.uint64(i * wo + j)] = np.float32(acc[j] / div[i * wo + j])


@njit(parallel=True, cache=True, fastmath=False)
def avg_pool2d(x, geometry, divisor, out):
    """out[b, c, i, j] = sum of x over window (i, j) / divisor[i, j], summed in float64 like the reference.

    geometry: int64 [kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left]; windows are clipped to the
    input, and ``divisor`` holds each window's count (ONNX's count_include_pad and ceil_mode decide it).
    Planes are flattened and indexed with unsigned offsets (no wraparound checks in the inner loops); windows
    that tile the input without padding (the usual 2x2 / stride 2) take a row-at-a-time loop.
    """
    n_batch, n_ch, height, width = x.shape
    ho, wo = out.shape[2], out.shape[3]
    kh, kw, sh, sw, pt, pl = geometry[0], geometry[1], geometry[2], geometry[3], geometry[4], geometry[5]
    planes = n_batch * n_ch
    xf = x.reshape(planes, height * width)
    of = out.reshape(planes, ho * wo)
    div = divisor.astype(np.float64).reshape(ho * wo)
    tiled = kh == sh and kw == sw and pt == 0 and pl == 0 and ho * kh <= height and wo * kw <= width
    n_blocks = min(planes, 64)
    per = (planes + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        acc = np.empty(wo, np.float64)
        for plane in range(blk * per, min(planes, (blk + 1) * per)):
            if tiled:
                _plane_tiled(xf[plane], of[plane], width, ho, wo, kh, kw, div, acc)
            else:
                _plane_general(xf[plane], of[plane], height, width, ho, wo, kh, kw, sh, sw, pt, pl, div)
