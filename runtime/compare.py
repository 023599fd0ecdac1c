"""float32 against float64 on the same SNN: how many spikes differ and what it does to the accuracy.

The float32 engine (the default) adds in float32, so a membrane that lands within a rounding error of its
threshold can fire one step earlier or later than in the float64 engine (which equals the float64 NumPy
reference bit for bit). design.md 5a asks for that difference to be reported as the fraction of spikes that
differ and the difference in accuracy; ``benchmarks/precision_agreement.py`` reports it on the bundled models.
"""
from __future__ import annotations

import numpy as np

from .session import InferenceSession


def precision_agreement(model, feeds: dict[str, np.ndarray], labels: np.ndarray, timesteps: int, threads: int | None = None,
                        batch: int | None = None) -> dict:
    """Run ``model`` in float64 and float32 (engine "auto") on ``feeds``, ``batch`` samples at a time (default: about
    2,048 sample-steps, as every layer's spikes are kept for the comparison). Returns the accuracies (top-1 of the
    first output against ``labels``), the spikes of the float64 run, the (neuron, step, sample) cells whose
    spike differs, their ratio ``flip_fraction``, and the samples whose top-1 class differs."""
    sessions = {p: InferenceSession(model, threads=threads, precision=p) for p in ("float64", "float32")}
    n = len(labels)
    batch = batch or max(1, 2048 // timesteps)
    correct = {p: 0 for p in sessions}
    spikes = flips = top1_changed = 0
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in feeds.items()}
        runs = {}
        for precision, session in sessions.items():
            session._cache.spike_sink = {}
            out = session.run(None, part, timesteps=timesteps)[0]
            runs[precision] = (out.argmax(axis=1), {k: np.concatenate(v, axis=1) for k, v in session._cache.spike_sink.items()})
            session._cache.spike_sink = None
            correct[precision] += int(np.sum(runs[precision][0] == labels[start:start + batch]))
        (top64, s64), (top32, s32) = runs["float64"], runs["float32"]
        top1_changed += int(np.sum(top64 != top32))
        for name, a in s64.items():
            spikes += int(np.count_nonzero(a))
            flips += int(np.count_nonzero(a != s32[name]))
    acc = {p: c / n for p, c in correct.items()}
    return {"timesteps": timesteps, "samples": n, "accuracy_float64": acc["float64"], "accuracy_float32": acc["float32"],
            "accuracy_difference_points": 100 * (acc["float32"] - acc["float64"]), "spikes_float64": spikes,
            "spike_flips": flips, "flip_fraction": flips / max(1, spikes), "top1_changed": top1_changed}
