"""Drop a Softmax/LogSoftmax that produces a graph output: rate readout then gives the logits, whose arg-max
(the predicted class) is the same. Reported, never silent.

After: no Softmax/LogSoftmax feeds a graph output directly; the output keeps its name.
"""
from .context import Context, bypass, finish


def run(ctx: Context) -> None:
    for node in [n for n in ctx.graph.nodes if n.op in ("Softmax", "LogSoftmax")]:
        out = node.outputs[0]
        if out not in ctx.graph.outputs or out.outputs:
            continue  # inside the network: check_ops refuses it
        bypass(ctx.graph, node)
        ctx.report.set_action(node.name, "dropped at the output: the SNN reads out logits (same arg-max)")
        ctx.report.notes.append(f"{node.op} '{node.name}' at output '{out.name}' was dropped: outputs are logits, not probabilities")
    finish(ctx.graph)
