"""Open Inference Protocol (KServe v2) tensors over HTTP: JSON tensors and the binary-data extension, both ways.

Pure NumPy, no web framework: the app hands in the body bytes and the ``Inference-Header-Content-Length`` header
and gets back arrays, or a ``RequestError`` (status 4xx) whose message names the input, field or parameter that
was wrong. Binary tensors are raw little-endian row-major bytes, in the order of the inputs that declare a
``binary_data_size``; the JSON header comes first (the extension's wire format, which ``tritonclient`` speaks).
"""
from __future__ import annotations

import json
import zlib

import numpy as np

from ..errors import InputError

# v2 datatype <-> NumPy dtype (BYTES, strings, has no fixed-size NumPy equivalent: no SNN input takes it)
DATATYPES = {"BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
             "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
             "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
HEADER_LENGTH = "Inference-Header-Content-Length"


class RequestError(InputError):
    """A request the server refuses; ``status`` is the HTTP status (400 bad request, 404 unknown model, ...)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype_of(dtype) -> str:
    """The v2 datatype name of a NumPy dtype (``float32`` -> ``FP32``)."""
    dtype = np.dtype(dtype)
    for name, known in DATATYPES.items():
        if (known.kind, known.itemsize) == (dtype.kind, dtype.itemsize):
            return name
    raise InputError(f"dtype {np.dtype(dtype).name} has no Open Inference Protocol datatype")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip or deflate, as ``tritonclient`` compresses), at most
    ``limit`` bytes once inflated: a small compressed body cannot expand past the server's size limit."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    if kind not in ("gzip", "deflate"):
        raise RequestError(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or no encoding", 415)
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(f"the body is not valid {kind} data ({exc})") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise RequestError(f"the request body exceeds the server's limit of {limit} bytes once decompressed", 413)
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON header (a dict) and the binary part that follows it."""
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise RequestError(f"header {HEADER_LENGTH} must be an integer from 0 to the body's {len(body)} bytes, got {header_length!r}")
    try:
        request = json.loads(bytes(body[:size]))
    except UnicodeDecodeError:
        raise RequestError("the request's JSON is not UTF-8 text; binary tensors need the "
                           f"{HEADER_LENGTH} header giving the JSON part's length") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON in the request: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(request, dict):
        raise RequestError(f"the request must be a JSON object with 'inputs', got a JSON {type(request).__name__}")
    return request, memoryview(body)[size:]


def decode_inputs(request: dict, binary: memoryview, expected: dict[str, str]) -> dict[str, np.ndarray]:
    """Arrays of the request's ``inputs``; ``expected`` maps the model's input names to their v2 datatypes."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("the request needs 'inputs': a non-empty list of tensors {name, shape, datatype, data}")
    arrays, offset = {}, 0
    for k, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise RequestError(f"inputs[{k}] must be an object {{name, shape, datatype, data}}")
        name = tensor.get("name")
        if name not in expected:
            raise RequestError(f"unknown input {name!r}; the model's inputs: {', '.join(expected)}")
        if name in arrays:
            raise RequestError(f"input {name!r} is given twice")
        array, offset = _decode_tensor(tensor, name, binary, offset, expected[name])
        arrays[name] = array
    if offset != len(binary):
        raise RequestError(f"the body holds {len(binary) - offset} bytes after the last binary tensor; "
                           "each binary input must declare its binary_data_size")
    return arrays


def _decode_tensor(tensor: dict, name: str, binary: memoryview, offset: int, want: str) -> tuple[np.ndarray, int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    datatype = tensor.get("datatype")
    if datatype != want:
        known = "" if datatype in DATATYPES else f" (datatypes: {', '.join(DATATYPES)}, BYTES)"
        raise RequestError(f"input {name!r}: datatype {datatype!r} given, the model expects {want}{known}")
    dtype, count = DATATYPES[datatype], int(np.prod(shape, dtype=np.int64))
    params = _parameters(tensor, f"input {name!r}", {"binary_data_size"})
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size != count * dtype.itemsize:
            raise RequestError(f"input {name!r}: binary_data_size must be {count * dtype.itemsize} bytes "
                               f"({count} x {datatype} for shape {shape}), got {size!r}")
        if "data" in tensor:
            raise RequestError(f"input {name!r}: give either 'data' or binary_data_size, not both")
        if offset + size > len(binary):
            raise RequestError(f"input {name!r}: binary_data_size {size} runs past the end of the body "
                               f"({len(binary) - offset} bytes left)")
        array = np.frombuffer(binary[offset:offset + size], dtype=dtype).reshape(shape)
        return array, offset + size
    if "data" not in tensor:
        raise RequestError(f"input {name!r} has no 'data' (nor a binary_data_size parameter)")
    try:
        array = np.asarray(tensor["data"])
    except ValueError:
        raise RequestError(f"input {name!r}: 'data' is not a rectangular array of numbers") from None
    if array.dtype.kind not in ("b" if datatype == "BOOL" else "iuf"):
        raise RequestError(f"input {name!r}: 'data' must hold only {'booleans' if datatype == 'BOOL' else 'numbers'} for {datatype}")
    if array.size != count:
        raise RequestError(f"input {name!r}: 'data' holds {array.size} values, shape {shape} needs {count}")
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype).reshape(shape)
    if array.dtype.kind in "iu" and dtype.kind in "iu" and not np.array_equal(cast, array.reshape(shape)):
        raise RequestError(f"input {name!r}: a value does not fit in {datatype}")
    return cast, offset


def _parameters(obj: dict, where: str, allowed: set[str]) -> dict:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RequestError(f"{where}: 'parameters' must be an object, got {type(params).__name__}")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RequestError(f"{where}: unknown parameter {unknown[0]!r}; known: {', '.join(sorted(allowed))}")
    return params


def request_parameters(request: dict, allowed: set[str]) -> dict:
    """The request-level ``parameters`` (an object whose keys are all in ``allowed``)."""
    return _parameters(request, "the request", allowed)


def requested_outputs(request: dict, available: list[str], default: list[str], default_binary: bool) -> list[tuple[str, bool]]:
    """(output name, as binary?) for each output asked for (any of ``available``); none asked for: ``default``."""
    outputs = request.get("outputs")
    if outputs is None:
        return [(name, default_binary) for name in default]
    if not isinstance(outputs, list):
        raise RequestError("'outputs' must be a list of {name, parameters}")
    chosen = []
    for k, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else None
        if name not in available:
            raise RequestError(f"unknown output {name!r} in outputs[{k}]; outputs: {', '.join(available)}")
        binary = _parameters(out, f"output {name!r}", {"binary_data"}).get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise RequestError(f"output {name!r}: binary_data must be true or false, got {binary!r}")
        chosen.append((name, binary))
    return chosen


def encode_response(response: dict, outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an inference response: ``response`` (model_name, id, parameters) plus each
    output as JSON data or, when its flag is set, as binary data after the JSON header."""
    tensors, blobs = [], []
    for name, array, binary in outputs:
        tensor = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(array, dtype=DATATYPES[tensor["datatype"]]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    header = json.dumps(dict(response, outputs=tensors), separators=(",", ":")).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return b"".join([header] + blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
