"""Export an SNN file (``*.snn.onnx``) to NIR, the Neuromorphic Intermediate Representation (``pip install nir``).

What maps exactly: Gemm/MatMul(+Add constant) -> Affine/Linear, Conv (1-D, 2-D) -> Conv1d/Conv2d, AveragePool and
GlobalAveragePool (2-D) -> AvgPool2d, Flatten (and a Reshape that flattens) -> Flatten, Add of two branches ->
two edges into one node (NIR sums a node's inputs), graph inputs/outputs -> Input/Output, and each
onnx2snn.IFNeuron -> IF (r = 1, v_threshold = V_th) followed by a Scale(V_th) node (our spikes are V_th high,
NIR's are 1) that is folded into the next affine or conv layer's weights where that layer is its only consumer.
The neuron's per-step ``shift`` becomes part of the bias of the affine/conv layer feeding it, when one such layer
feeds only that neuron; otherwise the export is refused.

What NIR cannot express is listed in :data:`LOSSES`: the export either refuses (``NirExportError``, naming node
and op) or records a warning, which ``onnx2snn export-nir`` prints and which is stored in the NIR graph's
metadata (``onnx2snn.warning.<i>``). Nothing changes silently. NIR is an optional extra: this module is only
imported by the ``export-nir`` command and by callers who ask for it.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from runtime import format as fmt

from .errors import ConversionError, InputError

# What NIR (checked against nir 1.0.8) cannot say about our SNN, and what the exporter does about it.
LOSSES = {
    "reset": "NIR's IF resets to v_reset (we write 0) after a spike; our default 'subtract' (soft) reset keeps the "
             "excess V_th above threshold. Files with reset 'subtract' export with a warning; 'zero' is exact.",
    "threshold": "NIR's IF fires when v > v_threshold, ours when v >= v_th: the two differ only when the membrane "
                 "lands exactly on the threshold (always warned).",
    "v_init": "NIR has no initial membrane potential: a non-zero v_init (the 'optimal' method's default V_th/2) is "
              "dropped with a warning, and is kept in the IF node's metadata (onnx2snn.v_init).",
    "shift": "NIR's IF has no constant input current: the shift is folded into the bias of the affine/conv layer "
             "that alone feeds the neuron (exact); where no such layer exists the export is refused.",
    "spike amplitude": "NIR spikes are 1, ours are V_th: an exact Scale(V_th) node follows each IF and is folded "
                       "into the next affine/conv layer's weights where possible (exact either way).",
    "max pooling": "NIR has no max pooling: onnx2snn.SpikeMaxPool (gated) and MaxPool are refused.",
    "concat": "NIR has no concatenation: Concat is refused (as is every op not listed as mapped).",
    "input encoding": "NIR has no input encoding: our 'analog' encoding applies the input as the same current at "
                      "every step; a NIR consumer must feed x at each of the T steps (always warned).",
    "readout": "NIR has no readout: our outputs are the mean over T steps of the Output's value (rate readout); "
               "a NIR consumer must average the per-step outputs itself (always warned); a delayed readout "
               "(onnx2snn.readout_start: average only the steps after it) is recorded in the graph metadata.",
    "timesteps": "NIR has no number of steps: T (and the shift, which was chosen for it) is recorded in the graph "
                 "metadata as onnx2snn.timesteps.",
}


class NirExportError(ConversionError):
    """The SNN uses something NIR cannot express; names the node and op."""


@dataclass
class NirExport:
    """A NIR graph with the warnings of what it does not carry over (also in ``graph.metadata``)."""

    graph: object  # nir.NIRGraph
    warnings: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> None:
        """Write the graph as NIR's HDF5 file, atomically (written in memory, then renamed into place)."""
        import nir

        from .writer import write_bytes_atomic
        buffer = io.BytesIO()
        nir.write(buffer, self.graph)
        write_bytes_atomic(path, buffer.getvalue())


_MAPPED = ("Gemm", "MatMul", "Add", "Conv", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
           f"{fmt.DOMAIN}.{fmt.NEURON_OP}")
_SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Constant", "ConstantOfShape", "Slice", "Mul", "Div"}


