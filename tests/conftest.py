"""Shared fixtures: small ONNX models built with onnx.helper, with random but fixed weights."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh


class GraphBuilder:
    """Build a float32 ONNX graph node by node; weights are initializers with fixed random values."""

    def __init__(self, seed: int = 0, opset: int = 17):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.opset = [], [], opset
        self.count = 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(nh.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        self.count += 1
        outs = [f"{op.lower()}{self.count}_{i}" for i in range(n_out)]
        self.nodes.append(h.make_node(op, inputs, outs, name=f"{op}_{self.count}", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, scale: float | None = None, **attrs) -> str:
        group = attrs.get("group", 1)
        scale = scale if scale is not None else 1.5 / np.sqrt(c_in // group * k * k)
        w = self.const((self.rng.standard_normal((c_out, c_in // group, k, k)) * scale).astype(np.float32))
        b = self.const((self.rng.standard_normal(c_out) * 0.1).astype(np.float32))
        return self.node("Conv", [x, w, b], kernel_shape=[k, k], **attrs)

    def gemm(self, x: str, n_in: int, n_out: int, scale: float | None = None) -> str:
        scale = scale if scale is not None else 1.5 / np.sqrt(n_in)
        w = self.const((self.rng.standard_normal((n_out, n_in)) * scale).astype(np.float32))
        b = self.const((self.rng.standard_normal(n_out) * 0.1).astype(np.float32))
        return self.node("Gemm", [x, w, b], transB=1)

    def batchnorm(self, x: str, c: int) -> str:
        rng = self.rng
        params = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1, rng.standard_normal(c) * 0.1, rng.uniform(0.5, 2.0, c)]
        names = [self.const(p.astype(np.float32)) for p in params]
        return self.node("BatchNormalization", [x] + names, epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def model(self, inputs: list[tuple[str, list]], outputs: list[str], ir_version: int = 8) -> onnx.ModelProto:
        graph = h.make_graph(self.nodes, "test", [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in inputs],
                             [h.make_tensor_value_info(o, TP.FLOAT, None) for o in outputs], self.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", self.opset)])
        model.ir_version = ir_version
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        return model


def mlp(seed: int = 0) -> onnx.ModelProto:
    """Gemm-Relu-Gemm-Relu-Gemm on 12 features."""
    b = GraphBuilder(seed)
    y = b.gemm(b.relu(b.gemm(b.relu(b.gemm("x", 12, 32)), 32, 24)), 24, 5)
    return b.model([("x", ["N", 12])], [y])


def cnn(seed: int = 0, batchnorm: bool = True) -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-BN-Relu, AvgPool, residual Conv branch + Add + Relu, GlobalAveragePool, Flatten, Gemm."""
    b = GraphBuilder(seed)
    x = b.conv("x", 2, 6, pads=[1, 1, 1, 1])
    x = b.relu(b.batchnorm(x, 6) if batchnorm else x)
    x = b.conv(x, 6, 8, strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.relu(b.batchnorm(x, 8) if batchnorm else x)
    x = b.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    branch = b.relu(b.conv(x, 8, 8, pads=[1, 1, 1, 1]))
    branch = b.conv(branch, 8, 8, pads=[1, 1, 1, 1])
    x = b.relu(b.node("Add", [x, branch]))
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    y = b.gemm(x, 8, 4)
    return b.model([("x", ["N", 2, 12, 12])], [y])


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def mlp_model():
    return mlp()


@pytest.fixture
def cnn_model():
    return cnn()
