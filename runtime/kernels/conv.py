"""2-D convolution for the time-unrolled batch: event-driven scatter of non-zero inputs, or im2col for BLAS.

Event kernels give every thread a block of whole samples (and its own scratch accumulator, allocated once per
block: fresh large allocations per sample cost page faults), so no two threads write the same output and the
accumulation order per output is fixed: bit-identical results for any thread count. Indices are unsigned so
that Numba emits no negative-index wraparound and LLVM vectorises the inner loops. The accumulator has the
dtype of the bias. float32 (the engine's default precision): float32 products added in float32 from the bias,
in the canonical order (input channel, kernel row, kernel column) of ``reference_ops.conv_float32``, which they
equal bit for bit. float64 (``precision="float64"``): float64 sums of exact float32 x float32 products, rounded
once to float32, like the float64 reference ops.
"""
import numpy as np
from numba import njit, prange

from .neuron import burst_fire


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
def _fill_bias(acc, bias, positions):
    n_out = bias.shape[0]
    for o in range(n_out):  # first position, then doubling copies (contiguous, vectorised)
        acc[o] = bias[o]
    filled = n_out
    total = positions * n_out
    while filled < total:
        step = min(filled, total - filled)
        acc[filled:filled + step] = acc[:step]
        filled += step


@njit(cache=True, inline="always")
def _store(acc, out, b):
    """out[b] (O, Ho, Wo) float32 from the channels-last accumulator."""
    n_out, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    for o in range(n_out):
        for i in range(ho):
            for j in range(wo):
                out[b, o, i, j] = np.float32(acc[(i * wo + j) * n_out + o])


@njit(cache=True, inline="always")
def _row_events(x, b, c, y, cols):
    """Columns of the non-zero inputs of row x[b, c, y] into ``cols``; their count. Branch-free: spikes are
    sparse and random, so a branch per input would be mispredicted at every spike."""
    n = 0
    for xx in range(x.shape[3]):
        cols[n] = xx
        n += x[b, c, y, xx] != 0.0
    return n


@njit(cache=True, inline="always")
def _scatter_unit(acc, x, b, wflip, rows, pad_w, n_out, wo):
    n_in, height, width = x.shape[1], x.shape[2], x.shape[3]
    kh = rows.shape[1]
    kw = wflip.shape[0] // (n_in * kh * n_out)
    events = np.empty(width, np.int64)
    for c in range(n_in):
        for y in range(height):
            for e in range(_row_events(x, b, c, y, events)):
                xx = events[e]
                val = x[b, c, y, xx]  # promoted to the weights' dtype by the product
                j_first = xx + pad_w - (kw - 1)  # output column reached through the last tap
                f0 = max(0, -j_first)
                f1 = min(kw, wo - j_first)
                if f1 <= f0:
                    continue
                length = np.uint64((f1 - f0) * n_out)
                for ky in range(kh):
                    i = rows[y, ky]
                    if i < 0:
                        continue
                    a = np.uint64((i * wo + j_first + f0) * n_out)
                    w0 = np.uint64(((c * kh + ky) * kw + f0) * n_out)
                    for o in range(length):
                        acc[a + o] += val * wflip[w0 + o]


