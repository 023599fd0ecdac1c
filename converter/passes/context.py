"""What the passes share: the graph, the report, and the activation layers found so far."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..report import Report


@dataclass
class Activation:
    """One threshold ReLU: the Clip node in the ANN graph that becomes an IFNeuron in the SNN."""

    node: gs.Node
    source_op: str
    upper_bound: float | None


@dataclass
class Context:
    graph: gs.Graph
    report: Report
    name: str
    activations: list[Activation] = field(default_factory=list)
    options: dict = field(default_factory=dict)


def constant_value(tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def downstream(tensors) -> set[str]:
    """Names of the given tensors and of every tensor computed from them."""
    seen, frontier = set(), list(tensors)
    while frontier:
        tensor = frontier.pop()
        if tensor.name not in seen:
            seen.add(tensor.name)
            frontier.extend(t for consumer in tensor.outputs for t in consumer.outputs)
    return seen


def truncate(tensors, length: int) -> None:
    """Drop trailing node inputs/outputs (onnx-graphsurgeon's synchronised lists do not support slices)."""
    while len(tensors) > length:
        tensors.pop()


def finish(graph: gs.Graph) -> None:
    """Every pass ends here: drop what became unused, keep the nodes in topological order."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()


def bypass(graph: gs.Graph, node: gs.Node) -> None:
    """Remove a single-input, single-output no-op node, keeping graph output names stable."""
    src, dst = node.inputs[0], node.outputs[0]
    if dst in graph.outputs and (src in graph.inputs or src in graph.outputs or isinstance(src, gs.Constant)):
        return  # nothing to merge into: the node is harmless at run time
    if dst in graph.outputs:
        # The output name must survive: make the producer of src write dst directly.
        for consumer in list(src.outputs):
            if consumer is not node:
                consumer.inputs[consumer.inputs.index(src)] = dst
        producer = src.inputs[0]
        producer.outputs[producer.outputs.index(src)] = dst
    else:
        for consumer in list(dst.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is dst:
                    consumer.inputs[i] = src
    node.inputs.clear()
    node.outputs.clear()
