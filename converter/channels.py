"""Per-channel neuron parameters in the emitted models.

The writer emits one float per attribute; these helpers then give IFNeurons 1-D tensor attributes where
values differ across channels (the SNN format allows either), and give the threshold-ReLU ANN per-channel
clipping (Clip takes a scalar bound, so such a layer becomes Relu then Min with a (C, 1, ...) constant).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime import format as fmt


def compact(values) -> float | np.ndarray:
    """A float when all channels agree (the common file form), else a float32 (C,) array."""
    arr = np.asarray(values, np.float32).reshape(-1)
    return float(arr[0]) if arr.size == 1 or np.all(arr == arr[0]) else arr


def set_neuron_params(model: onnx.ModelProto, params: dict[str, dict[str, float | np.ndarray]]) -> None:
    """Overwrite v_th/shift/v_init (and signed, burst) of the named IFNeurons; arrays become 1-D tensor attributes."""
    for node in model.graph.node:
        if node.domain != fmt.DOMAIN or node.name not in params:
            continue
        values = params[node.name]
        kept = [a for a in node.attribute if a.name not in values]
        del node.attribute[:]
        node.attribute.extend(kept)
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                node.attribute.append(helper.make_attribute(name, numpy_helper.from_array(value.astype(np.float32), f"{node.name}_{name}")))
            elif isinstance(value, int):  # the integers 'signed' and 'burst'
                node.attribute.append(helper.make_attribute(name, value))
            else:
                node.attribute.append(helper.make_attribute(name, float(value)))


def per_channel_clips(model: onnx.ModelProto, thresholds: dict[str, np.ndarray], ranks: dict[str, int]) -> None:
    """Turn each named Clip(x, 0, v) into Relu(x) then Min(., V_th per channel) with V_th shaped (C, 1, ...)."""
    nodes = []
    for node in model.graph.node:
        v_th = thresholds.get(node.name)
        if node.op_type != "Clip" or v_th is None:
            nodes.append(node)
            continue
        shape = (v_th.size,) + (1,) * max(0, ranks[node.name] - 2)
        const = f"{node.name}_vth_channels"
        model.graph.initializer.append(numpy_helper.from_array(v_th.astype(np.float32).reshape(shape), const))
        hidden = f"{node.output[0]}_relu"
        nodes.append(helper.make_node("Relu", [node.input[0]], [hidden], name=f"{node.name}_relu"))
        nodes.append(helper.make_node("Min", [hidden, const], list(node.output), name=node.name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input} | {o.name for o in model.graph.output}
    unused = [init for init in model.graph.initializer if init.name not in used]  # the replaced Clips' bounds
    for init in unused:  # else onnxruntime warns about each one whenever the file is loaded
        model.graph.initializer.remove(init)
