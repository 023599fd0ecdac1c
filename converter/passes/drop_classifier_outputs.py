"""Classifier post-processing at the graph outputs, as skl2onnx writes it: a label output computed by ArgMax
of the scores (then ArrayFeatureExtractor of the class labels, Cast, Reshape, ...), and a ZipMap that turns
the scores into a list of {class: probability} maps.

Neither has a rate-coded equivalent: the arg-max (or the map) of the outputs at each step is not the arg-max of
their mean. So a label output is dropped, its note naming the score output whose arg-max it is and the class
labels it maps to; a ZipMap output becomes the score tensor it reads, under the output's own name. Reported,
never silent; a model whose only output is a label is refused.

After: no ArgMax, ArrayFeatureExtractor or ZipMap lies between the last layer and a graph output.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedOpError
from .context import Context, constant_value, downstream, finish

LABEL_OPS = frozenset({"ArrayFeatureExtractor", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def _label_nodes(argmax: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    """The nodes computing labels from this ArgMax, if they only lead to graph outputs; else None."""
    names = downstream(argmax.outputs)
    nodes = [n for n in graph.nodes if any(t.name in names for t in n.inputs) and n is not argmax]
    if any(n.op not in LABEL_OPS for n in nodes):
        return None
    ends = [t for n in [argmax] + nodes for t in n.outputs if not t.outputs]
    return nodes if all(t in graph.outputs for t in ends) else None


def _drop_labels(ctx: Context) -> None:
    graph = ctx.graph
    for argmax in [n for n in graph.nodes if n.op == "ArgMax"]:
        nodes = _label_nodes(argmax, graph)
        if nodes is None:
            continue  # inside the network: check_ops refuses it
        labels = [t for n in [argmax] + nodes for t in n.outputs if t in graph.outputs]
        if len(labels) == len(graph.outputs):
            raise UnsupportedOpError(f"node '{argmax.name}': the model's only output is a class label (ArgMax of the scores), "
                                     "which spikes cannot give; export the scores (or probabilities) as an output too")
        classes = [constant_value(n.inputs[0]) for n in nodes if n.op == "ArrayFeatureExtractor"]
        mapped = f", mapped to the class labels {np.asarray(classes[0]).reshape(-1).tolist()}" if classes and classes[0] is not None else ""
        for t in labels:
            graph.outputs.remove(t)
        for n in [argmax] + nodes:
            ctx.report.set_action(n.name, "dropped with the label output it computes")
        ctx.report.notes.append(f"label output{'s' if len(labels) > 1 else ''} {', '.join(repr(t.name) for t in labels)} dropped: "
                                f"it is the arg-max of '{argmax.inputs[0].name}'{mapped}; the SNN outputs the scores")


def _unzip(ctx: Context) -> None:
    graph = ctx.graph
    for node in [n for n in graph.nodes if n.op == "ZipMap"]:
        out, scores = node.outputs[0], node.inputs[0]
        if out not in graph.outputs or out.outputs:
            continue  # check_ops refuses it
        node.outputs.clear()
        graph.outputs[graph.outputs.index(out)] = scores
        if scores not in graph.inputs and graph.outputs.count(scores) == 1:
            scores.name = out.name  # the output keeps its name; it now holds the score tensor
        ctx.report.set_action(node.name, "dropped at the output: the output holds the score tensor, not a list of maps")
        ctx.report.notes.append(f"ZipMap '{node.name}' before output '{out.name}' was dropped: the output is the (N, classes) "
                                "score tensor instead of a list of {class: score} maps")


def run(ctx: Context) -> None:
    _drop_labels(ctx)
    _unzip(ctx)
    finish(ctx.graph)
