"""The SNN graph description (``*.snn.onnx``): one place that declares it, writes its schema, and checks it.

Both sides use this module: the converter writes files with these names and versions, the runtime reads
them. The format may only grow by optional attributes whose defaults :func:`neuron_params` fills in.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import defs, numpy_helper

from . import external
from .errors import SNNFormatError

DOMAIN = "onnx2snn"
DOMAIN_VERSION = 1
FORMAT_VERSION = "1"
NEURON_OP = "IFNeuron"
MAXPOOL_OP = "SpikeMaxPool"
CUSTOM_OPS = (NEURON_OP, MAXPOOL_OP)
RESETS = ("subtract", "zero")
INPUT_ENCODINGS = ("analog",)

META_FORMAT_VERSION = "onnx2snn.format_version"
META_TIMESTEPS = "onnx2snn.timesteps"
META_INPUT_ENCODING = "onnx2snn.input_encoding"
META_THRESHOLD_METHOD = "onnx2snn.threshold_method"
META_SOURCE_SHA256 = "onnx2snn.source_sha256"
META_READOUT_START = "onnx2snn.readout_start"   # optional, default 0: the readout skips steps 1..start (runtime/readout.py)

_DIGITS = re.compile(r"[0-9]+\Z")  # ASCII digits only: str.isdigit also accepts e.g. '²', which int() refuses

# Attributes of IFNeuron with their defaults (None: required).
NEURON_DEFAULTS = {"v_th": None, "shift": 0.0, "v_init": 0.0, "reset": "subtract", "signed": 0, "burst": 1}
MAX_BURST = 64  # the largest burst a file may ask for (a burst is counted in an int32 per neuron and step)

_NEURON_DOC = """Integrate-and-fire neuron with threshold v_th, evaluated once per time step.
Per step: v += x(t) + shift; if v >= v_th: s = v_th and v -= v_th (reset "subtract") or v = 0 (reset "zero");
else s = 0. The membrane starts at v_init. Per-channel values may be 1-D tensors (one value per input channel).
signed = 1 (reset "subtract" only) adds a negative spike: else if v < 0 and the neuron's net spike count
(positive minus negative spikes so far) is > 0: s = -v_th and v += v_th. The net count never drops below 0,
so the rate stays a ReLU's, but a neuron that fired early on a transient takes the excess back.
burst = B > 1 (reset "subtract" only, not with signed) lets a neuron fire up to B spikes in one step: B times,
if v >= v_th: v -= v_th and k += 1; then s = k * v_th (float32). B = 1 is the plain neuron."""


def _register_schema() -> None:
    """Register IFNeuron so onnx's checker and shape inference understand our files."""
    if defs.has(NEURON_OP, DOMAIN):
        return
    S = defs.OpSchema
    schema = S(
        NEURON_OP, DOMAIN, DOMAIN_VERSION, _NEURON_DOC,
        inputs=[S.FormalParameter("x", "T", "synaptic current x(t)")],
        outputs=[S.FormalParameter("s", "T", "spikes s(t), 0 or v_th (or -v_th if signed, k * v_th if burst)")],
        type_constraints=[("T", ["tensor(float)"], "32-bit float currents and spikes")],
        attributes=[
            S.Attribute("v_th", S.AttrType.FLOAT, "firing threshold (> 0); required (checked by the reader)", required=False),
            S.Attribute("shift", S.AttrType.FLOAT, "added to the current every step", required=False),
            S.Attribute("v_init", S.AttrType.FLOAT, "initial membrane potential", required=False),
            S.Attribute("reset", S.AttrType.STRING, "'subtract' or 'zero'", required=False),
            S.Attribute("signed", S.AttrType.INT, "1: negative spikes take back an excess (default 0)", required=False),
            S.Attribute("burst", S.AttrType.INT, "most spikes a neuron fires in one step (default 1)", required=False),
        ],
    )
    schema.set_type_and_shape_inference_function(lambda ctx: ctx.set_output_type(0, ctx.get_input_type(0)))
    defs.register_schema(schema)