@njit(cache=True, inline="always")
def _scatter_any(acc, x, b, wt, rows, cols, groups, n_out, wo):
    n_in, height, width = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = rows.shape[1], cols.shape[1]
    cg = n_in // groups
    og = np.uint64(n_out // groups)
    events = np.empty(width, np.int64)
    for c in range(n_in):
        g = c // cg
        ci = c - g * cg
        o0 = g * (n_out // groups)
        for y in range(height):
            if rows[y].max() < 0:  # a row no output reads (stride > kernel, e.g. a 1x1 stride-2 shortcut)
                continue
            for e in range(_row_events(x, b, c, y, events)):
                xx = events[e]
                val = x[b, c, y, xx]
                for ky in range(kh):
                    i = rows[y, ky]
                    if i < 0:
                        continue
                    for kx in range(kw):
                        j = cols[xx, kx]
                        if j < 0:
                            continue
                        a = np.uint64((i * wo + j) * n_out + o0)
                        w0 = np.uint64(((ci * kh + ky) * kw + kx) * n_out + o0)
                        for o in range(og):
                            acc[a + o] += val * wt[w0 + o]


@njit(cache=True, inline="always")
def _accumulate(acc, x, b, wt, wflip, bias, rows, cols, pad_w, groups, wo):
    """acc (Ho*Wo*O, channels-last, the bias's dtype) = bias + conv(x[b]), from the non-zero inputs of x[b] only.

    ``wflip`` non-empty: the common case (groups 1, unit stride and dilation along the width), with the
    weight (C, KH, KW, O) kx-reversed so that a spike at column xx, which reaches output columns xx + pad_w - kx,
    adds one contiguous KW * O block per kernel row. Otherwise ``wt`` (Cg, KH, KW, O), tap by tap.
    """
    n_out = bias.shape[0]
    _fill_bias(acc, bias, acc.shape[0] // n_out)
    if wflip.shape[0] > 0:
        _scatter_unit(acc, x, b, wflip, rows, pad_w, n_out, wo)
    else:
        _scatter_any(acc, x, b, wt, rows, cols, groups, n_out, wo)


@njit(parallel=True, cache=True, fastmath=False)
def conv2d_events(x, wt, wflip, bias, rows, cols, pad_w, groups, out, n_blocks):
    """out[b] = conv(x[b]) + bias for every sample b, touching only non-zero inputs (any stride/dilation/groups).

    x: (B, C, H, W) float32. wt: (Cg * KH * KW * O,) float32 or float64, the weight as (Cg, KH, KW, O),
    flattened; wflip: see ``_accumulate`` (empty when not applicable). bias: (O,), the weight's dtype. rows: (H, KH) and cols: (W, KW) from ``tap_targets``. out: (B, O, Ho, Wo)
    float32.
    """
    n_batch = x.shape[0]
    n_out, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    per = (n_batch + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        acc = np.empty(ho * wo * n_out, bias.dtype)
        for b in range(blk * per, min(n_batch, (blk + 1) * per)):
            _accumulate(acc, x, b, wt, wflip, bias, rows, cols, pad_w, groups, wo)
            _store(acc, out, b)


@njit(cache=True, inline="always")
def _pool_out(cur, dst, kh, kw, wo, n_out, div, pacc):
    """Average pooling of one step's channels-last spikes ``cur`` over windows that tile the map (stride ==
    kernel, no padding) into dst (O, Hp, Wp): float64 sums of each window, rows then columns as
    ``pool._plane_tiled`` adds them, divided by ``div`` and rounded once, so the same float32 values as the
    pool after the spikes. Returns the number of non-zero outputs (the next layer's input density)."""
    hp, wp = dst.shape[1], dst.shape[2]
    d = dst.reshape(n_out * hp * wp)
    nonzero = 0
    for i in range(hp):
        for q in range(wp * n_out):
            pacc[q] = 0.0
        for a in range(kh):
            for j in range(wp):
                for b in range(kw):
                    src = np.uint64(((i * kh + a) * wo + j * kw + b) * n_out)
                    dst0 = np.uint64(j * n_out)
                    for o in range(np.uint64(n_out)):
                        pacc[dst0 + o] += cur[src + o]
        for o in range(n_out):
            for j in range(wp):
                val = np.float32(pacc[j * n_out + o] / div)
                d[(o * hp + i) * wp + j] = val
                nonzero += np.int64(val != 0.0)
    return nonzero


@njit(cache=True)
def _sample_if(x, n, wt, wflip, bias, rows, cols, pad_w, groups, wo, residual, v_th, shift, subtract, burst, vn, net, pool, pool_div,
               out, acc, cur, kb, pacc, counts, nonzero):
    """All T steps of sample n of ``conv2d_events_if`` (a function of its own: LLVM optimises it better than the
    body of a parallel loop)."""
    timesteps = x.shape[0]
    n_out = bias.shape[0]
    size = acc.shape[0]
    plane = size // n_out
    for t in range(timesteps):
        _accumulate(acc, x[t], n, wt, wflip, bias, rows, cols, pad_w, groups, wo)
        if residual.shape[0] > 0:  # the channels-first residual added to the channels-last current
            rt = residual[t, n].reshape(size)
            for p in range(plane):
                for o in range(n_out):
                    cur[p * n_out + o] = np.float32(acc[p * n_out + o]) + rt[o * plane + p]
        else:
            for q in range(size):
                cur[q] = np.float32(acc[q])
        fired = 0
        if burst > 1:  # burst neurons (reset subtract), as kernels/neuron._block_if
            for p in range(plane):
                for o in range(n_out):
                    q = p * n_out + o
                    vn[q] = vn[q] + (cur[q] + shift[o])
                    kb[q] = 0
            burst_fire(vn, kb, v_th, plane, n_out, burst)
            for p in range(plane):
                for o in range(n_out):
                    q = p * n_out + o
                    cur[q] = np.float32(kb[q]) * v_th[o]
                    fired += np.int64(kb[q] > 0)
        elif net.shape[0] > 0:  # signed neurons (reset subtract), as kernels/neuron._block_signed
            for p in range(plane):
                for o in range(n_out):
                    q = p * n_out + o
                    th = v_th[o]
                    vk = vn[q] + (cur[q] + shift[o])
                    up = vk >= th
                    down = vk < np.float32(0.0) and net[q] > 0  # never with up: v_th > 0
                    cur[q] = th if up else (-th if down else np.float32(0.0))
                    vn[q] = vk - th if up else (vk + th if down else vk)
                    net[q] += np.int32(up) - np.int32(down)
                    fired += np.int64(up) + np.int64(down)
        else:
            for p in range(plane):
                for o in range(n_out):
                    q = p * n_out + o
                    th = v_th[o]
                    vk = vn[q] + (cur[q] + shift[o])
                    fire = vk >= th
                    cur[q] = th if fire else np.float32(0.0)
                    reset = vk - th if subtract else np.float32(0.0)
                    vn[q] = reset if fire else vk
                    fired += np.int64(fire)
        counts[t] += fired
        if pool.shape[0] > 0:
            nonzero[0] += _pool_out(cur, out[t, n], pool[0], pool[1], wo, n_out, pool_div, pacc)
        else:
            st = out[t, n].reshape(size)  # channels-last spikes out to (O, Ho, Wo): sequential writes
            for o in range(n_out):
                for p in range(plane):
                    st[o * plane + p] = cur[p * n_out + o]


@njit(parallel=True, cache=True, fastmath=False)
def conv2d_events_if(x, wt, wflip, bias, rows, cols, pad_w, groups, out_hw, residual, v_th, shift, subtract, burst, v, net, pool,
                     pool_div, out, counts, nonzero):
    """Conv followed by its integrate-and-fire layer, fused: the current of a sample and step is integrated while
    it is in cache and never stored. Each thread owns whole samples for all T steps (their membranes too).

    x: (T, N, C, H, W) float32 spikes. out_hw: int64 [Ho, Wo] of the Conv. residual: (T, N, O, Ho, Wo) float32
    added to the current (an Add between the Conv and the neuron, as in residual blocks), or an empty array.
    v_th, shift: (O,) float32. v: (N * Ho * Wo * O,) float32 membranes **channels-last** (the accumulator's
    order, so that the neuron update reads everything contiguously), updated. net: empty for IF neurons, or for
    signed ones their (N * Ho * Wo * O,) int32 net spike counts, channels-last, updated. burst: most spikes per neuron
    and step (1: plain or signed; > 1: unsigned burst neurons). pool: empty, then out is the
    spikes (T, N, O, Ho, Wo) float32; or int64 [KH, KW] of an AveragePool that tiles the map and is the spikes'
    only reader, then out is its (T, N, O, Ho // KH, Wo // KW) output (``_pool_out``, divisor ``pool_div``) and
    the spikes are never stored. counts: (n_blocks, T) int64 events (non-zero spikes) per block of samples and step; nonzero:
    (n_blocks, 1) int64 non-zero pooled outputs per block. The neuron update is the same float32 arithmetic as
    ``if_layer_state``, on the same float32 current, branch-free.
    """
    n_batch = x.shape[1]
    n_out = bias.shape[0]
    size = out_hw[0] * out_hw[1] * n_out
    n_blocks = counts.shape[0]
    per = (n_batch + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        acc = np.empty(size, bias.dtype)
        cur = np.empty(size, np.float32)
        kb = np.empty(size if burst > 1 else 0, np.int32)  # burst neurons' spikes per step
        pacc = np.empty(out.shape[4] * n_out if pool.shape[0] > 0 else 0, np.float64)
        for n in range(blk * per, min(n_batch, (blk + 1) * per)):
            _sample_if(x, n, wt, wflip, bias, rows, cols, pad_w, groups, out_hw[1], residual, v_th, shift, subtract, burst,
                       v[n * size:(n + 1) * size], net[n * size:(n + 1) * size] if net.shape[0] > 0 else net, pool, pool_div,
                       out, acc, cur, kb, pacc, counts[blk], nonzero[blk])


@njit(parallel=True, cache=True, fastmath=False)
def im2col(x, rows, cols, c0, wo, out):
    """out[b * Ho * Wo + i * Wo + j, (c, ky, kx)] = x[b, c0 + c, tap input] in float64, 0 where the tap is padding.

    Every input is scattered into each column it feeds (rows/cols from ``tap_targets``); one thread per sample.
    """
    n_batch, _, height, width = x.shape
    kh, kw = rows.shape[1], cols.shape[1]
    cg = out.shape[1] // (kh * kw)
    positions = out.shape[0] // n_batch
    for b in prange(n_batch):
        base = b * positions
        for r in range(positions):
            for k in range(out.shape[1]):
                out[base + r, k] = 0.0
        for c in range(cg):
            for y in range(height):
                for xx in range(width):
                    val = np.float64(x[b, c0 + c, y, xx])
                    for ky in range(kh):
                        i = rows[y, ky]
                        if i < 0:
                            continue
                        for kx in range(kw):
                            j = cols[xx, kx]
                            if j >= 0:
                                out[base + i * wo + j, (c * kh + ky) * kw + kx] = val
