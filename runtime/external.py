"""Models over protobuf's 2 GB limit: weights on disk as ONNX external data, set aside in memory.

protobuf cannot serialise a message of 2 GiB or more, and onnx's checker, shape inference, version converter and
onnxruntime's in-memory sessions all serialise the model they are given. A model is *large* when its initializers
hold more than ``EXTERNAL_DATA_BYTES``; for a large model, every step that serialises works on a *skeleton*: a
copy without the data of its tensors of ``MIN_EXTERNAL_BYTES`` or more, which become either external-data
references (for the writer and onnxruntime) or graph inputs of the same type and shape (for onnx's checker and
shape inference). Small models never take these paths: they are checked, run and written exactly as before.
Single tensors must stay below 2 GiB (one protobuf field).
"""
from __future__ import annotations

import math
import os

import onnx
from onnx import TensorProto, helper, numpy_helper

EXTERNAL_DATA_BYTES = 2**31 - 2**24   # protobuf's limit, less a margin for what is added after the size is checked
MIN_EXTERNAL_BYTES = 1024             # smaller tensors (shapes, scales, most biases) stay inside the model file
ALIGN = 4096                          # each tensor starts at a page-aligned offset of the data file
DATA_SUFFIX = ".data"                 # OUT.snn.onnx -> OUT.snn.onnx.data, in the same folder

_FIXED_SIZE_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
                     TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32,
                     TensorProto.INT64, TensorProto.UINT64, TensorProto.BOOL}


def is_large(model: onnx.ModelProto) -> bool:
    """True when ``model``'s initializers hold more than ``EXTERNAL_DATA_BYTES``: too large to serialise in one
    piece, its weights must be set aside or external. (Counted tensor by tensor: protobuf's own ByteSize
    serialises the whole message, which is what fails.)"""
    tensors = [t for t in model.graph.initializer if _in_memory(t)]
    if sum(_nbytes(t) for t in tensors) <= EXTERNAL_DATA_BYTES:   # cheap: from the shapes
        return False
    return sum(_data_bytes(t) for t in tensors) > EXTERNAL_DATA_BYTES   # the shapes may lie (corrupt file)


def data_file(path: str | os.PathLike) -> str:
    """The external-data file written next to ``path`` for a large model."""
    return os.fspath(path) + DATA_SUFFIX


def _in_memory(tensor: TensorProto) -> bool:
    return tensor.data_location != TensorProto.EXTERNAL and tensor.data_type in _FIXED_SIZE_TYPES


def _moved(tensor: TensorProto) -> bool:
    return _in_memory(tensor) and _nbytes(tensor) >= MIN_EXTERNAL_BYTES


def _data_bytes(tensor: TensorProto) -> int:
    """Bytes of data the tensor holds (not what its dims declare: a corrupt file may declare terabytes)."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return 4 * (len(tensor.float_data) + len(tensor.int32_data)) + 8 * (len(tensor.int64_data) + len(tensor.double_data) + len(tensor.uint64_data))


def _nbytes(tensor: TensorProto) -> int:
    return math.prod(tensor.dims) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def tensor_bytes(tensor: TensorProto) -> bytes:
    """The tensor's data as little-endian bytes (what external data holds)."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).astype(helper.tensor_dtype_to_np_dtype(tensor.data_type).newbyteorder("<")).tobytes()