_MAXPOOL_DOC = """Max pooling of spikes, gated: each window passes, at every step, the current input of the position
whose running total of inputs over the previous steps is largest (ties: the larger current input, then the
first position in scan order), so the output rate tracks the largest input rate. Attributes as ONNX MaxPool."""


def _register_maxpool_schema() -> None:
    if defs.has(MAXPOOL_OP, DOMAIN):
        return
    S = defs.OpSchema
    ints = S.AttrType.INTS
    schema = S(
        MAXPOOL_OP, DOMAIN, DOMAIN_VERSION, _MAXPOOL_DOC,
        inputs=[S.FormalParameter("x", "T", "inputs of one step (usually spikes)")],
        outputs=[S.FormalParameter("y", "T", "gated inputs")],
        type_constraints=[("T", ["tensor(float)"], "32-bit float")],
        attributes=[
            S.Attribute("kernel_shape", ints, "window size", required=True),
            S.Attribute("strides", ints, "strides (default 1)", required=False),
            S.Attribute("pads", ints, "pads [begin..., end...] (default 0)", required=False),
            S.Attribute("dilations", ints, "dilations (default 1)", required=False),
            S.Attribute("ceil_mode", S.AttrType.INT, "as ONNX MaxPool (default 0)", required=False),
            S.Attribute("auto_pad", S.AttrType.STRING, "as ONNX MaxPool (default NOTSET)", required=False),
        ],
    )
    defs.register_schema(schema)


_register_schema()
_register_maxpool_schema()


