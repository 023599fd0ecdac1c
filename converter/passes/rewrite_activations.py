"""Rewrite every Relu and Clip(0, c) as a threshold ReLU: Clip(x, 0, bound) with its own constants.

Before: check_ops passed. After: no Relu remains; each activation is a Clip node recorded in
``ctx.activations`` with its upper bound (c for ReLU6-style clips, None for Relu). Calibration sets V_th.
"""
import numpy as np
import onnx_graphsurgeon as gs

from .context import Activation, Context, constant_value, finish, truncate

UNBOUNDED = np.float32(np.finfo(np.float32).max)


def run(ctx: Context) -> None:
    for node in [n for n in ctx.graph.nodes if n.op in ("Relu", "Clip")]:
        upper = None
        if node.op == "Clip":
            high = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
            upper = float(high.reshape(-1)[0]) if high is not None else None
        source_op = node.op
        node.op = "Clip"
        node.attrs.clear()
        truncate(node.inputs, 1)
        node.inputs.append(gs.Constant(node.name + "_vmin", np.zeros((), np.float32)))
        node.inputs.append(gs.Constant(node.name + "_vth", np.array(UNBOUNDED if upper is None else upper, np.float32)))
        ctx.activations.append(Activation(node, source_op, upper))
        ctx.report.set_action(node.name, "threshold ReLU -> IFNeuron")
    finish(ctx.graph)
