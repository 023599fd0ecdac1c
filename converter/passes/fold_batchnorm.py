"""Fold BatchNormalization into the preceding Conv or Gemm; otherwise rewrite it as a per-channel Mul+Add.

Before: constants folded. After: no BatchNormalization remains; every former BN is either part of a Conv/Gemm
weight and bias or an explicit per-channel affine (linear, so simulated per step).
"""
import numpy as np
import onnx_graphsurgeon as gs

from ..errors import ConversionError
from .context import Context, constant_value, finish


def _bn_affine(node: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    values = [constant_value(t) for t in node.inputs[1:5]]
    if any(v is None for v in values):
        raise ConversionError(f"node '{node.name}': BatchNormalization with non-constant scale/bias/mean/var cannot be folded; export in eval mode")
    scale, bias, mean, var = (v.astype(np.float64) for v in values)
    eps = float(node.attrs.get("epsilon", 1e-5))
    if np.any(var + eps <= 0) or not all(np.all(np.isfinite(v)) for v in (scale, bias, mean, var)):
        raise ConversionError(f"node '{node.name}': BatchNormalization has a negative variance or non-finite statistics; the model is corrupt")
    gain = scale / np.sqrt(var + eps)
    return gain, bias - mean * gain


def _foldable_producer(node: gs.Node, graph: gs.Graph):
    x = node.inputs[0]
    if len(x.inputs) != 1 or len(x.outputs) != 1 or x in graph.outputs:
        return None
    producer = x.inputs[0]
    if producer.op == "Conv" and all(isinstance(t, gs.Constant) for t in producer.inputs[1:]):
        return producer
    if producer.op == "Gemm" and all(isinstance(t, gs.Constant) for t in producer.inputs[1:]) \
            and not producer.attrs.get("transA", 0) and producer.inputs[1].values.ndim == 2:
        return producer
    return None


def _fold(producer: gs.Node, gain: np.ndarray, shift: np.ndarray) -> None:
    w = producer.inputs[1].values.astype(np.float64)
    if producer.op == "Conv":
        w = w * gain.reshape((-1,) + (1,) * (w.ndim - 1))
        n_out = w.shape[0]
    else:
        alpha = float(producer.attrs.get("alpha", 1.0))
        if producer.attrs.get("transB", 0):
            w = w * gain[:, None] * alpha
            n_out = w.shape[0]
        else:
            w = w * gain[None, :] * alpha
            n_out = w.shape[1]
        producer.attrs["alpha"] = 1.0
    old_bias = np.zeros(n_out)
    if len(producer.inputs) > 2:
        b = producer.inputs[2].values.astype(np.float64).reshape(-1)
        beta = float(producer.attrs.get("beta", 1.0)) if producer.op == "Gemm" else 1.0
        old_bias = np.broadcast_to(b * beta, (n_out,))
    if producer.op == "Gemm":
        producer.attrs["beta"] = 1.0
    bias = old_bias * gain + shift
    producer.inputs[1] = gs.Constant(producer.inputs[1].name + "_bnfold", w.astype(np.float32))
    b_const = gs.Constant(producer.name + "_bias_bnfold", bias.astype(np.float32))
    if len(producer.inputs) > 2:
        producer.inputs[2] = b_const
    else:
        producer.inputs.append(b_const)


def run(ctx: Context) -> None:
    graph = ctx.graph
    for node in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        if node.attrs.get("training_mode", 0) or len(node.outputs) > 1:
            raise ConversionError(f"node '{node.name}': BatchNormalization in training mode; export the model in eval mode")
        gain, shift = _bn_affine(node)
        producer = _foldable_producer(node, graph)
        out = node.outputs[0]
        if producer is not None:
            _fold(producer, gain, shift)
            producer.outputs[0] = out
            ctx.report.set_action(node.name, f"folded into {producer.op} '{producer.name}'")
        else:
            rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else 4
            shape = (-1,) + (1,) * max(0, rank - 2)
            mid = gs.Variable(node.name + "_scaled", dtype=np.float32)
            g = gs.Constant(node.name + "_gain", gain.astype(np.float32).reshape(shape))
            s = gs.Constant(node.name + "_shift", shift.astype(np.float32).reshape(shape))
            graph.nodes.append(gs.Node("Mul", node.name + "_mul", inputs=[node.inputs[0], g], outputs=[mid]))
            graph.nodes.append(gs.Node("Add", node.name + "_add", inputs=[mid, s], outputs=[out]))
            ctx.report.set_action(node.name, "kept as a per-channel affine (Mul+Add): no Conv/Gemm before it")
        node.inputs.clear()
        node.outputs.clear()
    finish(graph)
