"""Integrate-and-fire neurons over all T steps of one layer (layer-major execution)."""
import numpy as np
from numba import njit, prange

BLOCK = 256  # neurons per parallel work item: long enough for the inner loop to vectorise


@njit(cache=True)
def _load_block(start, width, inner, v_th, shift, v, vb, th, sh):
    """Copy neurons start..start+width's membranes and their channels' v_th and shift into the block buffers.
    The channel is stepped along, not divided out per neuron: at T = 1 two integer divisions per neuron cost
    more than the whole neuron update."""
    n_ch = v_th.shape[0]
    ch = (start // inner) % n_ch
    k = 0
    run = inner - start % inner
    while k < width:  # runs of one channel: contiguous copies, vectorised
        run = min(run, width - k)
        t, s = v_th[ch], shift[ch]
        for j in range(np.uint64(k), np.uint64(k + run)):
            vb[j] = v[np.uint64(start) + j]
            th[j] = t
            sh[j] = s
        k += run
        run = inner
        ch = ch + 1 if ch + 1 < n_ch else 0


@njit(cache=True, inline="always")
def burst_fire(vm, k, th, n_rows, n_cols, burst):
    """Burst neurons' firing after their input: up to ``burst`` subtractions of the threshold, each where the
    membrane still reaches it, added to k[q] (the runtime zeroes k first: its spike is k * th; the calibration
    keeps counting over the steps). vm, k: (n_rows * n_cols,) in rows of n_cols neurons, neuron (r, c) with
    threshold th[c] (one row of per-neuron thresholds, or rows of pixels with per-channel ones). One pass per
    subtraction over all neurons, so the loop over neurons is innermost and vectorises; the passes stop when one
    fires nobody. Each neuron sees the same subtractions in the same order as the loop
    ``for _ in range(burst): if v >= th: v -= th`` of the reference, so the same bits."""
    cols = np.uint64(n_cols)  # unsigned: no negative-index wraparound, so LLVM vectorises (4x faster)
    for _ in range(burst):
        more = False
        for r in range(np.uint64(n_rows)):
            base = r * cols
            for c in range(cols):
                q = base + c
                t = th[c]
                up = vm[q] >= t
                vm[q] = vm[q] - (t if up else np.float32(0.0))  # v - 0 is v: the same bits as no subtraction
                k[q] += np.int32(up)
                more |= up
        if not more:
            break


@njit(cache=True)
def _block_if(x, start, stop, timesteps, v_th, shift, v, inner, subtract, burst, spikes, counts, vb, kb, th, sh):
    """Neurons start..stop of ``if_layer_state`` for all steps (a function of its own: LLVM vectorises it better
    than the body of a parallel loop). ``burst`` > 1: up to that many spikes a step (reset subtract)."""
    const_input = x.shape[0] == 1
    width = stop - start
    _load_block(start, width, inner, v_th, shift, v, vb, th, sh)
    for t in range(timesteps):
        xt = x[0 if const_input else t, start:stop]
        st = spikes[t, start:stop]
        fired = 0
        if burst > 1:  # a branch per step, not per neuron: the loops stay branch-free and vectorised
            for k in range(width):
                vb[k] = vb[k] + (xt[k] + sh[k])
                kb[k] = 0
            burst_fire(vb, kb, th, 1, width, burst)
            for k in range(width):
                st[k] = np.float32(kb[k]) * th[k]
                fired += np.int64(kb[k] > 0)
        else:
            for k in range(width):  # branch-free: fired or not is random, a branch would be mispredicted
                vk = vb[k] + (xt[k] + sh[k])
                fire = vk >= th[k]
                st[k] = th[k] if fire else np.float32(0.0)
                reset = vk - th[k] if subtract else np.float32(0.0)
                vb[k] = reset if fire else vk
                fired += np.int64(fire)
        counts[t] = fired
    for k in range(width):
        v[start + k] = vb[k]


@njit(cache=True)
def _block_signed(x, start, stop, timesteps, v_th, shift, v, net, inner, spikes, counts, vb, nb, th, sh):
    """Signed neurons start..stop of ``if_layer_state`` for all steps, branch-free as ``_block_if``."""
    const_input = x.shape[0] == 1
    width = stop - start
    _load_block(start, width, inner, v_th, shift, v, vb, th, sh)
    nb[:width] = net[start:stop]
    for t in range(timesteps):
        xt = x[0 if const_input else t, start:stop]
        st = spikes[t, start:stop]
        events = 0
        for k in range(width):
            vk = vb[k] + (xt[k] + sh[k])
            up = vk >= th[k]
            down = vk < np.float32(0.0) and nb[k] > 0  # never with up: v_th > 0
            st[k] = th[k] if up else (-th[k] if down else np.float32(0.0))
            vb[k] = vk - th[k] if up else (vk + th[k] if down else vk)
            nb[k] += np.int32(up) - np.int32(down)
            events += np.int64(up) + np.int64(down)
        counts[t] = events
    for k in range(width):
        v[start + k] = vb[k]
        net[start + k] = nb[k]


@njit(parallel=True, cache=True, fastmath=False)
def if_layer_state(x, timesteps, v_th, shift, v, net, inner, subtract, burst, spikes, counts):
    """Simulate one neuron layer for ``timesteps`` steps.

    x: (Tx, M) float32 currents, Tx == 1 for a constant (analog) current or Tx == timesteps.
    v_th, shift: (C,) float32 per channel (C == 1 for layer-wide values); element m has channel
    (m // inner) % C. v: (M,) float32 membranes, read at the start and left as they are after the last step, so
    that a run can continue block by block (early stop). net: empty for IF neurons; for signed ones (reset
    "subtract") their (M,) int32 net spike counts, kept like ``v``: a neuron whose membrane is below 0 after the
    step's input and whose net count is positive fires -v_th and gains v_th. burst: most spikes per neuron and
    step (1: plain; > 1: reset "subtract", unsigned). spikes: (timesteps, M) float32 output, 0 or v_th (or -v_th,
    or k * v_th). counts: (n_blocks, timesteps) int64 events (non-zero spikes, of either sign or any size) per
    block and step, summed by the caller (each block is owned by one thread).
    """
    m_total = x.shape[1]
    n_blocks = (m_total + BLOCK - 1) // BLOCK
    signed = net.shape[0] > 0
    for blk in prange(n_blocks):
        vb = np.empty(BLOCK, np.float32)
        th = np.empty(BLOCK, np.float32)
        sh = np.empty(BLOCK, np.float32)
        start = blk * BLOCK
        stop = min(start + BLOCK, m_total)
        if signed:
            _block_signed(x, start, stop, timesteps, v_th, shift, v, net, inner, spikes, counts[blk], vb,
                          np.empty(BLOCK, np.int32), th, sh)
        else:
            _block_if(x, start, stop, timesteps, v_th, shift, v, inner, subtract, burst, spikes, counts[blk], vb,
                      np.empty(BLOCK if burst > 1 else 0, np.int32), th, sh)
