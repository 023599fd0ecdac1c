"""Emit the SNN graph description (``*.snn.onnx``) and the threshold-ReLU ANN from the cleaned graph.

Both are copies of the same graph: the ANN keeps each activation as Clip(0, V_th); the SNN replaces it with an
onnx2snn.IFNeuron carrying v_th, shift, v_init and reset. Files are written atomically.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from runtime import external
from runtime import format as fmt

from .passes.context import Context, downstream, truncate
from .passes.pool_before_neuron import MOVED


def _export(graph: gs.Graph, opset: int, extra_domains: list | None = None) -> onnx.ModelProto:
    model = gs.export_onnx(graph, do_type_check=False)
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    for domain, version in extra_domains or []:
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))
    model.ir_version = max(8, onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))
    model.producer_name = "onnx2snn"
    return model


def build_ann(ctx: Context, thresholds: dict[str, float], opset: int) -> onnx.ModelProto:
    """The threshold-ReLU ANN: every activation is Clip(x, 0, V_th)."""
    graph = ctx.graph.copy()
    by_name = {n.name: n for n in graph.nodes}
    for act in ctx.activations:
        node = by_name[act.node.name]
        node.inputs[2] = gs.Constant(node.name + "_vth", np.array(thresholds[act.node.name], np.float32))
    return _export(graph, opset)


def build_snn(ctx: Context, thresholds: dict[str, float], timesteps: int, shift: dict[str, float], v_init: dict[str, float],
              reset: str, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    """The SNN description: every activation is an onnx2snn.IFNeuron; metadata stamped; checked."""
    graph = ctx.graph.copy()
    by_name = {n.name: n for n in graph.nodes}
    for act in ctx.activations:
        node = by_name[act.node.name]
        node.op = fmt.NEURON_OP
        node.domain = fmt.DOMAIN
        truncate(node.inputs, 1)
        node.attrs.clear()
        node.attrs.update({"v_th": float(thresholds[act.node.name]), "shift": float(shift[act.node.name]),
                           "v_init": float(v_init[act.node.name]), "reset": reset})
    _gate_max_pools(graph, [by_name[act.node.name] for act in ctx.activations], ctx.report)
    model = _export(graph, opset, [(fmt.DOMAIN, fmt.DOMAIN_VERSION)])
    for key, value in {fmt.META_FORMAT_VERSION: fmt.FORMAT_VERSION, fmt.META_TIMESTEPS: str(timesteps),
                       fmt.META_INPUT_ENCODING: "analog", **metadata}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model = external.infer_shapes(model)
    fmt.validate(model, "<converted SNN>")
    return model


def _gate_max_pools(graph: gs.Graph, neurons: list[gs.Node], report) -> None:
    """MaxPool downstream of a neuron sees spikes: make it the gated onnx2snn.SpikeMaxPool. A MaxPool of the
    analog input sees the same value at every step, so the plain (exact) MaxPool stays."""
    dynamic = downstream([t for n in neurons for t in n.outputs])
    for node in graph.nodes:
        if node.op != "MaxPool":
            continue
        entry = report.node(node.name)
        moved = entry is not None and MOVED in entry.action
        if node.inputs[0].name not in dynamic:
            if not moved:  # else the pool_before_neuron pass already said why it is exact
                report.set_action(node.name, "kept: its input comes from the analog input alone, the same at every step, so it is exact")
        else:
            gated = f"gated max pool ({fmt.DOMAIN}.{fmt.MAXPOOL_OP})"
            report.set_action(node.name, f"{entry.action}; {gated} of the currents" if moved else f"{gated} of spikes")
            node.op, node.domain = fmt.MAXPOOL_OP, fmt.DOMAIN
            truncate(node.outputs, 1)
            node.attrs = {k: v for k, v in node.attrs.items() if k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad")}


def save_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file.

    A model too large for one protobuf (``runtime.external.is_large``) is written as ``path`` plus its weights
    in ``path + '.data'`` (ONNX external data, page-aligned): both go to temporary files first, then the data
    file and the model file are renamed in that order."""
    if not external.is_large(model):
        stale = _own_data_file(path)
        write_bytes_atomic(path, model.SerializeToString())
        if stale:  # the file replaced was a large model: its data file now belongs to nothing
            os.remove(stale)
        return
    path = os.fspath(path)
    data_path = external.data_file(path)
    skel, moved = external.skeleton(model, os.path.basename(data_path))
    tmp = _temp_for(data_path)
    try:
        with open(tmp, "wb") as f:
            external.write_data(f, moved)
        write_bytes_atomic(path, skel.SerializeToString(), before_rename=lambda: os.replace(tmp, data_path))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _own_data_file(path: str | os.PathLike) -> str | None:
    """``path + '.data'`` if it exists and the file now at ``path`` is the large model that refers to it."""
    data_path = external.data_file(path)
    if not (os.path.isfile(data_path) and os.path.isfile(path)):
        return None
    try:
        old = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:  # not a model: whatever it was, it does not own the data file
        return None
    return data_path if os.path.basename(data_path) in external.locations(old) else None


def _temp_for(path: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    return tmp


def write_bytes_atomic(path: str | os.PathLike, data: bytes, before_rename=None) -> None:
    path = os.fspath(path)
    tmp = _temp_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
