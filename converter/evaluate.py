"""Accuracy of the ANN (onnxruntime), the threshold-ReLU ANN and the SNN at several T, in one table."""
from __future__ import annotations

import os
import time

import numpy as np
import onnx
import onnxruntime as ort

from runtime import InferenceSession

from .calibrate import ort_session
from .convert import ConvertedSNN
from .progress import progress


def ort_predict(model, feeds: dict[str, np.ndarray], batch_size: int = 256, output: str | None = None) -> np.ndarray:
    """Arg-max of an output (the first, or the one named) of an ONNX model in onnxruntime (path or ModelProto);
    a ZipMap output's list of {class: score} maps counts as its (N, classes) scores."""
    if isinstance(model, onnx.ModelProto):
        session = ort_session(model)
    else:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures surface as our own one-line errors
        session = ort.InferenceSession(os.fspath(model) if isinstance(model, os.PathLike) else model, options, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    names = [output] if output else [session.get_outputs()[0].name]
    preds = [as_scores(session.run(names, {k: v[i:i + batch_size] for k, v in feeds.items()})[0]).argmax(axis=1) for i in range(0, n, batch_size)]
    return np.concatenate(preds)


def as_scores(value) -> np.ndarray:
    """An output as an array."""
    if isinstance(value, list):  # ZipMap: one {class: score} map per sample
        return np.array([[row[k] for k in sorted(row)] for row in value])
    return np.asarray(value)


def evaluate(snn: ConvertedSNN, source_model, feeds: dict[str, np.ndarray], y: np.ndarray, timesteps: list[int],
             threads: int | None = None, show_progress: bool | None = None, session_factory=InferenceSession) -> dict:
    """ANN, threshold-ANN and SNN accuracy for every T; the SNN is re-emitted per T (its shift depends on T), except
    at the T it was converted for.

    ``session_factory(model, threads=...)`` makes the SNN session: ``runtime.distributed.RayCluster.session``
    runs it on a Ray cluster instead, with the same outputs."""
    ann_acc = float(np.mean(ort_predict(source_model, feeds, output=snn.model.graph.output[0].name) == y))
    rows = []
    for steps in progress(timesteps, desc="evaluating", unit="T", enabled=show_progress):
        converted = snn if steps == snn.settings.timesteps else snn.with_settings(timesteps=steps)
        clip_acc = float(np.mean(ort_predict(converted.ann_model, feeds) == y))
        session = session_factory(converted.model, threads=threads)
        start = time.perf_counter()
        out = session.run(None, feeds, timesteps=steps)[0]
        seconds = time.perf_counter() - start
        rows.append({"timesteps": steps, "snn_accuracy": float(np.mean(out.argmax(axis=1) == y)),
                     "threshold_ann_accuracy": clip_acc, "seconds": seconds,
                     "mean_firing_rate": _mean_rate(session.stats), "synops_per_sample": session.stats["total_synops"] / len(y)})
    return {"samples": int(len(y)), "ann_accuracy": ann_acc, "settings": dict(snn.report.settings, timesteps=timesteps), "rows": rows}


def _mean_rate(stats: dict) -> float:
    neurons = sum(layer["neurons"] for layer in stats["layers"])
    return sum(layer["firing_rate"] * layer["neurons"] for layer in stats["layers"]) / max(1, neurons)


def table(results: dict) -> str:
    lines = [f"ANN accuracy (onnxruntime, {results['samples']} samples): {100 * results['ann_accuracy']:.2f}%",
             f"{'T':>5} {'SNN acc':>9} {'thr-ANN acc':>12} {'SNN - ANN':>10} {'firing rate':>12} {'time (s)':>9}"]
    for r in results["rows"]:
        lines.append(f"{r['timesteps']:>5} {100 * r['snn_accuracy']:>8.2f}% {100 * r['threshold_ann_accuracy']:>11.2f}% "
                     f"{100 * (r['snn_accuracy'] - results['ann_accuracy']):>+9.2f}p {r['mean_firing_rate']:>12.4f} {r['seconds']:>9.2f}")
    return "\n".join(lines)


def plot(results: dict, path: str, title: str = "") -> None:
    """Accuracy vs T on a log axis: SNN, with the ANN and threshold-ANN as references."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .writer import write_bytes_atomic

    ts = [r["timesteps"] for r in results["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.axhline(100 * results["ann_accuracy"], color="black", linestyle="--", label="ANN (onnxruntime)")
    ax.plot(ts, [100 * r["threshold_ann_accuracy"] for r in results["rows"]], color="tab:gray", marker=".", label="threshold-ReLU ANN")
    ax.plot(ts, [100 * r["snn_accuracy"] for r in results["rows"]], color="tab:blue", marker="o", label="SNN")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"accuracy vs T ({results['samples']} samples, threshold {results['settings'].get('threshold')})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.rsplit(".", 1)[-1].lower() if "." in path else "png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
