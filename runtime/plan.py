"""Compile a validated SNN graph once into an execution plan: nodes resolved, attributes and weights as arrays.

Engines then run a short loop over ``Plan.steps``; nothing in the plan changes while running.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import Onnx2SnnError, SNNFormatError
from .format import DOMAIN, MAXPOOL_OP, NEURON_OP, NeuronParams, neuron_params, readout_start_of, timesteps_of
from .reference_ops import OPS

# Ops that only move or copy values: a spike passes through them unchanged, so SynOps look through them.
PASS_THROUGH = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Pad", "Identity", "Gather"})
_ONNX_TO_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
                  onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32}


@dataclass(frozen=True)
class Step:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict
    neuron: NeuronParams | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints for fixed dims, strings (or None) for symbolic ones
    dtype: type


@dataclass
class Plan:
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    constants: dict[str, np.ndarray]
    steps: list[Step]
    timesteps: int | None
    consumers: dict[str, list[Step]] = field(default_factory=dict)
    last_use: dict[str, int] = field(default_factory=dict)  # value -> index of the last step reading it
    index: dict[str, int] = field(default_factory=dict)  # step name -> its index in ``steps``
    readout_start: int = 0  # the readout skips steps 1..readout_start (delayed readout, runtime/readout.py)

    @property
    def neurons(self) -> list[Step]:
        return [s for s in self.steps if s.neuron is not None]


class StepError(ValueError):
    """A step whose op failed on the values it was given; the message names the node."""


@contextmanager
def evaluating(step: Step):
    """Name the node in a ValueError/IndexError its evaluation raises (a graph that passed validation but
    contradicts itself); the session turns it into an SNNFormatError, the converter's dry run into a refusal."""
    try:
        yield
    except (Onnx2SnnError, StepError):
        raise
    except (ValueError, IndexError) as exc:
        raise StepError(f"node '{step.name}' ({step.op}): {exc}") from exc


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        out[a.name] = value
    return out


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attrs = _attrs(node)
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise SNNFormatError(f"Constant node '{node.name}' has no supported value attribute (value, value_float(s), value_int(s))")


def _info(vi: onnx.ValueInfoProto) -> TensorInfo:
    t = vi.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
    return TensorInfo(vi.name, dims, _ONNX_TO_NUMPY.get(t.elem_type, np.float32))


def compile_plan(model: onnx.ModelProto) -> Plan:
    """Resolve every node of a validated SNN model; refuse ops the runtime cannot execute."""
    graph = model.graph
    constants = {}
    for init in graph.initializer:
        try:
            constants[init.name] = numpy_helper.to_array(init)
        except Exception as exc:
            raise SNNFormatError(f"initializer '{init.name}' cannot be read ({type(exc).__name__}: {exc})") from None
    steps: list[Step] = []
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if name in seen:  # node names are optional and need not be unique in ONNX; ours must be
            name = f"{name}#{i}"
        seen.add(name)
        if node.domain == DOMAIN and node.op_type == NEURON_OP:
            steps.append(Step(name, NEURON_OP, tuple(node.input), tuple(node.output), {}, neuron_params(node)))
        elif node.domain == DOMAIN and node.op_type == MAXPOOL_OP:
            steps.append(Step(name, MAXPOOL_OP, tuple(node.input), tuple(node.output), _attrs(node)))
        elif node.domain not in ("", "ai.onnx"):
            raise SNNFormatError(f"node '{name}': op {node.domain}.{node.op_type} is not supported by the runtime")
        elif node.op_type == "Constant":
            constants[node.output[0]] = _constant_value(node)
        elif node.op_type in OPS:
            steps.append(Step(name, node.op_type, tuple(node.input), tuple(node.output), _attrs(node)))
        else:
            raise SNNFormatError(f"node '{name}': op {node.op_type} is not supported by the runtime; supported: {', '.join(sorted(OPS))}, {DOMAIN}.{NEURON_OP}")
    initializer_names = {init.name for init in graph.initializer}
    inputs = [_info(vi) for vi in graph.input if vi.name not in initializer_names]
    consumers: dict[str, list[Step]] = {}
    last_use: dict[str, int] = {}
    for index, s in enumerate(steps):
        for name in s.inputs:
            consumers.setdefault(name, []).append(s)
            last_use[name] = index
    outputs = [_info(vi) for vi in graph.output]
    for o in outputs:
        last_use.pop(o.name, None)
    for name in constants:
        last_use.pop(name, None)
    return Plan(inputs, outputs, constants, steps, timesteps_of(model), consumers, last_use,
                {s.name: i for i, s in enumerate(steps)}, readout_start_of(model))
