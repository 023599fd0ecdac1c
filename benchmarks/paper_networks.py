"""The seed paper's networks (CIFAR-Net, VGG-16, ResNet-20, trained here on MNIST at 3x32x32): SNN accuracy
vs T for methods (a)-(d), T_lossless, and firing rates / SynOps per layer, next to the paper's CIFAR-10 figures.

Reuses benchmarks/accuracy_vs_T.py for the rows ((a) max, zero reset, no shift; (b) p99.9, soft reset;
(c) paper: max, soft reset, shift V_th/2T; (d) ours: optimal) and the T_lossless rule (within 0.5 points of
the ANN from that T on). Data: models/mnist_{calib,eval}.npz through ``to32`` (the transform the models were
trained with, models/train_cifar_shapes.py): zero-pad 2 px per side, replicate to 3 channels. Per-layer
stats come from runtime.InferenceSession(...).stats after one run of the `optimal` SNN at --stats-t.

    python benchmarks/paper_networks.py [--models cifarnet,vgg16_w4,resnet20] [--timesteps 1,2,4,...,64]
        [--limit N] [--stats-t 32] [--stats-limit 100] [--json R.json] [--plot P.png] [--markdown M.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

import converter
from runtime import InferenceSession

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import accuracy_vs_T as avt  # noqa: E402

MODELS = os.path.join(HERE, "..", "models")

# Published figures (Deng & Gu, ICLR 2021; QCFS, Bu et al., ICLR 2022): VGG-16 on CIFAR-10, a different data
# set from ours. Literature values for the plot's reference panel, not measurements of this project.
PAPER_CIFAR10 = {
    "ANN": 95.7,
    "Deng & Gu 2021 (CIFAR-10 VGG-16)": {32: 76.0, 64: 91.0, 512: 95.7},
    "QCFS 2022 (CIFAR-10 VGG-16, quantised ANN)": {8: 95.0},
}


def to32(x: np.ndarray) -> np.ndarray:
    """Same as models/train_cifar_shapes.py:to32 (kept here so the benchmark does not import torch)."""
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x, 3, axis=1), dtype=np.float32)


def data(limit: int):
    calib = to32(np.load(os.path.join(MODELS, "mnist_calib.npz"))["image"])
    ev = np.load(os.path.join(MODELS, "mnist_eval.npz"))
    x, y = to32(ev["image"]), ev["y"]
    return calib, (x[:limit], y[:limit]) if limit else (x, y)


def layer_stats(path: str, calib, x, steps: int) -> dict:
    """Firing rate and SynOps per neuron layer of the `optimal` SNN at T=steps (per image)."""
    snn = converter.convert(path, calib, timesteps=steps, threshold="optimal", progress=False)
    sess = InferenceSession(snn.model)
    t0 = time.perf_counter()
    sess.run(None, {"image": x}, timesteps=steps)
    seconds = time.perf_counter() - t0
    s, n = sess.stats, len(x)
    layers = [{"layer": l["layer"], "neurons": l["neurons"], "firing_rate": l["firing_rate"],
               "synops_per_image": l["synops"] / n} for l in s["layers"]]
    return {"timesteps": steps, "images": n, "layers": layers, "synops_per_image": s["total_synops"] / n,
            "ann_macs_per_image": s["ann_macs"] / n, "seconds_per_image": seconds / n}


def within(acc: dict[int, float], ann: float, points: float) -> int | None:
    """Smallest T from which on the SNN stays within `points` of the ANN (the issue's acceptance uses 1)."""
    ok = [t for t in sorted(acc) if all(acc[u] >= ann - points / 100 for u in acc if u >= t)]
    return ok[0] if ok else None


def summary(results: dict) -> str:
    lines = ["\n| model | ANN (eval subset) | (d) optimal: T within 1 point from | (d) at largest T | (c) paper: T within 1 point from |",
             "|---|---|---|---|---|"]
    for model, r in results["models"].items():
        d, c = r["rows"]["(d) ours: optimal"], r["rows"]["(c) paper: max, soft reset, shift V/2T"]
        fmt = lambda t, acc: str(t) if t else f">{max(acc)}"
        lines.append(f"| {model} | {100 * r['ann']:.2f}% | {fmt(within(d, r['ann'], 1.0), d)} | {100 * d[max(d)]:.1f}% (T={max(d)}) | "
                     f"{fmt(within(c, r['ann'], 1.0), c)} |")
    return "\n".join(lines)


def stats_table(model: str, st: dict) -> str:
    lines = [f"\n{model}: `optimal` SNN at T={st['timesteps']}, {st['images']} images; SynOps per image "
             f"{st['synops_per_image'] / 1e6:.2f} M over T steps vs ANN {st['ann_macs_per_image'] / 1e6:.2f} M MACs "
             f"(ratio {st['synops_per_image'] / max(1.0, st['ann_macs_per_image']):.2f}); "
             f"runtime {1e3 * st['seconds_per_image']:.1f} ms per image\n",
             "| layer | neurons | firing rate (spikes/neuron/step) | SynOps per image (M) |", "|---|---|---|---|"]
    for l in st["layers"]:
        lines.append(f"| {l['layer']} | {l['neurons']} | {l['firing_rate']:.3f} | {l['synops_per_image'] / 1e6:.3f} |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    """One panel per model (ours, MNIST at 3x32x32) and a last panel with the paper's CIFAR-10 figures."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    cols = min(4, len(models) + 1)
    rows = -(-(len(models) + 1) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.2 * rows), squeeze=False)
    axes = [list(grid.flat)[:len(models) + 1]]
    for ax in list(grid.flat)[len(models) + 1:]:
        ax.axis("off")
    for ax, model in zip(axes[0], models):
        r = results["models"][model]
        for label, acc in r["rows"].items():
            ts = sorted(int(k) for k in acc)
            ax.plot(ts, [100 * acc[t] for t in ts], "-" if label.startswith("(d)") else ":", marker="o", ms=3,
                    lw=2.5 if label.startswith("(d)") else 1.2, label=label)
        ax.axhline(100 * r["ann"], color="k", lw=0.8, label="ANN")
        ax.set_title(f"{model} (ours, MNIST 3x32x32; ANN {100 * r['ann']:.1f}%)", fontsize=9)
    ax = axes[0][-1]
    for label, pts in PAPER_CIFAR10.items():
        if isinstance(pts, dict):
            ts = sorted(pts)
            ax.plot(ts, [pts[t] for t in ts], "s--", label=label)
    ax.axhline(PAPER_CIFAR10["ANN"], color="k", lw=0.8, label="ANN (published)")
    ax.set_title("published, CIFAR-10 (different data set)", fontsize=9)
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 100)
        ax.set_xlabel("T (time steps)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cifarnet,vgg16_w4,resnet20")
    ap.add_argument("--timesteps", default="1,2,4,8,16,32,64")
    ap.add_argument("--limit", type=int, default=0, help="first N held-out images only (default: all 1,000)")
    ap.add_argument("--stats-t", type=int, default=32, help="T of the per-layer firing-rate / SynOps run")
    ap.add_argument("--stats-limit", type=int, default=100, help="images in the per-layer stats run")
    ap.add_argument("--json", help="write the results as JSON (rewritten after each model)")
    ap.add_argument("--plot", help="write the accuracy-vs-T plot")
    ap.add_argument("--markdown", help="write the tables as Markdown")
    ap.add_argument("--merge", help="comma-separated JSON files of earlier runs (one model each, say): tables and plot "
                    "from them, nothing is run")
    args = ap.parse_args(argv)
    if args.merge:
        return report(merge(args.merge.split(",")), args)
    timesteps = sorted(int(t) for t in args.timesteps.split(","))
    avt.REPORT_T = tuple(timesteps)
    results = {"timesteps": timesteps, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}", "command": " ".join(["python"] + sys.argv), "models": {}, "stats": {}}
    for model in args.models.split(","):
        path = os.path.join(MODELS, f"{model}.onnx")
        calib, (x, y) = data(args.limit)
        ann = float(np.mean(ort.InferenceSession(path).run(None, {"image": x})[0].argmax(1) == y))
        print(f"{model}: ANN {100 * ann:.2f}% on {len(y)} images", flush=True)
        t0 = time.perf_counter()
        rows = avt.ours(path, calib, x, y, timesteps)
        results["models"][model] = {"ann": ann, "samples": int(len(y)), "rows": rows, "seconds": time.perf_counter() - t0}
        results["stats"][model] = layer_stats(path, calib, x[:args.stats_limit], args.stats_t)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    return report(results, args)


def merge(paths: list[str]) -> dict:
    """Several runs' JSON as one result (models and stats joined; commands kept)."""
    runs = [json.load(open(p)) for p in paths]
    out = {"timesteps": runs[0]["timesteps"], "machine": runs[0]["machine"], "commands": [r["command"] for r in runs],
           "models": {}, "stats": {}}
    for r in runs:
        out["models"].update(r["models"])
        out["stats"].update(r["stats"])
    return out


def report(results: dict, args) -> int:
    for r in results["models"].values():   # JSON keys are strings
        r["rows"] = {label: {int(t): a for t, a in acc.items()} for label, acc in r["rows"].items()}
    avt.REPORT_T = tuple(results["timesteps"])
    text = summary(results) + "\n" + avt.table(results) + "\n" + "\n".join(stats_table(m, s) for m, s in results["stats"].items())
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
