"""Conversion quality: SNN accuracy vs T for every conversion method, ours and SpikingJelly's, in one run.

Rows per model: (a) classic max normalisation, zero reset, no shift; (b) 99.9th percentile, soft reset;
(c) the paper: max, soft reset, shift V_th/(2T); (d) ours: optimal (SNN-side layer-wise calibration,
v_init and bias correction chosen per T by the final selection on calibration data) and our local threshold
balancing (per channel, on the SNN's own currents, v_init V_th/2); (e) SpikingJelly 2.x's own
converter on the same weights (needs the [bench] extra), each recipe, and the channel-wise recipe once more with
the delayed readout of SpikingJelly's examples (estimate_delay_start). Our SNNs run in runtime.InferenceSession. Methods whose SNN does not depend
on T are simulated once for the largest T and read out after every step (run_trace); T-specific ones
((c), (d)) are converted and run once per T. SpikingJelly models are rebuilt in PyTorch from the ONNX
file (same graph, same weights: checked against onnxruntime) and read out by their output average.

    python benchmarks/accuracy_vs_T.py [--models mnist_vgg,mnist_resnet,digits_cnn,digits_maxpool | --zoo held-out]
        [--timesteps 1,2,4,...,256] [--limit N] [--json R.json] [--plot P.png] [--no-spikingjelly | --no-ours]
        [--calib C.npz] [--calib-count N]
    python benchmarks/accuracy_vs_T.py --merge RUN1.json RUN2.json [--models M1,M2] [--json R.json] [--plot P.png]

Models are found through models/models.json (file and dataset); ``--zoo development|held-out|all`` runs that part
of the model zoo (models/train_zoo.py) and adds the zoo summary: per model and T the gap to the ANN, per kind the
median and worst gap, and each row's median accuracy over the zoo. --calib replaces models/{dataset}_calib.npz (its
"image" array) for every model of the run, ours and SpikingJelly's alike: for experiments with another calibration
set; models of one dataset per run when it is given. --calib-count N keeps its first N images (the zoo's 64, 200
and 500-image sets are the first 64, 200 and all 500 of models/mnist_calib.npz). Every cell also records which
evaluation images it got right, so each cell where another row is above (d) gets McNemar's exact test.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

import converter
from runtime import InferenceSession

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")
with open(os.path.join(MODELS, "models.json")) as _f:
    CATALOGUE = json.load(_f)["models"]
OPTIMAL = "(d) ours: optimal"
OURS = {  # label -> (convert settings, T-specific?)
    "(a) max, zero reset, no shift": (dict(threshold="max", reset="zero", shift="none", v_init=0.0), False),
    "(b) p99.9, soft reset": (dict(threshold="p99.9", shift="none", v_init=0.0), False),
    "(c) paper: max, soft reset, shift V/2T": (dict(threshold="max", shift="half", v_init=0.0), True),
    OPTIMAL: (dict(threshold="optimal"), True),
    "(f) ours: ltb (local threshold balancing on the SNN)": (dict(threshold="ltb"), True),
    "(g) ours: optimal, signed spikes": (dict(threshold="optimal", signed_spikes=True), True),
    "(h) ours: optimal, spikes chosen by the final selection": (dict(threshold="optimal", signed_spikes=None), True),
    "(i) ours: optimal, bursts of up to 2 spikes": (dict(threshold="optimal", burst=2), True),
    "(j) ours: optimal, bursts of up to 4 spikes": (dict(threshold="optimal", burst=4), True),
    "(k) ours: optimal, bursts of up to 8 spikes": (dict(threshold="optimal", burst=8), True),
}
DEFAULT_ROWS = "a,b,c,d,f"  # (g), (h): signed IF neurons, (i)-(k) burst neurons (docs/format.md), on request
REPORT_T = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_MODELS = "mnist_vgg,mnist_resnet,digits_cnn,digits_maxpool"
DELAYED = "(e) SpikingJelly channel-wise, half threshold, pre-spike max-pool, delayed readout"


def model_path(model: str) -> str:
    return os.path.join(MODELS, CATALOGUE[model]["file"])


def zoo_models(part: str) -> list[str]:
    """The zoo's models of one part ('development', 'held-out') or all of them, in catalogue order."""
    return [name for name, m in CATALOGUE.items() if "zoo" in m and part in ("all", m["zoo"]["split"])]


