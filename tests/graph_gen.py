"""Random but valid CNN/MLP graphs in the idioms of real exporters, for differential testing (tests/test_invariant.py
and benchmarks/fuzz.py). A seed reproduces a graph.

Families, each with its exporter's opsets and habits:
- ``torch_legacy`` (opsets 9-17): Conv with bias, or without bias then BatchNormalization; Relu or ReLU6 as Clip
  (attributes before opset 11, inputs after); Constant nodes; ``x.view(x.size(0), -1)`` as Shape -> Gather ->
  Unsqueeze -> Concat -> Reshape, or Flatten; Gemm heads with and without bias; Dropout/Identity left in; batch-1
  exports with the batch written into a Reshape.
- ``torch_dynamo`` (opsets 18-21): Sub/Div input normalisation, Conv without bias + BatchNormalization, ReduceMean
  with an axes input as adaptive average pooling, MatMul + Add linear layers, shape subgraphs, Identity nodes.
- ``tf2onnx`` (opsets 13-18): NHWC input and Transpose, explicit Pad nodes or auto_pad SAME_UPPER, Relu6 as
  Clip, ReduceMean over the spatial axes as global pooling, NHWC Transpose + Reshape flattening, MatMul + Add
  heads, a Softmax output, ``unk__`` batch symbols.
- ``skl2onnx`` (opsets 9-21 + ai.onnx.ml): an MLP on a batch dim with no name, Cast of the input, MatMul + Add +
  Relu layers, Softmax, a label output (ArgMax -> ArrayFeatureExtractor -> Reshape -> Cast) and a ZipMap (or a
  plain probabilities output).
Bodies mix plain, strided, dilated, depthwise and grouped convolutions, max and average pooling, residual Adds
(identity and projection shortcuts) and Concat branches. About one graph in seven carries an op with no
rate-coded equivalent (a Sigmoid, Tanh, LeakyRelu or HardSwish activation, a squeeze-and-excitation Mul of two
activations, a Softmax inside the network); ``Case.refuse`` names that node: the converter must refuse it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

FAMILIES = ("torch_legacy", "torch_dynamo", "tf2onnx", "skl2onnx")
OPSETS = {"torch_legacy": (9, 17), "torch_dynamo": (18, 21), "tf2onnx": (13, 18), "skl2onnx": (9, 21)}
UNSUPPORTED_ACTIVATIONS = ("Sigmoid", "Tanh", "LeakyRelu", "HardSwish")
CALIBRATION_SAMPLES = 24


@dataclass
class Case:
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]   # calibration samples (N, ...) for every input
    family: str
    opset: int
    idioms: list[str] = field(default_factory=list)   # what the graph contains, for reports
    refuse: str | None = None      # the node the converter must refuse, if any


class Builder:
    """Nodes and initializers for one graph, written the way the chosen opset spells each op."""

    def __init__(self, rng: np.random.Generator, opset: int, constant_nodes: bool = False):
        self.rng, self.opset, self.constant_nodes = rng, opset, constant_nodes
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.idioms: list[str] = []
        self.refuse: str | None = None

    def name(self, op: str) -> str:
        self.count += 1
        return f"/{op.lower()}_{self.count}/{op}"

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        name = self.name(op)
        out = f"{name}_output_0"
        self.nodes.append(h.make_node(op, inputs, [out], name=name, domain=domain, **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        """A constant: an initializer, or a Constant node as the legacy torch exporter writes them."""
        value = np.asarray(value, dtype)
        if self.constant_nodes and self.rng.random() < 0.5:
            name = self.name("Constant")
            out = f"{name}_output_0"
            self.nodes.append(h.make_node("Constant", [], [out], name=name, value=nh.from_array(value)))
            return out
        name = f"c{len(self.inits)}"
        self.inits.append(nh.from_array(value, name))
        return name

    def weight(self, shape: tuple, fan_in: int) -> str:
        return self.const(self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))

    def bias(self, n: int) -> str:
        return self.const(self.rng.standard_normal(n) * 0.1)

    def axes_op(self, op: str, x: str, axes: list[int], since: int, **attrs) -> str:
        """Unsqueeze/Squeeze/ReduceMean: axes as an attribute before opset ``since``, as an input from it on."""
        if self.opset < since:
            return self.node(op, [x], axes=axes, **attrs)
        return self.node(op, [x, self.const(axes, np.int64)], **attrs)

    def clip(self, x: str, low: float, high: float) -> str:
        if self.opset < 11:
            return self.node("Clip", [x], min=low, max=high)
        return self.node("Clip", [x, self.const(low), self.const(high)])

    def pad(self, x: str, pads: list[int]) -> str:
        if self.opset < 11:
            return self.node("Pad", [x], pads=pads, mode="constant")
        return self.node("Pad", [x, self.const(pads, np.int64)], mode="constant")

    def activation(self, x: str, relu6: bool = False) -> str:
        """Relu (or ReLU6 as Clip); rarely an activation with no rate-coded equivalent, to be refused."""
        if self.refuse is None and self.rng.random() < 0.04:
            op = str(self.rng.choice(UNSUPPORTED_ACTIVATIONS))
            if op == "HardSwish" and self.opset < 14:
                op = "Sigmoid"
            out = self.node(op, [x], **({"alpha": 0.1} if op == "LeakyRelu" else {}))
            self.refuse = self.nodes[-1].name
            self.idioms.append(f"unsupported {op}")
            return out
        if relu6 or self.rng.random() < 0.15:
            self.idioms.append("ReLU6 as Clip")
            return self.clip(x, 0.0, 6.0)
        return self.node("Relu", [x])

    def batch_norm(self, x: str, c: int) -> str:
        rng = self.rng
        params = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1, rng.standard_normal(c) * 0.1, rng.uniform(0.5, 2.0, c)]
        return self.node("BatchNormalization", [x] + [self.const(p) for p in params], epsilon=1e-5)

    def flatten_by_shape(self, x: str) -> str:
        """``x.view(x.size(0), -1)``: Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))."""
        self.idioms.append("view(size(0), -1) shape subgraph")
        batch = self.node("Gather", [self.node("Shape", [x]), self.const(0, np.int64)], axis=0)
        target = self.node("Concat", [self.axes_op("Unsqueeze", batch, [0], 13), self.const([-1], np.int64)], axis=0)
        return self.node("Reshape", [x, target])

    def linear(self, x: str, n_in: int, n_out: int, style: str) -> str:
        """A fully connected layer: Gemm (transB, with or without C), or MatMul + Add."""
        if style == "matmul":
            self.idioms.append("MatMul + Add")
            return self.node("Add", [self.node("MatMul", [x, self.weight((n_in, n_out), n_in)]), self.bias(n_out)])
        w = self.weight((n_out, n_in), n_in)
        if self.opset >= 11 and self.rng.random() < 0.3:  # C is optional from opset 11
            self.idioms.append("Gemm without bias")
            return self.node("Gemm", [x, w], transB=1)
        return self.node("Gemm", [x, w, self.bias(n_out)], transB=1)


def _conv_out(size: int, k: int, stride: int, pad_total: int, dilation: int) -> int:
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


class Body:
    """A CNN body on NCHW tensors, tracking channels and spatial size."""

    def __init__(self, b: Builder, x: str, c: int, hw: int, family: str):
        self.b, self.x, self.c, self.hw, self.family = b, x, c, hw, family

    def conv(self, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1, group: int = 1, act: bool = True,
             x: str | None = None, c_in: int | None = None, hw: int | None = None) -> tuple[str, int]:
        b, rng = self.b, self.b.rng
        x, c_in, hw = x or self.x, c_in or self.c, hw or self.hw
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride]}
        if dilation > 1:
            attrs["dilations"] = [dilation, dilation]
            b.idioms.append("dilated Conv")
        if group > 1:
            attrs["group"] = group
            b.idioms.append("depthwise Conv" if group == c_in else "grouped Conv")
        pad = dilation * (k - 1) // 2
        style = rng.choice(["pads", "pad_node", "same_upper"]) if self.family == "tf2onnx" and k > 1 else "pads"
        if style == "pad_node":
            x = b.pad(x, [0, 0, pad, pad, 0, 0, pad, pad])
            b.idioms.append("Pad node")
            out_hw = _conv_out(hw + 2 * pad, k, stride, 0, dilation)
        elif style == "same_upper" and dilation == 1:
            attrs["auto_pad"] = "SAME_UPPER"
            b.idioms.append("auto_pad SAME_UPPER")
            out_hw = -(-hw // stride)
        else:
            attrs["pads"] = [pad] * 4
            out_hw = _conv_out(hw, k, stride, 2 * pad, dilation)
        w = b.weight((c_out, c_in // group, k, k), c_in // group * k * k)
        batch_norm = self.family in ("torch_legacy", "torch_dynamo") and rng.random() < 0.5
        inputs = [x, w] if batch_norm and rng.random() < 0.7 else [x, w, b.bias(c_out)]
        y = b.node("Conv", inputs, **attrs)
        if batch_norm:
            b.idioms.append("Conv without bias + BatchNormalization" if len(inputs) == 2 else "Conv + BatchNormalization")
            y = b.batch_norm(y, c_out)
        return (b.activation(y, relu6=self.family == "tf2onnx" and rng.random() < 0.3) if act else y), out_hw

    def block(self) -> None:
        b, rng = self.b, self.b.rng
        kinds = ["conv", "conv", "strided", "pool", "residual", "concat", "depthwise", "grouped", "dilated"]
        kind = str(rng.choice(kinds))
        if kind in ("strided", "pool") and self.hw < 4:
            kind = "conv"
        if kind == "conv":
            c_out = int(rng.integers(2, 9))
            self.x, self.hw = self.conv(c_out, k=int(rng.choice([1, 3, 3, 5])) if self.hw >= 5 else 1)
            self.c = c_out
        elif kind == "strided":
            c_out = int(rng.integers(2, 9))
            self.x, self.hw = self.conv(c_out, stride=2)
            self.c = c_out
        elif kind == "dilated" and self.hw >= 5:
            self.x, self.hw = self.conv(self.c, dilation=2)
        elif kind == "depthwise":
            mult = int(rng.choice([1, 2]))
            self.x, self.hw = self.conv(self.c * mult, group=self.c)
            self.c *= mult
        elif kind == "grouped" and self.c % 2 == 0:
            c_out = 2 * int(rng.integers(1, 5))
            self.x, self.hw = self.conv(c_out, group=2)
            self.c = c_out
        elif kind == "pool":
            self.pool()
        elif kind == "residual":
            self.residual()
        elif kind == "concat":
            c_left, c_right = int(rng.integers(1, 5)), int(rng.integers(1, 5))
            left, _ = self.conv(c_left, k=1)
            right, _ = self.conv(c_right, k=3)
            self.x, self.c = b.node("Concat", [left, right], axis=1), c_left + c_right
            b.idioms.append("Concat of branches")

    def pool(self) -> None:
        b, rng = self.b, self.b.rng
        style = str(rng.choice(["max2", "max3", "avg2", "avg3"]))
        if style == "max2":
            self.x, self.hw = b.node("MaxPool", [self.x], kernel_shape=[2, 2], strides=[2, 2]), self.hw // 2
        elif style == "max3":
            self.x, self.hw = b.node("MaxPool", [self.x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), (self.hw - 1) // 2 + 1
        elif style == "avg2":
            self.x, self.hw = b.node("AveragePool", [self.x], kernel_shape=[2, 2], strides=[2, 2]), self.hw // 2
        else:
            self.x = b.node("AveragePool", [self.x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                            count_include_pad=int(rng.integers(0, 2)))
        b.idioms.append("MaxPool" if style.startswith("max") else "AveragePool")

    def residual(self) -> None:
        b, rng = self.b, self.b.rng
        stride = 2 if self.hw >= 4 and rng.random() < 0.3 else 1
        c_out = self.c if stride == 1 and rng.random() < 0.7 else int(rng.integers(2, 9))
        mid, hw = self.conv(c_out, stride=stride)
        branch, _ = self.conv(c_out, x=mid, c_in=c_out, hw=hw, act=False)
        if stride == 1 and c_out == self.c:
            shortcut = self.x
            b.idioms.append("residual Add")
        else:
            shortcut, _ = self.conv(c_out, k=1, stride=stride, act=False)
            b.idioms.append("residual Add with projection")
        if b.refuse is None and rng.random() < 0.05:   # squeeze-and-excitation: a Mul of two activations
            gate = b.node("Sigmoid", [b.axes_op("ReduceMean", branch, [2, 3], 18, keepdims=1)])
            branch = b.node("Mul", [branch, gate])
            b.refuse = next(n.name for n in b.nodes if n.output[0] == gate)
            b.idioms.append("unsupported squeeze-and-excitation")
        self.x, self.c, self.hw = b.activation(b.node("Add", [shortcut, branch])), c_out, hw

    def global_pool(self, style: str) -> str:
        """(N, C) features from (N, C, H, W)."""
        b = self.b
        if style == "gap":
            pooled = b.node("GlobalAveragePool", [self.x])
        else:
            pooled = b.axes_op("ReduceMean", self.x, [2, 3], 18, keepdims=1 if style == "mean_keep" else 0)
            b.idioms.append("ReduceMean as global pooling")
            if style == "mean_flat":
                return pooled
        return b.flatten_by_shape(pooled) if b.rng.random() < 0.4 else b.node("Flatten", [pooled], axis=1)


def _cnn(rng: np.random.Generator, family: str, opset: int) -> tuple[Builder, list, list, dict]:
    b = Builder(rng, opset, constant_nodes=family == "torch_legacy")
    c, hw = int(rng.integers(1, 4)), int(rng.integers(6, 13))
    fixed_batch = family in ("torch_legacy", "tf2onnx") and rng.random() < 0.15
    n = 1 if fixed_batch else CALIBRATION_SAMPLES
    batch = 1 if fixed_batch else ("unk__0" if family == "tf2onnx" else "N")
    images = rng.random((n, c, hw, hw)).astype(np.float32)
    if family == "tf2onnx":
        inputs = [("input_1", [batch, hw, hw, c])]
        feeds = {"input_1": images.transpose(0, 2, 3, 1).copy()}
        x = b.node("Transpose", ["input_1"], perm=[0, 3, 1, 2])
        b.idioms.append("NHWC input + Transpose")
    else:
        inputs = [("input", [batch, c, hw, hw])]
        feeds = {"input": images}
        x = "input"
        if family == "torch_dynamo" or rng.random() < 0.2:
            x = b.node("Div", [b.node("Sub", [x, b.const(rng.uniform(0.3, 0.6, (1, c, 1, 1)))]), b.const(rng.uniform(0.2, 0.4, (1, c, 1, 1)))])
            b.idioms.append("Sub/Div normalisation")
    body = Body(b, x, c, hw, family)
    body.c = int(rng.integers(3, 9))
    body.x, body.hw = body.conv(body.c, c_in=c, k=3)
    for _ in range(int(rng.integers(1, 5))):
        body.block()
    if family == "torch_legacy" and b.rng.random() < 0.2:
        body.x = b.node(str(rng.choice(["Dropout", "Identity"])), [body.x])
        b.idioms.append("Dropout/Identity")
    n_classes = int(rng.integers(2, 7))
    if family == "tf2onnx":
        if rng.random() < 0.5:
            features, width = body.global_pool("mean_flat"), body.c
        else:
            nhwc = b.node("Transpose", [body.x], perm=[0, 2, 3, 1])
            features, width = b.node("Reshape", [nhwc, b.const([-1, body.hw * body.hw * body.c], np.int64)]), body.hw * body.hw * body.c
            b.idioms.append("NHWC Transpose + Reshape flatten")
        logits = b.linear(features, width, n_classes, "matmul")
        logits = b.node("Softmax", [logits], axis=-1 if opset >= 13 else 1)
        b.idioms.append("Softmax output")
        return b, inputs, [logits], feeds
    style = "matmul" if family == "torch_dynamo" and rng.random() < 0.5 else "gemm"
    if rng.random() < 0.5:
        features, width = body.global_pool(str(rng.choice(["gap", "mean_keep"]))), body.c
    else:
        if fixed_batch:
            features = b.node("Reshape", [body.x, b.const([1, -1], np.int64)])
            b.idioms.append("batch-1 Reshape")
        elif family == "torch_dynamo" or rng.random() < 0.4:
            features = b.flatten_by_shape(body.x)
        else:
            features = b.node("Flatten", [body.x], axis=1)
        width = body.c * body.hw * body.hw
    if rng.random() < 0.4:
        hidden = int(rng.integers(4, 17))
        features = b.activation(b.linear(features, width, hidden, style))
        if family == "torch_dynamo" and rng.random() < 0.5:
            features = b.node("Identity", [features])
        width = hidden
    if b.refuse is None and rng.random() < 0.03:
        features = b.node("Softmax", [features], axis=1)
        b.refuse = b.nodes[-1].name
        b.idioms.append("unsupported Softmax inside")
    return b, inputs, [b.linear(features, width, n_classes, style)], feeds


def _mlp(rng: np.random.Generator, opset: int) -> tuple[Builder, list, list, dict]:
    """skl2onnx's MLPClassifier(activation="relu")."""
    b = Builder(rng, opset)
    n_features, n_classes = int(rng.integers(4, 33)), int(rng.integers(2, 8))
    feeds = {"X": rng.random((CALIBRATION_SAMPLES, n_features)).astype(np.float32)}
    x, width = b.node("Cast", ["X"], to=TP.FLOAT), n_features
    for _ in range(int(rng.integers(1, 4))):
        hidden = int(rng.integers(4, 33))
        x, width = b.activation(b.linear(x, width, hidden, "matmul")), hidden
    scores = b.node("Softmax", [b.linear(x, width, n_classes, "matmul")], axis=1 if opset < 13 else -1)
    label = b.node("ArrayFeatureExtractor", [b.const(np.arange(n_classes), np.int64), b.node("ArgMax", [scores], axis=1)], domain="ai.onnx.ml")
    label = b.node("Cast", [b.node("Reshape", [label, b.const([-1], np.int64)])], to=TP.INT64)
    b.idioms.append("label output (ArgMax -> ArrayFeatureExtractor)")
    if rng.random() < 0.7:
        probabilities = b.node("ZipMap", [scores], domain="ai.onnx.ml", classlabels_int64s=list(range(n_classes)))
        b.idioms.append("ZipMap output")
    else:
        probabilities = b.node("Identity", [scores])
    return b, [("X", [None, n_features])], [label, probabilities], feeds