@dataclass(frozen=True)
class NeuronParams:
    """IFNeuron parameters as float32 arrays: shape (1,) for a layer-wide value, (C,) per channel."""

    v_th: np.ndarray
    shift: np.ndarray
    v_init: np.ndarray
    reset: str
    signed: bool = False
    burst: int = 1

    def __post_init__(self):
        if self.signed and self.reset != "subtract":  # the kernels implement signed spikes with the soft reset only
            raise SNNFormatError(f"signed spikes need reset 'subtract', got {self.reset!r}")
        if self.burst != 1 and (self.reset != "subtract" or self.signed):
            raise SNNFormatError(f"burst spikes need reset 'subtract' and unsigned neurons, got reset {self.reset!r}, signed {self.signed}")

    @property
    def channels(self) -> int:
        return max(self.v_th.size, self.shift.size, self.v_init.size)

    @functools.cached_property
    def per_channel(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """v_th, shift and v_init as contiguous float32 arrays of one common length (what kernels take), made
        once: a run at batch 1 would otherwise spend a tenth of its time broadcasting them. Kernels only read them."""
        n = self.channels
        return tuple(np.ascontiguousarray(np.broadcast_to(a, (n,)), dtype=np.float32) for a in (self.v_th, self.shift, self.v_init))

    @functools.cached_property
    def thresholds_nonzero(self) -> bool:
        """Whether every threshold is non-zero (then a spike is never a zero, and densities follow from counts)."""
        return bool(np.all(self.v_th != 0))


def _attr_value(node: onnx.NodeProto, attr: onnx.AttributeProto):
    if attr.type == onnx.AttributeProto.FLOAT:
        return np.array([attr.f], dtype=np.float32)
    if attr.type == onnx.AttributeProto.TENSOR:
        try:
            arr = numpy_helper.to_array(attr.t)
        except Exception as exc:  # corrupt or unknown data type: the checker does not look inside our attributes
            raise SNNFormatError(f"neuron '{node.name}': attribute {attr.name} is not a readable tensor ({type(exc).__name__}: {exc})") from None
        if not np.issubdtype(arr.dtype, np.floating):
            raise SNNFormatError(f"neuron '{node.name}': attribute {attr.name} must hold floats, got {arr.dtype}")
        if arr.ndim != 1 or arr.size == 0:
            raise SNNFormatError(f"neuron '{node.name}': attribute {attr.name} must be a float or a non-empty 1-D tensor, got shape {arr.shape}")
        return arr.astype(np.float32)
    if attr.type == onnx.AttributeProto.STRING:
        return attr.s.decode("utf-8", "replace")
    if attr.type == onnx.AttributeProto.INT:
        return int(attr.i)
    raise SNNFormatError(f"neuron '{node.name}': attribute {attr.name} has unsupported type {onnx.AttributeProto.AttributeType.Name(attr.type)}")


def neuron_params(node: onnx.NodeProto) -> NeuronParams:
    """Read and validate one IFNeuron node, filling defaults for absent optional attributes."""
    values = {}
    for attr in node.attribute:
        if attr.name not in NEURON_DEFAULTS:
            raise SNNFormatError(f"neuron '{node.name}': unknown attribute '{attr.name}'; known: {', '.join(NEURON_DEFAULTS)}")
        values[attr.name] = _attr_value(node, attr)
    for name, default in NEURON_DEFAULTS.items():
        if name not in values:
            if default is None:
                raise SNNFormatError(f"neuron '{node.name}': required attribute '{name}' is missing")
            values[name] = default if isinstance(default, (str, int)) else np.array([default], dtype=np.float32)
    reset = values["reset"]
    if not isinstance(reset, str) or reset not in RESETS:
        raise SNNFormatError(f"neuron '{node.name}': reset must be one of {RESETS}, got {reset!r}")
    signed = values["signed"]
    if not isinstance(signed, int) or signed not in (0, 1):
        raise SNNFormatError(f"neuron '{node.name}': signed must be the integer 0 or 1, got {signed!r}")
    if signed and reset != "subtract":
        raise SNNFormatError(f"neuron '{node.name}': signed spikes need reset 'subtract', got {reset!r}")
    burst = values["burst"]
    if not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
        raise SNNFormatError(f"neuron '{node.name}': burst must be an integer from 1 to {MAX_BURST}, got {burst!r}")
    if burst > 1 and (reset != "subtract" or signed):
        raise SNNFormatError(f"neuron '{node.name}': burst spikes need reset 'subtract' and signed 0, got reset {reset!r}, signed {signed}")
    for name in ("v_th", "shift", "v_init"):
        arr = values[name]
        if not isinstance(arr, np.ndarray):
            raise SNNFormatError(f"neuron '{node.name}': attribute {name} must be a float, got {type(arr).__name__} {arr!r}")
        if not np.all(np.isfinite(arr)):
            raise SNNFormatError(f"neuron '{node.name}': attribute {name} contains NaN or Inf")
    if np.any(values["v_th"] <= 0):
        raise SNNFormatError(f"neuron '{node.name}': v_th must be > 0, got min {float(values['v_th'].min())}")
    sizes = {values[n].size for n in ("v_th", "shift", "v_init")} - {1}
    if len(sizes) > 1:
        raise SNNFormatError(f"neuron '{node.name}': per-channel attributes disagree on the channel count {sorted(sizes)}")
    return NeuronParams(values["v_th"], values["shift"], values["v_init"], reset, bool(signed), burst)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def load_snn(source: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Load an SNN file and validate it before any computation; raise SNNFormatError naming the problem."""
    name = "<model>"
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        base_dir = None
        if isinstance(source, bytes):
            data = source
        else:
            name = os.fspath(source)
            if not os.path.isfile(name):
                raise SNNFormatError(f"{name}: no such file")
            with open(name, "rb") as f:
                data = f.read()
            base_dir = os.path.dirname(os.path.abspath(name))
        try:
            model = onnx.load_from_string(data)
        except Exception as exc:  # protobuf raises several types for garbage
            raise SNNFormatError(f"{name}: not an ONNX file ({type(exc).__name__}); give a .snn.onnx written by 'onnx2snn convert'") from None
        if not model.HasField("graph"):
            raise SNNFormatError(f"{name}: not an ONNX model (no graph); give a .snn.onnx written by 'onnx2snn convert'")
        if external.has_external(model):  # a large SNN: its weights are in NAME.data next to it
            if base_dir is None:
                raise SNNFormatError(f"{name}: the SNN keeps its weights in an external data file; give the file's path instead of its bytes")
            external.load_external(model, name, base_dir, SNNFormatError)
    validate(model, name)
    return model


def validate(model: onnx.ModelProto, name: str = "<model>") -> None:
    meta = metadata(model)
    version = meta.get(META_FORMAT_VERSION)
    if version is None:
        raise SNNFormatError(f"{name}: not an onnx2snn SNN file (metadata '{META_FORMAT_VERSION}' missing); convert the ANN with 'onnx2snn convert' first")
    if version != FORMAT_VERSION:
        raise SNNFormatError(f"{name}: SNN format version {version!r} is not supported (this reader knows {FORMAT_VERSION!r}); upgrade onnx2snn or reconvert")
    encoding = meta.get(META_INPUT_ENCODING, "analog")
    if encoding not in INPUT_ENCODINGS:
        raise SNNFormatError(f"{name}: input encoding {encoding!r} is not supported; known: {', '.join(INPUT_ENCODINGS)}")
    steps = meta.get(META_TIMESTEPS)
    if steps is not None and not (_DIGITS.match(steps) and int(steps) > 0):
        raise SNNFormatError(f"{name}: metadata '{META_TIMESTEPS}' must be a positive integer, got {steps!r}")
    start = meta.get(META_READOUT_START)
    if start is not None and not _DIGITS.match(start):
        raise SNNFormatError(f"{name}: metadata '{META_READOUT_START}' must be a non-negative integer, got {start!r}")
    domains = {o.domain: o.version for o in model.opset_import}
    if domains.get(DOMAIN) != DOMAIN_VERSION:
        raise SNNFormatError(f"{name}: opset import for domain '{DOMAIN}' version {DOMAIN_VERSION} missing (found {domains.get(DOMAIN)})")
    _check_graph(model, name)
    for node in model.graph.node:
        if node.domain == DOMAIN:
            if node.op_type not in CUSTOM_OPS:
                raise SNNFormatError(f"{name}: node '{node.name}' has unknown op {DOMAIN}.{node.op_type}; known: {', '.join(CUSTOM_OPS)}")
            if len(node.input) != 1 or len(node.output) != 1:
                raise SNNFormatError(f"{name}: node '{node.name}' ({node.op_type}) must have one input and one output")
            if node.op_type == NEURON_OP:
                neuron_params(node)
            else:
                _check_maxpool(node, name)


def _check_maxpool(node: onnx.NodeProto, name: str) -> None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kernel = attrs.get("kernel_shape")
    if not kernel or len(kernel) not in (1, 2) or min(kernel) < 1:
        raise SNNFormatError(f"{name}: {MAXPOOL_OP} '{node.name}' needs a 1-D or 2-D kernel_shape of positive sizes, got {kernel}")
    for key in ("strides", "dilations"):
        if key in attrs and (len(attrs[key]) != len(kernel) or min(attrs[key]) < 1):
            raise SNNFormatError(f"{name}: {MAXPOOL_OP} '{node.name}': {key} must be {len(kernel)} positive integers, got {attrs[key]}")


def _check_graph(model: onnx.ModelProto, name: str) -> None:
    """onnx's checker and strict shape inference on the graph (shapes that contradict each other are refused
    here, not halfway through a run). Neuron attributes are set aside meanwhile: the schema can declare one
    type per attribute, but v_th/shift/v_init may be floats or per-channel tensors; neuron_params checks them."""
    if external.is_large(model):  # checked without its weights (a copy: the attributes need not be put back)
        model = external.skeleton(model, None)[0]
    neurons = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == NEURON_OP]
    saved = [list(n.attribute) for n in neurons]
    for n in neurons:
        del n.attribute[:]
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SNNFormatError(f"{name}: invalid ONNX graph: {first}") from None
    finally:
        for n, attrs in zip(neurons, saved):
            n.attribute.extend(attrs)


def timesteps_of(model: onnx.ModelProto) -> int | None:
    steps = metadata(model).get(META_TIMESTEPS)
    return int(steps) if steps else None


def readout_start_of(model: onnx.ModelProto) -> int:
    return int(metadata(model).get(META_READOUT_START, "0"))
