"""Firing thresholds V_th from calibration statistics, and the names of the threshold methods.

``max`` and ``pXX.X`` take one V_th per layer from the ANN's activations; their ``-channel`` variants one per
channel (axis 1). ``optimal`` (per channel) and ``optimal-layer`` (one per layer) are chosen on the SNN
itself, layer by layer, for the target T; ``ltb`` (local threshold balancing, per channel) is also computed
layer by layer on the SNN, from its own currents: see :mod:`converter.layerwise`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .calibrate import ActivationStats
from .errors import InputError

_METHOD = re.compile(r"^(max|optimal|ltb|p(\d{1,3}(?:\.\d+)?))(-channel|-layer)?$")
METHODS_HELP = ("max, a percentile such as p99.9, either with -channel (one V_th per channel), optimal (per channel, calibrated on "
                "the SNN), optimal-layer or ltb (local threshold balancing on the SNN, per channel)")
SNN_SIDE = ("optimal", "ltb")   # kinds whose V_th are calibrated on the simulated SNN (converter.layerwise)


@dataclass(frozen=True)
class Method:
    kind: str                 # "max" | "percentile" | "optimal" | "ltb"
    percentile: float | None
    per_channel: bool


def parse_method(method: str) -> Method:
    """'max' | 'pXX.X' | 'max-channel' | 'pXX.X-channel' | 'optimal' | 'optimal-layer' | 'ltb' -> Method."""
    m = _METHOD.match(method) if isinstance(method, str) else None
    if m:
        name, q, suffix = m.group(1), m.group(2), m.group(3)
        if name == "optimal" and suffix != "-channel":
            return Method("optimal", None, suffix != "-layer")
        if name == "ltb" and suffix is None:
            return Method("ltb", None, True)
        if name not in SNN_SIDE and suffix != "-layer" and (q is None or 0 < float(q) <= 100):
            return Method("max" if q is None else "percentile", None if q is None else float(q), suffix == "-channel")
    raise InputError(f"threshold method {method!r} is not known; use {METHODS_HELP}")


def shift_value(shift: str | float, v_th, timesteps: int):
    """The per-step current shift: 'half' is V_th/(2T), 'none' is 0, a number is used as given."""
    if shift == "half":
        return v_th / (2 * timesteps)
    if shift == "none":
        return v_th * 0.0
    return v_th * 0.0 + float(shift)


def threshold(stats: ActivationStats, method: Method, upper_bound: float | None):
    """V_th of one layer (a float) or of each channel (an array) from statistics; not for 'optimal' or 'ltb'.

    A layer or channel that never fired during calibration gets the layer's value, its upper bound, or 1.0.
    """
    if stats.positive == 0:
        value = np.float64(1.0)
    elif method.per_channel:
        value = stats.channel_max if method.kind == "max" else stats.channel_percentile(method.percentile)
        layer = stats.max if method.kind == "max" else stats.percentile(method.percentile)
        value = np.where(value > 0, value, layer if layer > 0 else 1.0)
    else:
        value = np.float64(stats.max if method.kind == "max" else stats.percentile(method.percentile))
    if upper_bound is not None:
        value = np.minimum(value, upper_bound)
    value = np.where(value > 0, value, 1.0)
    return value.astype(np.float32) if method.per_channel else float(value)