def generate(seed: int) -> Case:
    """The graph of this seed: its family, opset and body drawn from a NumPy generator."""
    rng = np.random.default_rng(seed)
    family = FAMILIES[seed % len(FAMILIES)]
    opset = int(rng.integers(OPSETS[family][0], OPSETS[family][1] + 1))
    b, inputs, outputs, feeds = _mlp(rng, opset) if family == "skl2onnx" else _cnn(rng, family, opset)
    opsets = [h.make_opsetid("", opset)] + ([h.make_opsetid("ai.onnx.ml", 1)] if family == "skl2onnx" else [])
    graph = h.make_graph(b.nodes, f"{family}_{seed}", [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in inputs],
                         [h.make_empty_tensor_value_info(o) for o in outputs], b.inits)
    model = h.make_model(graph, opset_imports=opsets, producer_name=family)
    model.ir_version = h.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.value_info}
    for out in model.graph.output:  # typed outputs, as exporters write them
        out.CopyFrom(inferred[out.name])
    untyped = [o.name for o in model.graph.output if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")]
    if untyped:  # behind a computed Reshape target: the shape a tracing exporter records, batch dim symbolic
        values = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(untyped, feeds)
        batch = inputs[0][1][0]
        for name, value in zip(untyped, values):
            out = next(o for o in model.graph.output if o.name == name)
            out.CopyFrom(h.make_tensor_value_info(name, TP.FLOAT, [batch] + list(value.shape[1:])))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return Case(model, feeds, family, opset, sorted(set(b.idioms)), b.refuse)