def data(model: str, limit: int, calib_path: str | None = None, calib_count: int = 0):
    ds = CATALOGUE[model]["dataset"]
    calib = np.load(calib_path or os.path.join(MODELS, f"{ds}_calib.npz"))["image"]
    if calib_count:
        calib = calib[:calib_count]
    ev = np.load(os.path.join(MODELS, f"{ds}_eval.npz"))
    x, y = ev["image"], ev["y"]
    return calib, (x[:limit], y[:limit]) if limit else (x, y)


def packed(correct: np.ndarray) -> str:
    """Which images a cell got right, as hex of the packed bits (kept in the JSON for McNemar's test)."""
    return np.packbits(correct.astype(bool)).tobytes().hex()


def unpacked(hexbits: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexbits), np.uint8))[:n].astype(bool)


def ours(path: str, calib, x, y, timesteps: list[int], letters=tuple(DEFAULT_ROWS.split(","))) -> tuple[dict, dict]:
    """Accuracy and per-image correctness (label -> T -> value) of our rows whose letter is in ``letters``."""
    rows, hits = {}, {}
    base = converter.convert(path, calib, timesteps=timesteps[-1], threshold="max", progress=False)
    for label, (settings, per_t) in OURS.items():
        if label[1] not in letters:
            continue
        t0 = time.perf_counter()
        right = {}
        if per_t:
            for steps in timesteps:
                snn = base.with_settings(timesteps=steps, **settings)
                out = InferenceSession(snn.model).run(None, {"image": x}, timesteps=steps)[0]
                right[steps] = out.argmax(1) == y
        else:
            snn = base.with_settings(timesteps=timesteps[-1], **settings)
            trace = InferenceSession(snn.model).run_trace(None, {"image": x}, timesteps=timesteps[-1])[0]
            right = {steps: trace[steps - 1].argmax(1) == y for steps in timesteps}
        rows[label] = acc = {steps: float(np.mean(r)) for steps, r in right.items()}
        hits[label] = {steps: packed(r) for steps, r in right.items()}
        print(f"    {label}: {time.perf_counter() - t0:.0f}s  " + " ".join(f"{t}:{100 * a:.1f}" for t, a in acc.items()), flush=True)
    return rows, hits


INPUT_OPS = {"Sub": np.subtract, "Div": np.divide, "Mul": np.multiply, "Add": np.add}


