"""Load a source ANN: read (external data too), check, upgrade old opsets, infer shapes.

Every failure becomes a ModelLoadError that names the file and says what to do.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import version_converter

from .errors import ModelLoadError

MIN_OPSET = 13  # the opset our passes are written against; older models are upgraded to it


@dataclass
class Source:
    model: onnx.ModelProto
    name: str
    sha256: str
    opset: int


def _default_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(source: str | os.PathLike | bytes | onnx.ModelProto) -> Source:
    """Return the checked, opset-upgraded, shape-inferred model and the SHA-256 of its serialised form."""
    base_dir = None
    if isinstance(source, onnx.ModelProto):
        name, data = "<ModelProto>", source.SerializeToString()
    elif isinstance(source, (bytes, bytearray)):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fspath(source)
        if not os.path.exists(name):
            raise ModelLoadError(f"{name}: no such file")
        if os.path.isdir(name):
            raise ModelLoadError(f"{name}: is a directory; give an .onnx file")
        with open(name, "rb") as f:
            data = f.read()
        base_dir = os.path.dirname(os.path.abspath(name))
    if not data:
        raise ModelLoadError(f"{name}: file is empty; give an ONNX model")
    sha = hashlib.sha256(data).hexdigest()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise ModelLoadError(f"{name}: not an ONNX model ({type(exc).__name__}: {_first_line(exc)[:120]})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{name}: not an ONNX model (no graph nodes); give a model exported by your framework")
    if base_dir is not None and any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        _load_external(model, name, base_dir)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"{name}: fails onnx.checker: {_first_line(exc)}") from None
    _check_initializers(model, name)
    opset = _default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelLoadError(f"{name}: opset {opset} is newer than this onnx package knows ({newest}); re-export with opset <= {newest} or upgrade onnx")
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelLoadError(f"{name}: cannot upgrade opset {opset} to {MIN_OPSET}: {_first_line(exc)}; re-export with opset >= {MIN_OPSET}") from None
        opset = MIN_OPSET
    try:  # strict: a graph whose shapes contradict each other is refused here, not deep inside onnxruntime
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ModelLoadError(f"{name}: inconsistent shapes: {_first_line(exc)}") from None
    return Source(model, name, sha, opset)


def _check_initializers(model: onnx.ModelProto, name: str) -> None:
    """Every initializer decodes to exactly the elements its dims declare (the checker does not always look)."""
    for tensor in model.graph.initializer:
        try:
            values = onnx.numpy_helper.to_array(tensor)
        except Exception as exc:
            raise ModelLoadError(f"{name}: initializer '{tensor.name}' cannot be read ({type(exc).__name__}: {_first_line(exc)})") from None
        expected = 1
        for d in tensor.dims:
            expected *= d
        if values.size != expected:
            raise ModelLoadError(f"{name}: initializer '{tensor.name}' holds {values.size} values but its dims {list(tensor.dims)} declare {expected}")
        if values.dtype.kind == "f" and np.isnan(values).any():
            raise ModelLoadError(f"{name}: initializer '{tensor.name}' contains {int(np.isnan(values).sum())} NaN values; the model's weights are corrupt")


def _load_external(model: onnx.ModelProto, name: str, base_dir: str) -> None:
    """Load external tensor data, refusing paths that leave the model's folder."""
    root = os.path.realpath(base_dir)
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        path = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, path]) != root:
            raise ModelLoadError(f"{name}: initializer '{tensor.name}' points outside the model's folder ({location!r}); refusing to read it")
        if not os.path.isfile(path):
            raise ModelLoadError(f"{name}: external data file {location!r} for initializer '{tensor.name}' not found next to the model")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, base_dir)
    except Exception as exc:
        raise ModelLoadError(f"{name}: cannot read external data: {_first_line(exc)}") from None
