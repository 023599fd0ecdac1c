"""Fold constant subgraphs (including shape arithmetic on static shapes) into initializers.

After: no node has only constant inputs; Constant nodes are initializers. Shape arithmetic that depends on a
dynamic batch dimension stays and is evaluated by the runtime.
"""
import logging

import onnx_graphsurgeon as gs
import onnxruntime as ort

from .context import Context, finish

logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
ort.set_default_logger_severity(4)  # onnxruntime sessions (folding, calibration) would log what we report as errors anyway


def run(ctx: Context) -> None:
    before = {n.name: n.op for n in ctx.graph.nodes}
    ctx.graph.fold_constants(fold_shapes=True, error_ok=True)
    finish(ctx.graph)
    remaining = {n.name for n in ctx.graph.nodes}
    for name, op in before.items():
        if name not in remaining and ctx.report.node(name) is not None and ctx.report.node(name).action == "":
            ctx.report.set_action(name, "folded into a constant")