def input_ops(path: str) -> list:
    """The elementwise nodes with a constant that the graph applies to its input first (input normalisation):
    SpikingJelly's converter cannot trace them, so its rows get them applied to the data instead."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
    ops, current = [], "image"
    for node in (n for n in model.graph.node if n.op_type != "Constant"):
        if node.op_type not in INPUT_OPS or node.input[0] != current or node.input[1] not in {**inits, **consts}:
            break
        ops.append((node, {**inits, **consts}[node.input[1]]))
        current = node.output[0]
    return ops


def apply_input_ops(ops: list, x: np.ndarray) -> np.ndarray:
    for node, constant in ops:
        x = INPUT_OPS[node.op_type](x, constant).astype(np.float32)
    return x


def torch_from_onnx(path: str, skip_input_ops: bool = False):
    """The ONNX graph as a torch.nn.Module: Conv/Gemm/pools/ReLU modules, so converters can find the ReLUs.
    skip_input_ops: without the input normalisation of :func:`input_ops` (to be applied to the data)."""
    import onnx
    import torch
    import torch.nn as nn
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    attrs = lambda node: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    for node in model.graph.node:  # Constant nodes (the dynamo exporter's Reshape shapes) are initializers here
        if node.op_type == "Constant":
            inits[node.output[0]] = torch.from_numpy(numpy_helper.to_array(attrs(node)["value"]).copy())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.ops, self.wiring = nn.ModuleList(), []
            self.alias = {}
            skipped = {n.name for n, _ in input_ops(path)} if skip_input_ops else set()
            for node in model.graph.node:
                a = attrs(node)
                if node.op_type == "Constant":
                    continue
                if node.name in skipped:
                    self.alias[node.output[0]] = self.alias.get(node.input[0], node.input[0])
                    continue
                if node.op_type == "Conv":
                    w = inits[node.input[1]]
                    m = nn.Conv2d(w.shape[1] * a.get("group", 1), w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1, 1])),
                                  padding=tuple(a.get("pads", [0, 0, 0, 0])[:2]), groups=a.get("group", 1), bias=len(node.input) > 2)
                    m.weight.data = w
                    if len(node.input) > 2:
                        m.bias.data = inits[node.input[2]]
                elif node.op_type == "Gemm":
                    w = inits[node.input[1]]
                    w = w if a.get("transB", 0) else w.T
                    m = nn.Linear(w.shape[1], w.shape[0])
                    m.weight.data, m.bias.data = w.contiguous(), inits[node.input[2]]
                elif node.op_type == "Relu":
                    m = nn.ReLU()
                elif node.op_type in ("AveragePool", "MaxPool"):
                    cls = nn.AvgPool2d if node.op_type == "AveragePool" else nn.MaxPool2d
                    m = cls(tuple(a["kernel_shape"]), stride=tuple(a.get("strides", a["kernel_shape"])), padding=tuple(a.get("pads", [0, 0, 0, 0])[:2]))
                elif node.op_type == "GlobalAveragePool":
                    m = nn.AdaptiveAvgPool2d(1)
                elif node.op_type == "ReduceMean":  # the dynamo exporter's global average pool (axes 2, 3)
                    axes = a.get("axes", inits[node.input[1]].tolist() if len(node.input) > 1 else None)
                    if sorted(k % 4 for k in axes or []) != [2, 3]:
                        raise ValueError(f"{path}: ReduceMean over axes {axes} not rebuilt in PyTorch")
                    m = nn.AdaptiveAvgPool2d(1) if a.get("keepdims", 1) else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
                elif node.op_type == "Flatten":
                    m = nn.Flatten()
                elif node.op_type == "Add" and not any(i in inits for i in node.input):
                    m = Add()
                elif node.op_type in ("Sub", "Div", "Mul", "Add") and node.input[1] in inits:  # input normalisation
                    m = Elementwise(node.op_type, inits[node.input[1]])
                elif node.op_type == "Reshape" and node.input[1] in inits:
                    m = Reshape(inits[node.input[1]].tolist())
                else:
                    raise ValueError(f"{path}: op {node.op_type} not rebuilt in PyTorch")
                self.ops.append(m)
                self.wiring.append(([self.alias.get(i, i) for i in node.input if i not in inits], node.output[0]))
            self.output = model.graph.output[0].name

        def forward(self, x):
            env = {"image": x}
            for op, (inputs, output) in zip(self.ops, self.wiring):
                env[output] = op(*[env[i] for i in inputs])
            return env[self.output]

    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    class Elementwise(nn.Module):
        def __init__(self, op: str, constant):
            super().__init__()
            self.op = op
            self.register_buffer("constant", constant)

        def forward(self, a):
            return {"Sub": torch.sub, "Div": torch.div, "Mul": torch.mul, "Add": torch.add}[self.op](a, self.constant)

    class Reshape(nn.Module):
        def __init__(self, shape: list[int]):
            super().__init__()
            self.shape = shape

        def forward(self, a):  # ONNX: 0 copies the input's dimension
            return a.reshape([a.shape[k] if d == 0 else d for k, d in enumerate(self.shape)])

    return Net().eval()


def spikingjelly(path: str, calib, x, y, timesteps: list[int]) -> tuple[dict, dict]:
    """Accuracy and per-image correctness (label -> T -> value) of SpikingJelly's recipes."""
    import torch
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter, LocalThresholdBalancingRecipe, RateCodingRecipe, estimate_delay_start

    torch.set_num_threads(2)
    ops = input_ops(path)
    ann = torch_from_onnx(path, skip_input_ops=True)
    with torch.no_grad():
        diff = float(np.abs(ann(torch.from_numpy(apply_input_ops(ops, x[:64]))).numpy()
                            - ort.InferenceSession(path).run(None, {"image": x[:64]})[0]).max())
    assert diff < 1e-3, f"PyTorch rebuild of {path} differs from onnxruntime by {diff}"
    calib, x = apply_input_ops(ops, calib), apply_input_ops(ops, x)
    loader = [(torch.from_numpy(calib[i:i + 100]), None) for i in range(0, len(calib), 100)]
    recipes = {
        "(e) SpikingJelly max": lambda: RateCodingRecipe(loader, mode="max"),
        "(e) SpikingJelly 99.9%": lambda: RateCodingRecipe(loader, mode="99.9%"),
        "(e) SpikingJelly channel-wise 99.9%": lambda: RateCodingRecipe(loader, mode="99.9%", channel_wise=True),
        "(e) SpikingJelly channel-wise, half threshold, pre-spike max-pool": lambda: RateCodingRecipe(
            loader, mode="99.9%", channel_wise=True, half_threshold=True, pre_spike_maxpool=True),
        "(e) SpikingJelly local threshold balancing": lambda: LocalThresholdBalancingRecipe(loader * 4),
    }
    recipes[DELAYED] = recipes["(e) SpikingJelly channel-wise, half threshold, pre-spike max-pool"]
    rows, hits = {}, {}
    for label, make in recipes.items():
        t0 = time.perf_counter()
        snn = Converter(recipe=make(), device="cpu").convert(torch_from_onnx(path, skip_input_ops=True))
        # SpikingJelly's examples read out from an estimated start step on (the sum before it is dropped); that
        # start depends on T, so that row is simulated once per T. The other rows sum every step from the first.
        starts = {steps: estimate_delay_start(snn, loader, "cpu", steps) if label == DELAYED else 0 for steps in timesteps}
        correct = {steps: np.zeros(len(y), bool) for steps in timesteps}
        with torch.no_grad():
            for i in range(0, len(x), 250):
                xb = torch.from_numpy(x[i:i + 250])
                for run in (timesteps if label == DELAYED else [timesteps[-1]]):
                    functional.reset_net(snn)
                    total = 0
                    for t in range(1, run + 1):
                        out = snn(xb)
                        total = total + (out if t > starts[run] else 0 * out)
                        if t in correct and (label != DELAYED or t == run):
                            correct[t][i:i + 250] = total.argmax(1).numpy() == y[i:i + 250]
        rows[label] = {steps: float(c.mean()) for steps, c in correct.items()}
        hits[label] = {steps: packed(c) for steps, c in correct.items()}
        print(f"    {label}: {time.perf_counter() - t0:.0f}s  " + " ".join(f"{t}:{100 * a:.1f}" for t, a in rows[label].items()), flush=True)
    return rows, hits


