"""Per-layer firing thresholds V_th from calibration statistics: ``max``, percentile ``pXX.X``, or ``optimal``.

``optimal`` picks the V_th that minimises the expected squared error between a layer's ANN activation a and
the rate its IF neurons produce in T steps for a constant current a: with soft reset, initial membrane v0
and shift d, n = clip(floor((T (a + d) + v0) / V_th), 0, T) spikes, a rate of n V_th / T. This is the paper's
clip-and-quantise error, searched over candidate thresholds between the 80th percentile and the maximum.
"""
from __future__ import annotations

import re

import numpy as np

from .calibrate import ActivationStats
from .errors import InputError

SEARCH_SAMPLE = 200_000
SEARCH_CANDIDATES = 200
_PERCENTILE = re.compile(r"^p(\d{1,3}(?:\.\d+)?)$")


def parse_method(method: str) -> tuple[str, float | None]:
    """'max' | 'pXX.X' | 'optimal' -> (kind, percentile)."""
    if method in ("max", "optimal"):
        return method, None
    m = _PERCENTILE.match(method or "")
    if m and 0 < float(m.group(1)) <= 100:
        return "percentile", float(m.group(1))
    raise InputError(f"threshold method {method!r} is not known; use 'max', a percentile such as 'p99.99', or 'optimal'")


def shift_value(shift: str | float, v_th: float, timesteps: int) -> float:
    """The per-step current shift: 'half' is V_th/(2T), 'none' is 0, a number is used as given."""
    if shift == "half":
        return v_th / (2 * timesteps)
    if shift == "none":
        return 0.0
    return float(shift)


def snn_rate(a: np.ndarray, v_th: np.ndarray, timesteps: int, shift: np.ndarray, v_init: float = 0.0) -> np.ndarray:
    """Rate of a soft-reset IF neuron under constant current a for T steps (broadcasts a against v_th)."""
    n = np.floor((timesteps * (a + shift) + v_init) / v_th)
    return np.clip(n, 0, timesteps) * v_th / timesteps


def optimal_threshold(stats: ActivationStats, timesteps: int, shift: str | float) -> float:
    sample = stats.sample
    if sample.size > SEARCH_SAMPLE:
        sample = np.random.default_rng(0).choice(sample, SEARCH_SAMPLE, replace=False)
    sample = sample.astype(np.float64)
    candidates = np.unique(np.append(np.quantile(sample, np.linspace(0.8, 1.0, SEARCH_CANDIDATES)), stats.max))
    candidates = candidates[candidates > 0]
    best, best_err = stats.max, np.inf
    for chunk in np.array_split(candidates, max(1, len(candidates) // 16)):
        v = chunk[:, None]
        d = v / (2 * timesteps) if shift == "half" else (0.0 if shift == "none" else float(shift))
        err = np.mean((snn_rate(sample[None, :], v, timesteps, d) - sample[None, :]) ** 2, axis=1)
        i = int(np.argmin(err))
        if err[i] < best_err:
            best, best_err = float(chunk[i]), float(err[i])
    return best


def threshold(stats: ActivationStats, method: str, timesteps: int, shift: str | float, upper_bound: float | None) -> float:
    """V_th of one layer; a layer that never fired during calibration gets its upper bound or 1.0."""
    kind, q = parse_method(method)
    if stats.positive == 0:
        value = 1.0
    elif kind == "max":
        value = stats.max
    elif kind == "percentile":
        value = stats.percentile(q)
    else:
        value = optimal_threshold(stats, timesteps, shift)
    if upper_bound is not None:
        value = min(value, upper_bound)
    return float(value) if value > 0 else 1.0
