"""Integrate-and-fire neurons over all T steps of one layer (layer-major execution)."""
import numpy as np
from numba import njit, prange

BLOCK = 256  # neurons per parallel work item: long enough for the inner loop to vectorise


@njit(cache=True)
def _load_block(start, width, inner, v_th, shift, v, vb, th, sh):
    """Copy neurons start..start+width's membranes and their channels' v_th and shift into the block buffers."""
    n_ch = v_th.shape[0]
    for k in range(width):
        ch = ((start + k) // inner) % n_ch
        vb[k] = v[start + k]
        th[k] = v_th[ch]
        sh[k] = shift[ch]


@njit(cache=True, inline="always")
def burst_step(vk, th, burst):
    """A burst neuron's firing after its input: ``burst`` subtractions of ``th``, each where the membrane still
    reaches it (branch-free, so the loops over neurons vectorise). Returns (spikes k, membrane); s = k * th."""
    n = np.int32(0)
    for _ in range(burst):
        up = vk >= th
        vk = vk - th if up else vk
        n += np.int32(up)
    return n, vk


@njit(cache=True)
def _block_if(x, start, stop, timesteps, v_th, shift, v, inner, subtract, burst, spikes, counts, vb, th, sh):
    """Neurons start..stop of ``if_layer_state`` for all steps (a function of its own: LLVM vectorises it better
    than the body of a parallel loop). ``burst`` > 1: up to that many spikes a step (reset subtract)."""
    const_input = x.shape[0] == 1
    width = stop - start
    _load_block(start, width, inner, v_th, shift, v, vb, th, sh)
    for t in range(timesteps):
        xt = x[0 if const_input else t, start:stop]
        st = spikes[t, start:stop]
        fired = 0
        if burst > 1:  # a branch per step, not per neuron: both loops stay branch-free and vectorised
            for k in range(width):
                n, vb[k] = burst_step(vb[k] + (xt[k] + sh[k]), th[k], burst)
                st[k] = np.float32(n) * th[k]
                fired += np.int64(n > 0)
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
            _block_if(x, start, stop, timesteps, v_th, shift, v, inner, subtract, burst, spikes, counts[blk], vb, th, sh)
