"""Random small CNN/MLP graphs for property tests and the fuzz script: Conv/Gemm/pool/residual/Concat stacks
with random shapes, attributes and weights, drawn from a NumPy generator (so a seed reproduces a graph)."""
from __future__ import annotations

import numpy as np
import onnx
from conftest import GraphBuilder


def random_graph(seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    b = GraphBuilder(seed)
    channels, size = int(rng.integers(1, 4)), int(rng.integers(5, 11))
    x, c, s = "x", channels, size
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.choice(["conv", "conv_bn", "pool", "maxpool", "residual", "concat", "depthwise"])
        if kind in ("conv", "conv_bn"):
            k = int(rng.choice([1, 3]))
            stride = int(rng.choice([1, 2])) if s >= 6 else 1
            out = int(rng.integers(2, 7))
            x = b.conv(x, c, out, k=k, strides=[stride, stride], pads=[k // 2] * 4)
            if kind == "conv_bn":
                x = b.batchnorm(x, out)
            x, c, s = b.relu(x), out, (s + 2 * (k // 2) - k) // stride + 1
        elif kind in ("pool", "maxpool") and s >= 4:
            op = "AveragePool" if kind == "pool" else "MaxPool"
            x, s = b.node(op, [x], kernel_shape=[2, 2], strides=[2, 2]), s // 2
        elif kind == "residual":
            branch = b.conv(b.relu(b.conv(x, c, c, pads=[1, 1, 1, 1])), c, c, pads=[1, 1, 1, 1])
            x = b.relu(b.node("Add", [x, branch]))
        elif kind == "concat":
            other = b.relu(b.conv(x, c, 2, k=1))
            x, c = b.node("Concat", [x, other], axis=1), c + 2
        elif kind == "depthwise":
            x = b.relu(b.conv(x, c, c, group=c, pads=[1, 1, 1, 1]))
    x = b.node("Flatten", [x], axis=1)
    hidden = int(rng.integers(3, 9))
    y = b.gemm(b.relu(b.gemm(x, c * s * s, hidden)), hidden, int(rng.integers(2, 5)))
    model = b.model([("x", ["N", channels, size, size])], [y])
    feeds = {"x": rng.random((12, channels, size, size)).astype(np.float32)}
    return model, feeds
