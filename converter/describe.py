"""``onnx2snn inspect``: what a file holds. For an SNN file: metadata, neuron layers (V_th, shift, v_init,
reset) and op counts; for an ANN: each op type with the policy the converter applies to it."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from runtime import format as fmt

from .load import load_model
from .policy import policy_of


def _load(path: str) -> onnx.ModelProto:
    """An SNN file through the SNN reader (per-channel attributes are tensors, which onnx's checker rejects),
    anything else through the converter's loader (checked, with one-line errors)."""
    try:
        peek = onnx.load(path, load_external_data=False)
    except Exception:
        peek = None
    if peek is not None and fmt.META_FORMAT_VERSION in fmt.metadata(peek):
        return fmt.load_snn(path)
    return load_model(path).model


def inspect_file(path: str) -> tuple[dict, str]:
    model = _load(path)
    meta = fmt.metadata(model)
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node)
    info = {"file": path, "ir_version": model.ir_version, "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "inputs": [_io(v) for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}],
            "outputs": [_io(v) for v in model.graph.output], "ops": dict(ops)}
    lines = [f"{path}: IR {model.ir_version}, opsets {info['opset']}",
             "inputs:  " + ", ".join(f"{i['name']} {i['shape']}" for i in info["inputs"]),
             "outputs: " + ", ".join(f"{o['name']} {o['shape']}" for o in info["outputs"])]
    if fmt.META_FORMAT_VERSION in meta:
        fmt.validate(model, path)
        info["kind"] = "snn"
        info["metadata"] = meta
        info["layers"] = []
        for node in model.graph.node:
            if node.domain == fmt.DOMAIN:
                p = fmt.neuron_params(node)
                info["layers"].append({"layer": node.name, "v_th": p.v_th.tolist(), "shift": p.shift.tolist(),
                                       "v_init": p.v_init.tolist(), "reset": p.reset, "signed": p.signed,
                                       "burst": p.burst})
        lines.append("SNN description: " + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in meta.items() if k.startswith("onnx2snn.")))
        lines.append(f"{'neuron layer':<40} {'V_th':>9} {'shift':>9} {'v_init':>8} reset")
        for layer in info["layers"]:
            kind = (", signed" if layer["signed"] else "") + (f", burst {layer['burst']}" if layer["burst"] > 1 else "")
            lines.append(f"{layer['layer'][:40]:<40} {_scalar(layer['v_th']):>9} {_scalar(layer['shift']):>9} {_scalar(layer['v_init']):>8} "
                         f"{layer['reset']}{kind}")
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())))
    else:
        info["kind"] = "ann"
        info["policies"] = {}
        lines.append(f"{'op':<24} {'count':>5}  policy   why")
        for op, n in sorted(ops.items()):
            entry = policy_of(op)
            policy, why = (entry.policy, entry.why) if entry else ("refuse", "not supported yet")
            info["policies"][op] = {"count": n, "policy": policy, "why": why}
            lines.append(f"{op:<24} {n:>5}  {policy:<8} {why}")
    return info, "\n".join(lines)


def _scalar(values: list) -> str:
    return f"{values[0]:.4g}" if len(values) == 1 else f"[{len(values)} ch]"


def _io(vi: onnx.ValueInfoProto) -> dict:
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
    return {"name": vi.name, "shape": dims}


PLOT_SAMPLES = 256   # samples of --calib the plot runs: enough for smooth histograms, quick on 2 cores


