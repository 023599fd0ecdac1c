"""Refuse, with a clear error, every node that cannot be simulated with spikes.

Before: no-ops removed, constants and BatchNorm folded, output Softmax dropped. After: every node's op has a
policy that lets it pass, and every Mul/Div/MatMul is linear in its data input (other operand constant).
"""
import numpy as np

from ..errors import UnsupportedOpError
from ..policy import DROP, REFUSE, policy_of, refuse
from .context import Context, constant_value


SPATIAL = ("Conv", "ConvTranspose", "AveragePool", "MaxPool")


def _is_data(tensor, graph) -> bool:
    """An activation: neither a constant nor integer shape arithmetic (Mul of two dims is not an activation)."""
    dtype = getattr(tensor, "dtype", None)
    integer = dtype is not None and np.issubdtype(np.dtype(dtype), np.integer)
    return constant_value(tensor) is None and not integer


def run(ctx: Context) -> None:
    graph = ctx.graph
    for node in graph.nodes:
        entry = policy_of(node.op)
        if node.domain not in (None, "", "ai.onnx") or entry is None or entry.policy == REFUSE:
            raise refuse(node.name, node.op if node.domain in (None, "", "ai.onnx") else f"{node.domain}.{node.op}")
        if entry.policy == DROP:
            raise UnsupportedOpError(f"node '{node.name}': {node.op} inside the network has no rate-coded equivalent (only a {node.op} "
                                     f"between the last layer and a graph output can be dropped)")
        if node.op in ("Mul", "MatMul") and all(_is_data(t, graph) for t in node.inputs[:2]):
            raise UnsupportedOpError(f"node '{node.name}': {node.op} of two activations is not linear, so it has no rate-coded equivalent")
        if node.op == "Div" and _is_data(node.inputs[1], graph):
            raise UnsupportedOpError(f"node '{node.name}': Div by an activation is not linear, so it has no rate-coded equivalent")
        rank = len(node.inputs[0].shape) if node.inputs and node.inputs[0].shape is not None else None
        if node.op in SPATIAL and rank is not None and rank not in (3, 4):
            raise UnsupportedOpError(f"node '{node.name}': {node.op} on {rank - 2}-D data is not supported yet (1-D and 2-D only)")
        if node.op == "Resize" and node.attrs.get("mode", "nearest") != "nearest":
            raise UnsupportedOpError(f"node '{node.name}': Resize mode {node.attrs.get('mode')!r} is not supported yet (nearest only)")
        if node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].outputs:
            raise UnsupportedOpError(f"node '{node.name}': MaxPool's Indices output has no spiking equivalent")
        if node.op == "Clip":
            low = constant_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
            if low is None or float(low.reshape(-1)[0]) != 0.0:
                raise UnsupportedOpError(f"node '{node.name}': Clip is supported only as Clip(0, c) (ReLU/ReLU6 style) with constant bounds")
