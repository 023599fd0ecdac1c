"""Fold shape arithmetic on a symbolic batch size: ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``.

Exporters compute a Reshape's target from ``Shape(x)`` (``x.view(x.size(0), -1)``, torch.onnx dynamo,
tf2onnx): the integers depend on the batch size N, so constant folding cannot fold them, and left in place they
are integer tensors flowing beside the activations, evaluated at every step. Here each such subgraph (Shape of a
tensor whose dims are numbers or named symbols, then only integer shape ops) is evaluated with onnx's reference
evaluator for several values of the symbols. Where an integer tensor it feeds to another node comes out the same
for every value, it becomes a constant. Where it is a Reshape's target whose elements are all fixed but one,
that element becomes 0 (copy the input's dimension: it is the input's own symbolic dim, e.g. the batch) or -1
(inferred), which is what it equals for every N; the result is the same for every batch size.

Before: constants folded. After: no Shape node remains whose result is a fixed function of the batch size and
is used as a constant or Reshape target; other shape arithmetic stays (evaluated by the runtime at run time).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.reference import ReferenceEvaluator

from .context import Context, finish

# Integer ops whose value is a polynomial/rational function of the dims they read: three values of N giving the
# same result means no dependence on N. (Min, Max, Where, Equal, ... could agree by accident: left alone.)
SHAPE_OPS = frozenset({"Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Mul", "Div", "Add", "Sub",
                       "ReduceProd", "Identity", "Reshape", "Flatten"})
SYMBOL_VALUES = ((5, 7, 11), (13, 17, 19), (23, 29, 31))   # one row per evaluation: the values of up to 3 symbols
FOLDED = "folded: shape arithmetic on the symbolic batch size, the same for every batch size"


def _dims(tensor: gs.Tensor) -> list | None:
    """A tensor's dims as ints and symbol names, or None when some dim is unknown."""
    shape = tensor.shape
    if shape is None or any(d is None or (isinstance(d, str) and not d) for d in shape):
        return None
    return list(shape)


def _closure(graph: gs.Graph) -> tuple[list[gs.Node], list[gs.Node]]:
    """Shape nodes on fully described tensors, and the integer shape ops computed from them alone."""
    roots = [n for n in graph.nodes if n.op == "Shape" and _dims(n.inputs[0]) is not None]
    inside = {t.name for n in roots for t in n.outputs}
    ops = []
    for node in graph.nodes:  # topologically sorted
        if node.op not in SHAPE_OPS or not node.inputs:
            continue
        feeds = [t for t in node.inputs if t.name and not isinstance(t, gs.Constant)]
        if feeds and all(t.name in inside for t in feeds):
            ops.append(node)
            inside.update(t.name for t in node.outputs)
    return roots, ops


def _evaluate(roots: list[gs.Node], ops: list[gs.Node], wanted: list[str], values: dict[str, int], opset: int) -> list[np.ndarray]:
    """The wanted integer tensors when each symbolic dim takes the given value."""
    nodes, inits = [], []
    for node in roots:
        dims = [values[d] if isinstance(d, str) else d for d in _dims(node.inputs[0])]
        dims = dims[node.attrs.get("start", 0):node.attrs.get("end", len(dims))]  # opset 15's start/end, as slices
        inits.append(onnx.numpy_helper.from_array(np.array(dims, np.int64), node.outputs[0].name))
    constants = {t.name: t for node in ops for t in node.inputs if isinstance(t, gs.Constant)}
    inits += [onnx.numpy_helper.from_array(np.asarray(t.values), name) for name, t in constants.items()]
    for node in ops:
        nodes.append(onnx.helper.make_node(node.op, [t.name for t in node.inputs], [t.name for t in node.outputs], **node.attrs))
    graph = onnx.helper.make_graph(nodes, "shape_arithmetic", [], [onnx.helper.make_empty_tensor_value_info(n) for n in wanted], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(wanted, {})]


def _reshape_target(runs: list[np.ndarray], data: gs.Tensor, allowzero: int, values: list[dict[str, int]]) -> np.ndarray | None:
    """A Reshape target that is right for every N, from its values under several N; None if there is none."""
    if any(r.shape != runs[0].shape or r.ndim != 1 for r in runs):
        return None
    varies = [i for i in range(runs[0].size) if len({int(r[i]) for r in runs}) > 1]
    if len(varies) != 1:
        return None
    i, target = varies[0], runs[0].copy()
    dims = _dims(data) or []
    if not allowzero and i < len(dims) and isinstance(dims[i], str) and all(int(r[i]) == v.get(dims[i]) for r, v in zip(runs, values)):
        target[i] = 0    # the input's own symbolic dim, copied
    elif -1 not in np.delete(target, i):
        target[i] = -1   # the one dim left to infer
    else:
        return None
    return target


def run(ctx: Context) -> None:
    graph = ctx.graph
    roots, ops = _closure(graph)
    if not roots:
        return
    inside = {t.name for n in roots + ops for t in n.outputs}
    members = {id(n) for n in roots + ops}
    readers: dict[str, list[gs.Node]] = {}  # integer tensor -> the nodes outside the subgraph that read it
    tensors = {}
    for node in graph.nodes:
        if id(node) not in members:
            for t in node.inputs:
                if t.name in inside:
                    readers.setdefault(t.name, []).append(node)
                    tensors[t.name] = t
    symbols = sorted({d for n in roots for d in _dims(n.inputs[0]) if isinstance(d, str)})
    if not readers or len(symbols) > len(SYMBOL_VALUES[0]):
        return
    values = [dict(zip(symbols, v)) for v in SYMBOL_VALUES]
    wanted = sorted(readers)
    try:
        runs = [_evaluate(roots, ops, wanted, v, graph.opset) for v in values]
    except Exception:  # an op the reference evaluator rejects here: the runtime evaluates the subgraph instead
        return
    outputs = {t.name for t in graph.outputs}
    for k, name in enumerate(wanted):
        results = [r[k] for r in runs]
        if all(v.shape == results[0].shape and np.array_equal(v, results[0]) for v in results):
            if name not in outputs:  # an integer graph output keeps its producer: its name is the interface
                constant = gs.Constant(f"{name}_folded", results[0])
                for reader in readers[name]:
                    for i, t in enumerate(reader.inputs):
                        if t is tensors[name]:
                            reader.inputs[i] = constant
            continue
        for reader in readers[name]:
            if reader.op == "Reshape" and reader.inputs[1] is tensors[name] and reader.inputs[0] is not tensors[name]:
                target = _reshape_target(results, reader.inputs[0], int(reader.attrs.get("allowzero", 0)), values)
                if target is not None:
                    reader.inputs[1] = gs.Constant(f"{reader.name}_shape", target.astype(np.int64))
    finish(graph)
    remaining = {n.name for n in graph.nodes}
    for node in roots + ops:
        if node.name not in remaining:
            ctx.report.set_action(node.name, FOLDED)