def plot_layers(path: str, out: str, calib: str | None, ann: str | None, info: dict) -> dict:
    """Per neuron layer: the distribution of its activations with the chosen V_th (as Deng & Gu's Figure 2A) and
    its firing rate. Activations are the source ANN's (``ann``, run in onnxruntime) and the SNN's own rate-coded
    ones (mean spike output over T, i.e. rate x V_th), both on the first ``PLOT_SAMPLES`` samples of ``calib``.
    Returns what was plotted (per layer: V_th, firing rate, share of ANN activations above V_th)."""
    import onnx as _onnx

    from runtime import InferenceSession

    from .data import load_array_file, model_feeds
    from .errors import InputError

    if info.get("kind") != "snn":
        raise InputError(f"{path}: --plot needs an SNN file (.snn.onnx); convert the model first")
    if calib is None:
        raise InputError("--plot needs --calib DATA.npy (or .npz): the layers' activity is measured on that data")
    if not info["layers"]:
        raise InputError(f"{path}: the SNN has no neuron layers to plot")
    model = _load(path)
    neurons = [n for n in model.graph.node if n.domain == fmt.DOMAIN and n.op_type == fmt.NEURON_OP]
    probe = _onnx.ModelProto()
    probe.CopyFrom(model)
    shapes = {v.name: v for v in probe.graph.value_info}
    for n in neurons:   # expose every neuron's spikes: their readout is the rate-coded activation
        probe.graph.output.append(shapes.get(n.output[0]) or _onnx.helper.make_tensor_value_info(n.output[0], _onnx.TensorProto.FLOAT, None))
    session = InferenceSession(probe)
    data = load_array_file(calib)
    feeds = {k: v[:PLOT_SAMPLES] for k, v in model_feeds(data, [i.name for i in session.get_inputs()], calib).items()}
    outputs = session.run(None, feeds)[len(model.graph.output):]
    snn_acts = {n.name: v for n, v in zip(neurons, outputs)}
    rates = {layer["layer"]: layer["firing_rate"] for layer in session.stats["layers"]}
    ann_acts = _ann_activations(ann, path, fmt.metadata(model), [n.name for n in neurons], feeds) if ann else {}

    summary = []
    for n in neurons:
        v_th = fmt.neuron_params(n).v_th
        a = ann_acts.get(n.name)
        summary.append({"layer": n.name, "v_th_max": float(v_th.max()), "v_th_min": float(v_th.min()),
                        "firing_rate": float(rates.get(n.name, np.mean(snn_acts[n.name] > 0))),
                        "ann_above_v_th": None if a is None else float(np.mean(a > _broadcast_channels(v_th, a)))})
    _draw(summary, snn_acts, ann_acts, out, f"{path} ({len(next(iter(feeds.values())))} samples of {calib}, "
          f"T={fmt.timesteps_of(model)}, {fmt.metadata(model).get(fmt.META_THRESHOLD_METHOD, '?')})")
    return {"file": out, "samples": int(len(next(iter(feeds.values())))), "layers": summary}


def _ann_activations(ann: str, snn_path: str, meta: dict, names: list[str], feeds: dict) -> dict:
    """The source ANN's post-ReLU activations at each neuron layer (same node names after the converter's passes)."""
    from .calibrate import activations
    from .convert import prepare
    from .errors import InputError

    source, ctx, clean = prepare(ann)
    recorded = meta.get(fmt.META_SOURCE_SHA256)
    if recorded and recorded != source.sha256:
        raise InputError(f"--ann {ann}: not the model {snn_path} was converted from (its SHA-256 differs from onnx2snn.source_sha256)")
    by_name = {a.node.name: a.node.outputs[0].name for a in ctx.activations}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"--ann {ann}: has no activation for neuron layer '{missing[0]}'")
    values = activations(clean, [by_name[n] for n in names], feeds)
    return {n: values[by_name[n]] for n in names}


def _broadcast_channels(v_th: np.ndarray, acts: np.ndarray) -> np.ndarray:
    return v_th.reshape((1, -1) + (1,) * (acts.ndim - 2)) if v_th.size > 1 else v_th.reshape(())


def _draw(summary: list[dict], snn_acts: dict, ann_acts: dict, out: str, title: str) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .writer import write_bytes_atomic

    n = len(summary)
    cols = min(4, n + 1)
    rows = -(-(n + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=110, squeeze=False)
    axes = axes.ravel()
    for ax, layer in zip(axes, summary):
        name, top = layer["layer"], layer["v_th_max"]
        hi = max(top, float(ann_acts[name].max()) if name in ann_acts else top) * 1.05
        bins = np.linspace(0, hi, 41)
        if name in ann_acts:
            a = ann_acts[name].ravel()
            ax.hist(a[a > 0], bins=bins, color="tab:gray", alpha=0.6, label="ANN (> 0)")
        s = snn_acts[name].ravel()
        ax.hist(s[s > 0], bins=bins, histtype="step", color="tab:blue", label="SNN rate x V_th (> 0)")
        ax.axvline(top, color="tab:red", label="V_th" if layer["v_th_min"] == top else "V_th (max, min of channels)")
        if layer["v_th_min"] != top:
            ax.axvline(layer["v_th_min"], color="tab:red", linestyle=":")
        ax.set_yscale("log")
        ax.set_title(f"{name[-28:]}\nrate {layer['firing_rate']:.3f}" +
                     (f", {100 * layer['ann_above_v_th']:.2f}% > V_th" if layer["ann_above_v_th"] is not None else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="upper right")
    ax = axes[n]
    ax.barh(range(n), [layer["firing_rate"] for layer in summary], color="tab:blue")
    ax.set_yticks(range(n), [layer["layer"][-20:] for layer in summary], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (spikes per neuron per step)", fontsize=7)
    ax.set_title("firing rate per layer", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for extra in axes[n + 1:]:
        extra.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=out.rsplit(".", 1)[-1].lower() if "." in out else "png")
    plt.close(fig)
    write_bytes_atomic(out, buffer.getvalue())
