"""The readout of the graph outputs: their mean over the steps, optionally delayed.

Delayed readout (metadata ``onnx2snn.readout_start`` = s, default 0): the mean over steps s+1..t instead of
1..t. The first layers need a few steps before their rates settle (each neuron layer adds latency), and those
steps pull the mean of the output away from the ANN's value; skipping them can help at moderate T, as
SpikingJelly's delayed readout does for its SNNs (for ours it did not on average: docs/quality.md). A readout after t <= s steps has no step to average yet and is the plain mean
over 1..t: ``run`` with T <= s, early stop before step s, and the first rows of ``run_trace`` read out as if no
delay were set. Sums are float64, rounded to float32 once, as for the plain mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OutputSums:
    """The running sums of one output over the steps done so far: all of them, and those after ``start``."""

    all: np.ndarray | float = 0.0
    delayed: np.ndarray | float = 0.0
    steps: int = 0


def add_block(values: np.ndarray, sums: OutputSums, start: int, trace: bool) -> tuple[OutputSums, np.ndarray, np.ndarray | None]:
    """Add one block of steps (T_b, N, ...) (any numeric dtype, summed in float64) to the sums. Returns the new
    sums, the readout after the block (float32), and with ``trace`` the readout after each of its steps."""
    blk = values.shape[0]
    skip = min(blk, max(0, start - sums.steps))  # steps of this block at or before ``start``
    done = sums.steps + blk
    if trace:
        running = np.cumsum(values, axis=0, dtype=np.float64)
        running += sums.all
        total = running[-1].copy()
        delayed_total = sums.delayed
        steps = np.arange(sums.steps + 1, done + 1, dtype=np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
        if skip < blk:  # from the first step after ``start`` on, the mean over the steps after it
            late = running[skip:] if start <= 0 else np.cumsum(values[skip:], axis=0, dtype=np.float64) + sums.delayed
            delayed_total = late[-1].copy()
            running[skip:] = late
            steps[skip:] -= start
        running /= steps
        new = OutputSums(total, delayed_total, done)
        return new, running[-1].astype(np.float32), running.astype(np.float32)
    total = values.sum(axis=0, dtype=np.float64) + sums.all
    if start <= 0:
        delayed = total
    elif skip < blk:
        delayed = values[skip:].sum(axis=0, dtype=np.float64) + sums.delayed
    else:
        delayed = sums.delayed
    new = OutputSums(total, delayed, done)
    return new, readout(new, start), None


def readout(sums: OutputSums, start: int) -> np.ndarray:
    """The readout (float32) after ``sums.steps`` steps."""
    if sums.steps > start > 0:
        return np.asarray(sums.delayed / (sums.steps - start)).astype(np.float32)
    return np.asarray(sums.all / sums.steps).astype(np.float32)