def export_nir(snn: str | os.PathLike | bytes | onnx.ModelProto, strict: bool = False) -> NirExport:
    """Map an SNN file to a ``nir.NIRGraph``. ``strict=True`` refuses instead of warning."""
    try:
        import nir
    except ImportError:
        raise InputError("NIR export needs the 'nir' package: pip install 'onnx2snn[nir]' (or pip install nir)") from None
    model = onnx.shape_inference.infer_shapes(fmt.load_snn(snn))
    builder = _Builder(model, nir)
    builder.build()
    builder.fold_scales()
    builder.fold_shifts()
    warnings = builder.warnings
    if strict and warnings:
        raise NirExportError(f"--strict: {warnings[0]}" + (f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""))
    meta = {f"onnx2snn.warning.{i}": w for i, w in enumerate(warnings)}
    meta["onnx2snn.timesteps"] = str(fmt.timesteps_of(model) or "")
    meta["onnx2snn.threshold_method"] = fmt.metadata(model).get(fmt.META_THRESHOLD_METHOD, "")
    meta[fmt.META_READOUT_START] = str(fmt.readout_start_of(model))
    graph = nir.NIRGraph(nodes=builder.nodes, edges=builder.sorted_edges(), metadata=meta)
    return NirExport(graph, warnings)


