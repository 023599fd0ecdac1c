"""Accuracy over a grid of threshold methods x T: ``evaluate``'s table once per method, one run for the grid.

The SNNs are emitted here (conversion stays on this machine); on a Ray cluster the SNN runs of every cell are
queued at once, so the workers go from one cell to the next without waiting for the slowest shard of each.
"""
from __future__ import annotations

import numpy as np

from runtime import InferenceSession

from .convert import ConvertedSNN
from .evaluate import _mean_rate, ort_predict, table
from .progress import progress


def sweep(snn: ConvertedSNN, source_model, feeds: dict[str, np.ndarray], y: np.ndarray, timesteps: list[int],
          methods: list[str], cluster=None, threads: int | None = None, show_progress: bool | None = None,
          session_factory=InferenceSession) -> dict:
    """One ``evaluate``-format result per threshold method; ``cluster`` is a ``runtime.distributed.RayCluster``
    (None: run locally, in ``session_factory(model, threads=...)`` sessions). A row's ``seconds`` is the SNN
    engine's time summed over the workers."""
    ann_acc = float(np.mean(ort_predict(source_model, feeds, output=snn.model.graph.output[0].name) == y))
    cells = [(m, t) for m in methods for t in timesteps]
    converted = [snn.with_settings(threshold=m, timesteps=t) for m, t in progress(cells, desc="emitting", unit="SNN", enabled=show_progress)]
    if cluster is None:
        stats = []
        for c, (_, steps) in zip(converted, cells):
            session = session_factory(c.model, threads=threads)
            stats.append((session.run(None, feeds, timesteps=steps)[0], session.stats))
    else:
        results = cluster.run_many([(cluster.session(c.model), feeds, steps) for c, (_, steps) in zip(converted, cells)])
        stats = [(r.outputs[0], r.stats) for r in results]
    per_method = []
    for method in methods:
        rows = []
        for c, (m, steps), (out, st) in zip(converted, cells, stats):
            if m == method:
                rows.append({"timesteps": steps, "snn_accuracy": float(np.mean(out.argmax(axis=1) == y)),
                             "threshold_ann_accuracy": float(np.mean(ort_predict(c.ann_model, feeds) == y)), "seconds": st["time_s"],
                             "mean_firing_rate": _mean_rate(st), "synops_per_sample": st["total_synops"] / len(y)})
        settings = next(c.report.settings for c, (m, _) in zip(converted, cells) if m == method)
        per_method.append({"samples": int(len(y)), "ann_accuracy": ann_acc, "settings": dict(settings, timesteps=timesteps), "rows": rows})
    return {"samples": int(len(y)), "ann_accuracy": ann_acc, "methods": methods, "results": per_method}


def sweep_table(results: dict) -> str:
    """``evaluate``'s table for each threshold method, under the method's name."""
    return "\n\n".join(f"threshold {m}\n{table(r)}" for m, r in zip(results["methods"], results["results"]))