def lossless_t(acc: dict[int, float], ann: float) -> int | None:
    """Smallest T from which on the SNN stays within 0.5 points of the ANN."""
    ok = [t for t in sorted(acc) if all(acc[u] >= ann - 0.005 for u in acc if u >= t)]
    return ok[0] if ok else None


def table(results: dict, reference: str = OPTIMAL) -> str:
    lines = []
    shown = [t for t in REPORT_T if t in results["timesteps"]]
    for model, r in results["models"].items():
        lines.append(f"\n{model}: ANN {100 * r['ann']:.2f}% on {r['samples']} held-out images\n")
        lines.append("| method | T_lossless | " + " | ".join(f"T={t}" for t in shown) + " |")
        lines.append("|---|---|" + "---|" * len(shown))
        for label, acc in r["rows"].items():
            acc = {int(k): v for k, v in acc.items()}
            lt = lossless_t(acc, r["ann"])
            cells = (f"{100 * acc[t]:.1f}" if t in acc else "—" for t in shown)  # "—": not run (merged results)
            lines.append(f"| {label} | {lt if lt else '>' + str(max(acc))} | " + " | ".join(cells) + " |")
        lines.append("\n" + behind(r, reference))
    return "\n".join(lines)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant images (binomial test of b against n = b + c, p = 1/2)."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2.0 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0 ** n)