class _Builder:
    """Walks the (topologically sorted) ONNX graph once; each tensor maps to the NIR nodes whose outputs sum to it."""

    def __init__(self, model: onnx.ModelProto, nir):
        self.nir, self.model = nir, model
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.shapes = {vi.name: _dims(vi) for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
        self.sources: dict[str, list[str]] = {}
        self.shape_tensors: set[str] = set()
        self.consumers = Counter(i for n in model.graph.node for i in n.input)
        self.shifts: dict[str, tuple[str, np.ndarray]] = {}   # IF name -> (onnx node name, shift per element)

    # ---- graph walk -------------------------------------------------------------------------------------------
    def build(self) -> None:
        g = self.model.graph
        for vi in g.input:
            if vi.name in self.consts:
                continue
            name = self._unique("input" if len(g.input) == 1 else f"input_{vi.name}")
            self.nodes[name] = self.nir.Input(input_type={"input": np.array(self._shape(vi.name, vi.name, "input"))})
            self.sources[vi.name] = [name]
        for node in g.node:
            self._node(node)
        for vi in g.output:
            name = self._unique("output" if len(g.output) == 1 else f"output_{vi.name}")
            self.nodes[name] = self.nir.Output(output_type={"output": np.array(self._shape(vi.name, vi.name, "output"))})
            self._connect(vi.name, name, "output", "Output")
        self.warnings[:0] = [f"input encoding: {LOSSES['input encoding']}", f"readout: {LOSSES['readout']}"]

    def _node(self, node: onnx.NodeProto) -> None:
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        data_inputs = [i for i in node.input if i and i not in self.consts]
        if data_inputs and all(i in self.shape_tensors for i in data_inputs) or op == "Shape" or (not data_inputs and op in _SHAPE_OPS):
            self.shape_tensors.update(node.output)   # batch-size arithmetic feeding a Reshape: not part of the network
            return
        handler = getattr(self, "_op_" + op.replace(".", "_"), None)
        if handler is None:
            why = {"onnx2snn.SpikeMaxPool": LOSSES["max pooling"], "MaxPool": LOSSES["max pooling"], "Concat": LOSSES["concat"]}
            raise NirExportError(f"node '{node.name}' ({op}): {why.get(op, 'NIR has no equivalent')}; "
                                 f"mapped ops: {', '.join(_MAPPED)}")
        handler(node)

    def _op_Gemm(self, node):
        a = _attrs(node)
        w, b = self._const(node, 1, "B"), (self._const(node, 2, "C") if len(node.input) > 2 and node.input[2] else None)
        if a.get("transA", 0):
            self._refuse(node, "transA=1 is not an affine map of the input rows")
        w = a.get("alpha", 1.0) * (w if a.get("transB", 0) else w.T)
        if b is not None:
            b = np.broadcast_to(a.get("beta", 1.0) * b, (w.shape[0],)).astype(np.float32)
        self._add(node, self.nir.Affine(weight=w.astype(np.float32), bias=b) if b is not None else self.nir.Linear(weight=w.astype(np.float32)))

    def _op_MatMul(self, node):
        if node.input[1] not in self.consts or self.consts[node.input[1]].ndim != 2:
            self._refuse(node, "only a product with a constant 2-D right operand maps to Linear")
        self._add(node, self.nir.Linear(weight=self.consts[node.input[1]].T.astype(np.float32)))

    def _op_Add(self, node):
        x, y = node.input
        if x in self.consts or y in self.consts:
            data, const = (y, x) if x in self.consts else (x, y)
            src = self.sources.get(data, [])
            layer = self.nodes.get(src[0]) if len(src) == 1 else None
            if not isinstance(layer, (self.nir.Affine, self.nir.Linear, self.nir.Conv1d, self.nir.Conv2d)) or self.consumers[data] != 1:
                self._refuse(node, "a constant added to anything but the output of an affine/conv layer (NIR has no bias-only node)")
            self._add_bias(src[0], self.consts[const])
            self.sources[node.output[0]] = src
            return
        sources = self._sources(x, node) + self._sources(y, node)
        if len(set(sources)) != len(sources):
            self._refuse(node, "adds a branch to itself (NIR edges cannot be doubled)")
        self.sources[node.output[0]] = sources   # NIR sums the inputs of a node: the Add becomes two edges

    def _op_Conv(self, node):
        a = _attrs(node)
        w = self._const(node, 1, "W").astype(np.float32)
        b = self._const(node, 2, "B").astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0], np.float32)
        rank = w.ndim - 2
        if rank not in (1, 2):
            self._refuse(node, f"{rank}-D convolution (NIR has Conv1d and Conv2d)")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self._refuse(node, "auto_pad (write explicit pads)")
        pads = list(a.get("pads", [0] * 2 * rank))
        if pads[:rank] != pads[rank:]:
            self._refuse(node, f"asymmetric pads {pads} (NIR convolutions pad both sides equally)")
        stride, dilation = list(a.get("strides", [1] * rank)), list(a.get("dilations", [1] * rank))
        in_shape = self._shape(node.input[0], node.name, node.op_type)[1:]
        if rank == 1:
            layer = self.nir.Conv1d(input_shape=int(in_shape[0]), weight=w, stride=stride[0], padding=pads[0],
                                    dilation=dilation[0], groups=int(a.get("group", 1)), bias=b)
        else:
            layer = self.nir.Conv2d(input_shape=tuple(int(d) for d in in_shape), weight=w, stride=tuple(stride),
                                    padding=tuple(pads[:2]), dilation=tuple(dilation), groups=int(a.get("group", 1)), bias=b)
        self._add(node, layer)

    def _op_AveragePool(self, node):
        a = _attrs(node)
        kernel = list(a["kernel_shape"])
        if len(kernel) != 2:
            self._refuse(node, f"{len(kernel)}-D pooling (NIR has AvgPool2d only)")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or a.get("ceil_mode", 0) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self._refuse(node, f"pads {pads}, ceil_mode or auto_pad (NIR pools pad both sides equally, floor mode)")
        if any(pads) and not a.get("count_include_pad", 0):
            self._refuse(node, "padding excluded from the average (count_include_pad=0): NIR's AvgPool2d does not say which")
        self._add(node, self.nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(a.get("strides", kernel)),
                                           padding=np.array(pads[:2])))

    def _op_GlobalAveragePool(self, node):
        shape = self._shape(node.input[0], node.name, node.op_type)
        if len(shape) != 3:
            self._refuse(node, "only 2-D data maps to AvgPool2d")
        self._add(node, self.nir.AvgPool2d(kernel_size=np.array(shape[1:]), stride=np.array(shape[1:]), padding=np.array([0, 0])))

    def _op_Flatten(self, node):
        if _attrs(node).get("axis", 1) != 1:
            self._refuse(node, "Flatten axis other than 1 (the axis after the batch)")
        self._flatten(node)

    def _op_Reshape(self, node):
        before = self._shape(node.input[0], node.name, node.op_type)
        after = self._shape(node.output[0], node.name, node.op_type)
        if list(after) != [int(np.prod(before))]:
            self._refuse(node, f"reshape {before} -> {after} is not a flatten after the batch axis")
        self._flatten(node)

    def _flatten(self, node):
        shape = self._shape(node.input[0], node.name, node.op_type)
        self._add(node, self.nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))

    def _op_onnx2snn_IFNeuron(self, node):
        p = fmt.neuron_params(node)
        if p.signed:
            self._refuse(node, "signed spikes have no NIR primitive (NIR's IF only fires positive spikes); convert with --spikes unsigned")
        if p.burst > 1:
            self._refuse(node, f"burst spikes (burst {p.burst}) have no NIR primitive (NIR's IF fires one spike a step); convert with --burst 1")
        shape = self._shape(node.input[0], node.name, node.op_type)
        v_th, shift, v_init = (_per_element(v, shape) for v in (p.v_th, p.shift, p.v_init))
        meta = {"onnx2snn.node": node.name, "onnx2snn.reset": p.reset}
        if p.reset == "subtract":
            self.warnings.append(f"node '{node.name}' ({fmt.DOMAIN}.{fmt.NEURON_OP}): reset: {LOSSES['reset']}")
        if np.any(v_init != 0):
            meta["onnx2snn.v_init"] = v_init
            self.warnings.append(f"node '{node.name}' ({fmt.DOMAIN}.{fmt.NEURON_OP}): v_init (max {float(v_init.max()):.4g}) dropped: {LOSSES['v_init']}")
        neuron = self.nir.IF(r=np.ones(shape, np.float32), v_threshold=v_th, v_reset=np.zeros(shape, np.float32), metadata=meta)
        name = self._add(node, neuron)
        if np.any(shift != 0):
            self.shifts[name] = (node.name, shift)
        scale = self._unique(name + ".scale")
        self.nodes[scale] = self.nir.Scale(scale=v_th.copy())
        self.edges.append((name, scale))
        self.sources[node.output[0]] = [scale]
        if not any("threshold:" in w for w in self.warnings):
            self.warnings.append(f"threshold: {LOSSES['threshold']}")

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _add(self, node: onnx.NodeProto, layer) -> str:
        name = self._unique(node.name or node.output[0])
        self.nodes[name] = layer
        self._connect(node.input[0], name, node.name, node.op_type)
        self.sources[node.output[0]] = [name]
        return name

    def _connect(self, tensor: str, name: str, node_name: str, op: str) -> None:
        for src in self._sources(tensor, None, node_name, op):
            self.edges.append((src, name))

    def _sources(self, tensor: str, node, node_name: str = "", op: str = "") -> list[str]:
        if tensor not in self.sources:
            node_name, op = (node.name, node.op_type) if node is not None else (node_name, op)
            raise NirExportError(f"node '{node_name}' ({op}): input '{tensor}' is a constant or comes from an op NIR cannot express")
        return self.sources[tensor]

    def _add_bias(self, name: str, value: np.ndarray) -> None:
        layer = self.nodes[name]
        if isinstance(layer, self.nir.Linear):
            layer = self.nodes[name] = self.nir.Affine(weight=layer.weight, bias=np.zeros(layer.weight.shape[0], np.float32))
        out = _out_shape(layer)
        total = np.broadcast_to(np.asarray(value, np.float32), (1, *out))[0]   # ONNX broadcasting against (N, ...)
        if isinstance(layer, (self.nir.Conv1d, self.nir.Conv2d)):
            per_channel = total.reshape(total.shape[0], -1)
            if not np.all(per_channel == per_channel[:, :1]):
                raise NirExportError(f"layer '{name}': a bias that varies over positions cannot be a conv bias")
            total = per_channel[:, 0]
        layer.bias = (layer.bias + total).astype(np.float32)

    def _const(self, node, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or node.input[index] not in self.consts:
            self._refuse(node, f"operand {what} must be a constant")
        return self.consts[node.input[index]]

    def _shape(self, tensor: str, node_name: str, op: str) -> list[int]:
        dims = self.shapes.get(tensor)
        if dims is None or any(not isinstance(d, int) for d in dims[1:]):
            raise NirExportError(f"node '{node_name}' ({op}): the shape of '{tensor}' is not known after the batch axis ({dims}); NIR needs static shapes")
        return [int(d) for d in dims[1:]]

    def _unique(self, name: str) -> str:
        name = name.strip("/").replace("/", ".") or "node"
        base, i = name, 1
        while name in self.nodes:
            name, i = f"{base}_{i}", i + 1
        return name

    def _refuse(self, node, why: str):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        raise NirExportError(f"node '{node.name}' ({op}): {why}")

    def sorted_edges(self) -> list[tuple[str, str]]:
        """Edges in the order of a topological sort of their sources (some readers take list order as data flow)."""
        rank = {}
        pending = list(self.nodes)
        while pending:
            ready = [n for n in pending if all(p in rank for p in self._pred(n))]
            if not ready:
                raise NirExportError("internal: the NIR graph has a cycle")
            for n in ready:
                rank[n] = len(rank)
            pending = [n for n in pending if n not in rank]
        return sorted(self.edges, key=lambda e: (rank[e[0]], rank[e[1]]))

    # ---- exact rewrites after the walk ------------------------------------------------------------------------
    def _succ(self, name):
        return [b for a, b in self.edges if a == name]

    def _pred(self, name):
        return [a for a, b in self.edges if b == name]

    def fold_scales(self) -> None:
        """Move each spike-amplitude Scale down through Flatten/AvgPool2d and into the one affine/conv layer it
        feeds (weights of that input multiplied by V_th). A Scale that cannot be folded stays: it is exact NIR."""
        nir = self.nir
        for name in [n for n, v in self.nodes.items() if isinstance(v, nir.Scale)]:
            while True:
                succ = self._succ(name)
                if len(succ) != 1 or len(self._pred(succ[0])) != 1:
                    break
                nxt, scale = self.nodes[succ[0]], self.nodes[name].scale
                if isinstance(nxt, (nir.Flatten, nir.AvgPool2d)):
                    if isinstance(nxt, nir.Flatten):
                        new = scale.reshape(-1)
                    else:
                        flat = scale.reshape(scale.shape[0], -1)
                        if not np.all(flat == flat[:, :1]):
                            break
                        new = None   # per channel: the pooled shape is set below
                    pred, after = self._pred(name), self._succ(succ[0])
                    self.edges = [e for e in self.edges if name not in e and e[0] != succ[0]]
                    self.edges += [(p, succ[0]) for p in pred] + [(succ[0], name)] + [(name, b) for b in after]
                    if new is None:
                        out = _pool_out(nxt, scale.shape)
                        new = np.broadcast_to(scale.reshape(scale.shape[0], -1)[:, :1].reshape((-1,) + (1,) * (len(out) - 1)), out).copy()
                    self.nodes[name] = nir.Scale(scale=new.astype(np.float32))
                    continue
                if isinstance(nxt, (nir.Affine, nir.Linear)) and scale.ndim == 1:
                    nxt.weight = (nxt.weight * scale[None, :]).astype(np.float32)
                elif isinstance(nxt, (nir.Conv1d, nir.Conv2d)):
                    flat = scale.reshape(scale.shape[0], -1)
                    if not np.all(flat == flat[:, :1]):
                        break
                    nxt.weight = _scale_conv_inputs(nxt.weight, flat[:, 0], nxt.groups)
                else:
                    break
                pred = self._pred(name)
                self.edges = [e for e in self.edges if name not in e] + [(p, succ[0]) for p in pred]
                del self.nodes[name]
                break

    def fold_shifts(self) -> None:
        """Fold each neuron's shift into the bias of an affine/conv layer that feeds it and nothing else."""
        nir = self.nir
        for name, (onnx_name, shift) in self.shifts.items():
            layers = [p for p in self._pred(name) if isinstance(self.nodes[p], (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d))
                      and self._succ(p) == [name]]
            if not layers:
                raise NirExportError(f"node '{onnx_name}' ({fmt.DOMAIN}.{fmt.NEURON_OP}): its shift (a constant current each step) "
                                     "cannot be folded: no affine/conv layer feeds this neuron alone, and NIR's IF has no bias")
            self._add_bias(layers[0], shift)


def _scale_conv_inputs(weight: np.ndarray, scale: np.ndarray, groups: int) -> np.ndarray:
    """Multiply each input channel's weights by its scale, group by group."""
    c_out, c_in_g = weight.shape[:2]
    out = weight.astype(np.float32).copy()
    for o in range(c_out):
        g = o // (c_out // groups)
        out[o] *= scale[g * c_in_g:(g + 1) * c_in_g].reshape((-1,) + (1,) * (weight.ndim - 2))
    return out


def _pool_out(pool, in_shape) -> tuple:
    k, s, p = (np.asarray(v).reshape(-1) for v in (pool.kernel_size, pool.stride, pool.padding))
    return (in_shape[0], *[(in_shape[1 + i] + 2 * int(p[i % p.size]) - int(k[i % k.size])) // int(s[i % s.size]) + 1 for i in range(len(in_shape) - 1)])


def _out_shape(layer) -> tuple:
    out = layer.output_type["output"]
    return tuple(int(d) for d in out)


def _per_element(values: np.ndarray, shape: list[int]) -> np.ndarray:
    """A layer-wide (1,) or per-channel (C,) parameter as a float32 array of the neuron shape (C, ...)."""
    values = np.asarray(values, np.float32)
    if values.size == 1:
        return np.full(shape, values.reshape(-1)[0], np.float32)
    return np.broadcast_to(values.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(np.float32)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
