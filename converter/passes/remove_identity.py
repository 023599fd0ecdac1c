"""Remove Identity and Dropout nodes (no-ops at inference).

After: no Identity or Dropout remains, except an Identity that copies a graph input straight to an output.
"""
from ..errors import UnsupportedOpError
from .context import Context, bypass, finish, truncate

NO_OPS = ("Identity", "Dropout")


def run(ctx: Context) -> None:
    for node in [n for n in ctx.graph.nodes if n.op in NO_OPS]:
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            raise UnsupportedOpError(f"node '{node.name}': the mask output of Dropout is used by other nodes; export the model in eval mode")
        if node.op == "Dropout":
            truncate(node.outputs, 1)
            truncate(node.inputs, 1)
        bypass(ctx.graph, node)
        ctx.report.set_action(node.name, "removed (no-op at inference)")
    finish(ctx.graph)
