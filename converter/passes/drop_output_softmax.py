"""Drop a Softmax/LogSoftmax whose result reaches the graph outputs only through shape ops (Reshape,
Flatten, ...; the opset-13 upgrade of an old Softmax wraps it in Flatten/Reshape): rate readout then gives the
logits, whose arg-max (the predicted class) is the same. Reported, never silent.

After: no Softmax/LogSoftmax feeds the outputs; the outputs keep their names.
"""
from .context import Context, bypass, finish

SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _only_reshaped_to_outputs(tensor, graph) -> bool:
    """True if every use of ``tensor`` is a graph output or the data input of a shape op that leads there."""
    if not tensor.outputs:
        return tensor in graph.outputs
    return all(c.op in SHAPE_ONLY and c.inputs[0] is tensor and all(_only_reshaped_to_outputs(o, graph) for o in c.outputs)
               for c in tensor.outputs)


def run(ctx: Context) -> None:
    for node in [n for n in ctx.graph.nodes if n.op in ("Softmax", "LogSoftmax")]:
        out = node.outputs[0]
        if not _only_reshaped_to_outputs(out, ctx.graph):
            continue  # inside the network: check_ops refuses it
        bypass(ctx.graph, node)
        ctx.report.set_action(node.name, "dropped at the output: the SNN reads out logits (same arg-max)")
        ctx.report.notes.append(f"{node.op} '{node.name}' before the output was dropped: outputs are logits, not probabilities")
    finish(ctx.graph)
