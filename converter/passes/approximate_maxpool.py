"""Opt-in (maxpool="avg"): replace every MaxPool that will see spikes by an AveragePool of the same window.
This changes the math, so it runs only when asked, and every replaced node is reported as approximated.
A MaxPool of the analog input (nothing spikes before it) stays: it is exact.

After: with the option, no MaxPool downstream of an activation remains; without it, nothing changes.
"""
from .context import Context, downstream, finish


def run(ctx: Context) -> None:
    if ctx.options.get("maxpool") != "avg":
        return
    spiking = downstream([t for n in ctx.graph.nodes if n.op in ("Relu", "Clip") for t in n.outputs])
    for node in [n for n in ctx.graph.nodes if n.op == "MaxPool" and n.inputs[0].name in spiking]:
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the Indices output is used: check_ops refuses this node
        node.op = "AveragePool"
        node.attrs = {k: v for k, v in node.attrs.items() if k in ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad")}
        node.attrs["count_include_pad"] = 0
        ctx.report.set_action(node.name, "approximated by AveragePool (--maxpool avg)")
        ctx.report.notes.append(f"MaxPool '{node.name}' was approximated by an AveragePool at the user's request")
    finish(ctx.graph)