def _copy_fields(dst, src, skip: str) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def skeleton(model: onnx.ModelProto, location: str | None) -> tuple[onnx.ModelProto, list[tuple[TensorProto, int]]]:
    """A copy of ``model`` without the data of its large initializers, and those originals with their offsets.

    ``location``: each such initializer becomes an external-data reference to that file at the offset
    ``write_data`` puts it; None: it becomes a graph input of the same type and shape instead (what onnx's
    checker and shape inference need to know of it). The model itself is not changed.
    """
    skel = onnx.ModelProto()
    _copy_fields(skel, model, "graph")
    graph = skel.graph
    _copy_fields(graph, model.graph, "initializer")
    listed = {i.name for i in model.graph.input}
    moved, offset = [], 0
    for tensor in model.graph.initializer:
        if not _moved(tensor):
            graph.initializer.add().CopyFrom(tensor)
            continue
        moved.append((tensor, offset))
        length = _nbytes(tensor)
        if location is None:
            if tensor.name not in listed:
                graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            ref = graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims, doc_string=tensor.doc_string)
            ref.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                ref.external_data.add(key=key, value=value)
        offset += -(-length // ALIGN) * ALIGN
    return skel, moved


def write_data(f, moved: list[tuple[TensorProto, int]]) -> None:
    """Write the tensors set aside by ``skeleton`` to an open binary file, each at its offset."""
    for tensor, offset in moved:
        f.seek(offset)
        f.write(tensor_bytes(tensor))


def check_model(model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model`` for a model of any size."""
    onnx.checker.check_model(skeleton(model, None)[0] if is_large(model) else model)


def infer_shapes(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes`` for a model of any size (a large one gets its value_info in place)."""
    if not is_large(model):
        return onnx.shape_inference.infer_shapes(model, **options)
    inferred = onnx.shape_inference.infer_shapes(skeleton(model, None)[0], **options)
    for field in ("value_info", "output"):
        del getattr(model.graph, field)[:]
        getattr(model.graph, field).extend(getattr(inferred.graph, field))
    return model


def through_skeleton(model: onnx.ModelProto, fn) -> onnx.ModelProto:
    """``fn(model)`` for a model transform of any size: a large model's weights are set aside as graph inputs
    while ``fn`` runs and put back, by name, into its result."""
    if not is_large(model):
        return fn(model)
    skel, moved = skeleton(model, None)
    listed = {i.name for i in model.graph.input}
    return _put_back(fn(skel), [t for t, _ in moved if t.name not in listed], [t for t, _ in moved])


def pack(model: onnx.ModelProto):
    """The model in a form that can be pickled (for Ray): its bytes, or for a large model its skeleton's bytes
    and the weights as arrays."""
    if not is_large(model):
        return model.SerializeToString()
    skel, moved = skeleton(model, None)
    listed = [t.name for t, _ in moved if t.name in {i.name for i in model.graph.input}]
    return skel.SerializeToString(), listed, [(t.name, numpy_helper.to_array(t)) for t, _ in moved]


def unpack(packed) -> bytes | onnx.ModelProto:
    """Inverse of ``pack``."""
    if isinstance(packed, bytes):
        return packed
    data, listed, weights = packed
    tensors = [numpy_helper.from_array(array, name) for name, array in weights]
    return _put_back(onnx.load_from_string(data), [t for t in tensors if t.name not in listed], tensors)


def _put_back(skel: onnx.ModelProto, added: list[TensorProto], tensors: list[TensorProto]) -> onnx.ModelProto:
    """Weights set aside as graph inputs become initializers again (inputs ``skeleton`` added are removed)."""
    names = {t.name for t in added}
    for k in reversed(range(len(skel.graph.input))):
        if skel.graph.input[k].name in names:
            del skel.graph.input[k]
    skel.graph.initializer.extend(tensors)
    return skel


def load_external(model: onnx.ModelProto, name: str, base_dir: str, error: type[Exception]) -> None:
    """Load external tensor data from files next to the model, refusing paths that leave the model's folder."""
    root = os.path.realpath(base_dir)
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        path = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, path]) != root:
            raise error(f"{name}: initializer '{tensor.name}' points outside the model's folder ({location!r}); refusing to read it")
        if not os.path.isfile(path):
            raise error(f"{name}: external data file {location!r} for initializer '{tensor.name}' not found next to the model")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, base_dir)
    except Exception as exc:
        text = str(exc).strip()
        raise error(f"{name}: cannot read external data: {text.splitlines()[0] if text else type(exc).__name__}") from None


def has_external(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def locations(model: onnx.ModelProto) -> list[str]:
    """The distinct external-data ``location``s the model's initializers refer to, in order of first use."""
    found = []
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location not in found:
                found.append(location)
    return found