def behind(r: dict, reference: str = OPTIMAL, alpha: float = 0.05) -> str:
    """Where the ``reference`` row ((d) optimal unless --reference-row says otherwise) trails another row of the
    same model, in images: the acceptance check in one line.

    Each deficit gets McNemar's exact test on the images the two rows disagree on, when the run kept which images
    each cell got right (runs from before then: the smallest p-value the test could give a deficit of k images,
    2 ** (1 - k)). A cell counts against the reference only if that p-value is below ``alpha``."""
    if reference not in r["rows"]:
        return f"{reference} not run"
    ours_acc = {int(k): v for k, v in r["rows"][reference].items()}
    hits = r.get("hits", {})
    cells, significant = [], 0
    for label, acc in r["rows"].items():
        for t, a in ((int(k), v) for k, v in acc.items()):
            if label != reference and t in ours_acc and a > ours_acc[t] + 1e-9:
                k = round((a - ours_acc[t]) * r["samples"])
                mine, theirs = (hits.get(row, {}).get(str(t)) for row in (reference, label))
                if mine and theirs:
                    mine, theirs = unpacked(mine, r["samples"]), unpacked(theirs, r["samples"])
                    p = mcnemar_exact(int(np.sum(theirs & ~mine)), int(np.sum(mine & ~theirs)))
                    cells.append(f"T={t} {label} by {k} image(s) (McNemar exact p = {p:.2g})")
                else:
                    p = min(1.0, 2.0 ** (1 - k))
                    cells.append(f"T={t} {label} by {k} image(s) (McNemar p >= {p:.2g})")
                significant += p < alpha
    verdict = "yes" if not cells else "no; behind at " + "; ".join(cells)
    name = reference.split(": ", 1)[-1]
    return (f"{name} at or above every row at every T: {verdict}\n\n"
            f"cells where a row is significantly above {name} (McNemar exact, {alpha:.0%}): {significant}")


