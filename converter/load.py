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

from runtime import external

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
    """Return the checked, opset-upgraded, shape-inferred model and the SHA-256 of its serialised form (for a
    file with external data: of the file, then of each data file in order of first use)."""
    base_dir = None
    if isinstance(source, onnx.ModelProto):
        name = "<ModelProto>"
        if external.is_large(source):
            model = onnx.ModelProto()
            model.CopyFrom(source)
            return _checked(model, name, _hash_large(model))
        data = source.SerializeToString()
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
    digest = hashlib.sha256(data)
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise ModelLoadError(f"{name}: not an ONNX model ({type(exc).__name__}: {_first_line(exc)[:120]})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{name}: not an ONNX model (no graph nodes); give a model exported by your framework")
    if external.has_external(model):
        if base_dir is None:
            raise ModelLoadError(f"{name}: the model keeps its weights in external data files; give the model's path instead")
        files = [os.path.join(base_dir, location) for location in external.locations(model)]
        external.load_external(model, name, base_dir, ModelLoadError)
        for path in files:
            _hash_file(digest, path)
    return _checked(model, name, digest.hexdigest())


def _checked(model: onnx.ModelProto, name: str, sha: str) -> Source:
    try:
        external.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"{name}: fails onnx.checker: {_first_line(exc)}") from None
    _check_initializers(model, name)
    opset = _default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelLoadError(f"{name}: opset {opset} is newer than this onnx package knows ({newest}); re-export with opset <= {newest} or upgrade onnx")
    if opset < MIN_OPSET:
        try:
            model = external.through_skeleton(model, lambda m: version_converter.convert_version(m, MIN_OPSET))
        except Exception as exc:
            raise ModelLoadError(f"{name}: cannot upgrade opset {opset} to {MIN_OPSET}: {_first_line(exc)}; re-export with opset >= {MIN_OPSET}") from None
        opset = MIN_OPSET
    try:  # strict: a graph whose shapes contradict each other is refused here, not deep inside onnxruntime
        model = external.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ModelLoadError(f"{name}: inconsistent shapes: {_first_line(exc)}") from None
    return Source(model, name, sha, opset)


def _hash_file(digest, path: str) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)


def _hash_large(model: onnx.ModelProto) -> str:
    """SHA-256 of a model too large to serialise: its skeleton, then each weight set aside."""
    skel, moved = external.skeleton(model, "")
    digest = hashlib.sha256(skel.SerializeToString())
    for tensor, _ in moved:
        digest.update(external.tensor_bytes(tensor))
    return digest.hexdigest()


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
