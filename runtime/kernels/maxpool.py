"""Gated spiking max pooling over all T steps of a layer, one thread per (sample, channel) plane."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=False)
def spike_max_pool(x, rows, cols, out):
    """out[t, p, i, j] = x[t, p, winner] where the winner of window (i, j) has the largest running total of
    x over steps < t (ties: larger x[t], then the first position in scan order), as the reference op defines.

    x: (T, P, H, W) float32 with P = samples x channels. rows: (Ho, KH) and cols: (Wo, KW) int64 input
    indices of each window, -1 outside the input. out: (T, P, Ho, Wo) float32.
    """
    steps, planes, height, width = x.shape
    ho, kh = rows.shape
    wo, kw = cols.shape
    for p in prange(planes):
        totals = np.zeros((height, width), np.float64)
        for t in range(steps):
            for i in range(ho):
                for j in range(wo):
                    best_y = -1
                    best_x = -1
                    for a in range(kh):
                        y = rows[i, a]
                        if y < 0:
                            continue
                        for b in range(kw):
                            xx = cols[j, b]
                            if xx < 0:
                                continue
                            if best_y < 0:
                                best_y, best_x = y, xx
                            elif totals[y, xx] > totals[best_y, best_x] or (
                                    totals[y, xx] == totals[best_y, best_x] and x[t, p, y, xx] > x[t, p, best_y, best_x]):
                                best_y, best_x = y, xx
                    out[t, p, i, j] = x[t, p, best_y, best_x]
            for y in range(height):
                for xx in range(width):
                    totals[y, xx] += x[t, p, y, xx]