def zoo_summary(results: dict, timesteps: list[int] | None = None, reference: str = OPTIMAL) -> str:
    """The zoo's summary: the reference row's gap to the ANN per model and T, per kind the median and worst gap, and each row's
    median accuracy over the models (the acceptance's "strictly above every SpikingJelly recipe in the median")."""
    models = {m: r for m, r in results["models"].items() if "zoo" in CATALOGUE.get(m, {})}
    if not models:
        return ""
    shown = [t for t in (timesteps or REPORT_T) if t in results["timesteps"]]
    gap = lambda r, label, t: 100 * (r["ann"] - r["rows"][label][str(t)]) if str(t) in r["rows"].get(label, {}) else None
    fmt = lambda g: "—" if g is None else f"{g:+.1f}"
    lines = [f"\nGap to the ANN of {reference}, in points (ANN minus SNN; negative: above the ANN)\n",
             "| model | kind | ANN | " + " | ".join(f"T={t}" for t in shown) + " |", "|---|---|---|" + "---|" * len(shown)]
    for m, r in models.items():
        lines.append(f"| {m} | {CATALOGUE[m]['zoo']['kind']} | {100 * r['ann']:.1f} | "
                     + " | ".join(fmt(gap(r, reference, t)) for t in shown) + " |")
    lines += [f"\nPer kind: median / worst gap of {reference}, in points\n",
              "| kind | models | " + " | ".join(f"T={t}" for t in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for kind in dict.fromkeys(CATALOGUE[m]["zoo"]["kind"] for m in models):
        group = [r for m, r in models.items() if CATALOGUE[m]["zoo"]["kind"] == kind]
        cells = []
        for t in shown:
            gaps = [g for g in (gap(r, reference, t) for r in group) if g is not None]
            cells.append(f"{np.median(gaps):+.1f} / {max(gaps):+.1f}" if gaps else "—")
        lines.append(f"| {kind} | {len(group)} | " + " | ".join(cells) + " |")
    labels = list(dict.fromkeys(label for r in models.values() for label in r["rows"]))
    lines += [f"\nMedian accuracy over the {len(models)} zoo models, in %\n",
              "| method | " + " | ".join(f"T={t}" for t in shown) + " |", "|---|" + "---|" * len(shown)]
    for label in labels:
        cells = []
        for t in shown:
            accs = [r["rows"][label][str(t)] for r in models.values() if str(t) in r["rows"].get(label, {})]
            cells.append(f"{100 * np.median(accs):.1f}" if len(accs) == len(models) else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: str, reference: str = OPTIMAL) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    cols = min(len(models), 3) if len(models) > 4 else len(models)  # more than four panels: rows of three
    nrows = -(-len(models) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * max(cols, 3), 6.0 * nrows), squeeze=False)
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models):
        r = results["models"][model]
        for label, acc in r["rows"].items():
            ts = sorted(int(k) for k in acc)
            style = "-" if label in (OPTIMAL, reference) else ("--" if label.startswith("(e)") else ":")
            ax.plot(ts, [100 * acc[t] if t in acc else acc[str(t)] * 100 for t in ts], style, marker="o", ms=3,
                    lw=2.5 if label == reference else (1.8 if label == OPTIMAL else 1.2), label=label)
        ax.axhline(100 * r["ann"], color="k", lw=0.8, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 100)
        ax.set_xlabel("T (time steps)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{model} (ANN {100 * r['ann']:.1f}%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)  # below the panels: hides no data
    fig.tight_layout(rect=(0, (0.06 + 0.025 * ((len(labels) + 2) // 3)) / nrows, 1, 1))
    fig.savefig(path, dpi=110)


def merge(paths: list[str]) -> dict:
    """Results of several runs (e.g. T = 1..64, then T = 128, 256) as one: rows joined by T per model. The
    runs must have evaluated the same models on the same images (same ANN accuracy and image count) with the
    same calibration set, and may not both have a (row, T) cell."""
    merged = {"timesteps": [], "models": {}, "command": [], "machine": None, "calib": None}
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        calib = run.get("calib", "models/{dataset}_calib.npz")  # runs from before --calib used the bundled sets
        if merged["calib"] not in (None, calib):
            raise SystemExit(f"{path}: calibrated on {calib}, the runs before it on {merged['calib']}; merge only runs "
                             f"with the same --calib")
        merged["calib"] = calib
        merged["timesteps"] = sorted(set(merged["timesteps"]) | set(run["timesteps"]))
        merged["command"].append(run.get("command", path))
        merged["machine"] = merged["machine"] or run.get("machine")
        for model, r in run["models"].items():
            into = merged["models"].setdefault(model, {"ann": r["ann"], "samples": r["samples"], "rows": {}})
            if (into["ann"], into["samples"]) != (r["ann"], r["samples"]):
                raise SystemExit(f"{path}: {model} was evaluated on other images than in the runs before it "
                                 f"(ANN {r['ann']:.4f} on {r['samples']} images, not {into['ann']:.4f} on {into['samples']}); "
                                 f"merge only runs with the same --limit")
            for label, cells in r.get("hits", {}).items():
                into.setdefault("hits", {}).setdefault(label, {}).update(cells)
            for label, acc in r["rows"].items():
                cells = into["rows"].setdefault(label, {})
                twice = sorted(set(cells) & {str(k) for k in acc}, key=int)
                if twice:
                    raise SystemExit(f"{path}: {model} '{label}' at T={','.join(twice)} is in an earlier run too; "
                                     f"merge runs over different T or rows")
                cells.update({str(k): v for k, v in acc.items()})
    return merged


def report(results: dict, plot_path: str | None, reference: str = OPTIMAL) -> int:
    """Print the table (and the zoo summary) and write the plot of a run or of merged runs."""
    results = json.loads(json.dumps(results))  # T keys as strings, as a merged run has them
    print(table(results, reference))
    print(zoo_summary(results, reference=reference))
    if plot_path:
        plot(results, plot_path, reference)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help=f"comma-separated (default: {DEFAULT_MODELS}; with --merge: every model of the runs)")
    ap.add_argument("--zoo", choices=("development", "held-out", "all"), help="run that part of the model zoo instead of --models")
    ap.add_argument("--timesteps", default="1,2,4,8,16,32,64,128,256")
    ap.add_argument("--limit", type=int, default=0, help="first N held-out images only (default: all)")
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--plot", help="write the accuracy-vs-T plot")
    rows_arg = ap.add_mutually_exclusive_group()
    rows_arg.add_argument("--no-spikingjelly", action="store_true", help="skip the SpikingJelly rows")
    rows_arg.add_argument("--no-ours", action="store_true", help="skip our rows (--rows): SpikingJelly's alone, to --merge later")
    ap.add_argument("--rows", default=DEFAULT_ROWS, help="our rows to run, by letter (default %(default)s; all: a,b,c,d,f,g,h,i,j,k)")
    ap.add_argument("--reference-row", default="d", help="the row of ours the others are tested against (McNemar) and whose "
                    "gap to the ANN the zoo summary gives, by letter (default %(default)s: optimal)")
    ap.add_argument("--calib", help="calibration .npz ('image') instead of models/{dataset}_calib.npz, for every model")
    ap.add_argument("--calib-count", type=int, default=0, help="the first N calibration images only (default: all)")
    ap.add_argument("--merge", nargs="+", metavar="RUN.json", help="simulate nothing: join the JSON of earlier runs "
                    "(same models and images, e.g. T = 1..64 and T = 128, 256) and print the table / write the plot and JSON")
    args = ap.parse_args(argv)
    reference = next((label for label in OURS if label[1] == args.reference_row), None)
    if reference is None:
        ap.error(f"--reference-row: no row {args.reference_row}; rows: {', '.join(label[1] for label in OURS)}")
    if args.merge:
        results = merge(args.merge)
        if args.models:
            missing = set(args.models.split(",")) - set(results["models"])
            if missing:
                ap.error(f"--models: {', '.join(sorted(missing))} not in the merged runs")
            results["models"] = {m: results["models"][m] for m in args.models.split(",")}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return report(results, args.plot, reference)
    if args.zoo and args.models:
        ap.error("--zoo and --models exclude each other")
    bad = sorted(set(args.rows.split(",")) - {label[1] for label in OURS})
    if bad:
        ap.error(f"--rows: no row {', '.join(bad)}; rows: {', '.join(label[1] for label in OURS)}")
    args.models = ",".join(zoo_models(args.zoo)) if args.zoo else args.models or DEFAULT_MODELS
    unknown = [m for m in args.models.split(",") if m not in CATALOGUE]
    if unknown:
        ap.error(f"--models: {', '.join(unknown)} not in models/models.json")
    timesteps = sorted(int(t) for t in args.timesteps.split(","))
    if args.calib and len({CATALOGUE[m]["dataset"] for m in args.models.split(",")}) > 1:
        ap.error("--calib replaces the calibration set of every model: give models of one dataset only")
    calib_name = (args.calib or "models/{dataset}_calib.npz") + (f", first {args.calib_count}" if args.calib_count else "")
    results = {"timesteps": timesteps, "calib": calib_name, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}", "command": " ".join(["python"] + sys.argv), "models": {}}
    for model in args.models.split(","):
        path = model_path(model)
        calib, (x, y) = data(model, args.limit, args.calib, args.calib_count)
        ann = float(np.mean(ort.InferenceSession(path).run(None, {"image": x})[0].argmax(1) == y))
        print(f"{model}: ANN {100 * ann:.2f}% ({len(calib)} calibration images)", flush=True)
        rows, hits = ({}, {}) if args.no_ours else ours(path, calib, x, y, timesteps, args.rows.split(","))
        if not args.no_spikingjelly:
            more = spikingjelly(path, calib, x, y, timesteps)
            rows.update(more[0])
            hits.update(more[1])
        results["models"][model] = {"ann": ann, "samples": int(len(y)), "rows": rows, "hits": hits}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    return report(results, args.plot, reference)


if __name__ == "__main__":
    sys.exit(main())
