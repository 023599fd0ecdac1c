"""Run the ANN in onnxruntime on calibration data with every activation exposed, and keep per-layer statistics.

Batches are streamed; each layer keeps its exact maximum (overall and per channel) and a bounded uniform sample of
its positive values with their channels (exact while it fits, halved with a fixed seed beyond), so layer and
per-channel percentiles need bounded memory.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from runtime import external
from runtime.errors import InputError
from runtime.plan import TensorInfo
from runtime.session import check_array

from .errors import CalibrationError
from .progress import progress

SAMPLE_CAP = 4_000_000  # positive values kept per layer


class ActivationStats:
    """Streaming statistics of one activation layer's outputs."""

    def __init__(self, seed: int = 0):
        self.max = 0.0
        self.channel_max: np.ndarray | None = None   # (C,), channel = axis 1 of the activation
        self.ndim = 0
        self.count = 0
        self.positive = 0
        self._keep = 1.0
        self._parts: list[np.ndarray] = []
        self._channel_parts: list[np.ndarray] = []
        self._stored = 0
        self._rng = np.random.default_rng(seed)
        self._sample: np.ndarray | None = None
        self._channels: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        n_ch = values.shape[1] if values.ndim >= 2 else 1
        inner = int(np.prod(values.shape[2:], dtype=np.int64)) if values.ndim > 2 else 1
        per_channel = np.maximum(values.reshape(-1, n_ch, inner).max(axis=(0, 2)), 0).astype(np.float64) if values.size else np.zeros(n_ch)
        self.ndim = values.ndim
        self.channel_max = per_channel if self.channel_max is None else np.maximum(self.channel_max, per_channel)
        flat = values.reshape(-1)
        index = np.flatnonzero(flat > 0)
        self.count += flat.size
        self.positive += index.size
        if index.size:
            self.max = max(self.max, float(flat[index].max()))
        if self._keep < 1.0:
            index = index[self._rng.random(index.size) < self._keep]
        self._parts.append(flat[index].astype(np.float32))
        self._channel_parts.append(((index // inner) % n_ch).astype(np.int32))
        self._stored += index.size
        self._sample = self._channels = None
        while self._stored > SAMPLE_CAP:
            merged, channels = np.concatenate(self._parts), np.concatenate(self._channel_parts)
            keep = self._rng.random(merged.size) < 0.5
            self._parts, self._channel_parts = [merged[keep]], [channels[keep]]
            self._stored, self._keep = int(keep.sum()), self._keep / 2

    @property
    def sample(self) -> np.ndarray:
        """Positive values seen (all of them, or a uniform sample when there were too many)."""
        if self._sample is None:
            self._sample = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
            self._channels = np.concatenate(self._channel_parts) if self._channel_parts else np.zeros(0, np.int32)
            self._parts, self._channel_parts = [self._sample], [self._channels]
        return self._sample

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.sample, q)) if self.sample.size else 0.0

    def channel_percentile(self, q: float) -> np.ndarray:
        """(C,) percentile of each channel's positive values; 0 for a channel that never fired."""
        sample = self.sample
        out = np.zeros(0 if self.channel_max is None else self.channel_max.size)
        order = np.argsort(self._channels, kind="stable")
        values, channels = sample[order], self._channels[order]
        bounds = np.searchsorted(channels, np.arange(out.size + 1))
        for c in range(out.size):
            if bounds[c + 1] > bounds[c]:
                out[c] = np.percentile(values[bounds[c]:bounds[c + 1]], q)
        return out

    def clipped_fraction(self, v_th: float) -> float:
        """Fraction of all activation values (zeros included) above v_th."""
        if not self.count or not self.sample.size:
            return 0.0
        return float(np.mean(self.sample > v_th)) * self.positive / self.count

    def summary(self, v_th: float) -> dict:
        return {"max": self.max, "p99": self.percentile(99), "p99.9": self.percentile(99.9), "p99.99": self.percentile(99.99),
                "positive_fraction": self.positive / max(1, self.count), "clipped_fraction": self.clipped_fraction(v_th)}


def _as_array(value):
    """Arrays, or anything array-like (a torch tensor from a DataLoader, without importing torch)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def iter_batches(calibration, inputs: list[TensorInfo], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield validated feed dicts from an array, a dict of arrays, or an iterable of such batches (or tuples)."""
    names = [i.name for i in inputs]

    def to_feeds(item, where: str) -> dict:
        if isinstance(item, dict):  # extra keys (labels, say) are ignored
            missing = [n for n in names if n not in item]
            if missing:
                raise CalibrationError(f"calibration {where}: input {missing[0]!r} missing (got keys {sorted(map(str, item))}; model inputs: {', '.join(names)})")
            feeds = {n: item[n] for n in names}
        elif isinstance(item, (tuple, list)):
            if len(item) < len(names):
                raise CalibrationError(f"calibration {where}: a tuple of {len(item)} items for {len(names)} model inputs ({', '.join(names)})")
            feeds = dict(zip(names, item))
        else:
            if len(names) != 1:
                raise CalibrationError(f"calibration {where}: one array given but the model has inputs {', '.join(names)}; give a dict")
            feeds = {names[0]: item}
        out = {}
        for info in inputs:
            try:
                out[info.name] = check_array(_as_array(feeds[info.name]), info.name, info)
            except InputError as exc:
                raise CalibrationError(f"calibration {where}: {exc}") from None
        return out

    if isinstance(calibration, (np.ndarray, dict)) or hasattr(calibration, "__array__"):
        # one array of many samples for a model exported with a fixed batch size: fed that many at a time
        fixed = next((i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0), None)
        if fixed is not None:
            inputs = [TensorInfo(i.name, (None,) + tuple(i.shape[1:]) if i.shape else i.shape, i.dtype) for i in inputs]
            batch_size = fixed
        feeds = to_feeds(calibration if isinstance(calibration, dict) else _as_array(calibration), "data")
        n = next(iter(feeds.values())).shape[0]
        if fixed is not None and n % fixed:
            raise CalibrationError(f"calibration data: {n} samples for a model whose batch size is fixed at {fixed}; "
                                   f"give a multiple of {fixed}")
        for start in range(0, n, batch_size):
            yield {k: v[start:start + batch_size] for k, v in feeds.items()}
        return
    if not isinstance(calibration, Iterable):
        raise CalibrationError(f"calibration must be an array, a dict of arrays or an iterable of batches, got {type(calibration).__name__}")
    for i, item in enumerate(calibration):
        yield to_feeds(item, f"batch {i}")


def calibrate(ann: onnx.ModelProto, inputs: list[TensorInfo], activation_outputs: list[str], calibration,
              batch_size: int = 64, show_progress: bool | None = None,
              keep: int = 0) -> tuple[dict[str, ActivationStats], dict[str, np.ndarray]]:
    """Per-layer statistics of the named activation outputs over all calibration batches, and the first ``keep``
    samples themselves (the SNN-side calibration runs on them; the data may be a one-shot iterator)."""
    session = ort_session(ann, activation_outputs)
    stats = {name: ActivationStats(seed=i) for i, name in enumerate(activation_outputs)}
    total = _count(calibration, batch_size)
    seen, kept, kept_count = 0, {}, 0
    for feeds in progress(iter_batches(calibration, inputs, batch_size), total=total, desc="calibrating", unit="batch", enabled=show_progress):
        try:
            values = session.run(activation_outputs, feeds)
        except Exception as exc:
            raise CalibrationError(f"calibration batch failed in onnxruntime: {str(exc).strip().splitlines()[-1][:300]}") from None
        for name, value in zip(activation_outputs, values):
            stats[name].add(value)
        if kept_count < keep:
            take = min(keep - kept_count, next(iter(feeds.values())).shape[0])
            for k, v in feeds.items():
                kept.setdefault(k, []).append(v[:take])
            kept_count += take
        seen += 1
    if seen == 0:
        raise CalibrationError("calibration data is empty; give at least one sample")
    return stats, {k: np.concatenate(v) for k, v in kept.items()}


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size a model was exported with, if its first input fixes one (e.g. a batch-1 PyTorch export)."""
    inits = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in inits:
            dims = value.type.tensor_type.shape.dim
            return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return None


def run_in_blocks(run, values: list[np.ndarray], batch: int, fixed: bool) -> list[np.ndarray]:
    """``run(values)`` on ``batch`` samples at a time. ``fixed``: the model (or node, such as a Reshape naming the
    batch size) takes exactly ``batch`` samples, so a short last block is padded with copies of its first sample,
    dropped again after. Arrays whose first axis is not the samples' are passed whole to every block."""
    n = next((v.shape[0] for v in values if v.ndim), None)
    if n is None or n <= batch and not (fixed and n < batch):
        return run(values)
    blocks = []
    for start in range(0, n, batch):
        short = batch - min(batch, n - start) if fixed else 0
        part = [np.concatenate([v[start:start + batch]] + [v[start:start + 1]] * short) if v.ndim and v.shape[0] == n else v
                for v in values]
        outs = run(part)
        if fixed and any(o.ndim == 0 or o.shape[0] != batch for o in outs):
            raise CalibrationError(f"an output does not keep the batch axis first on a model with a fixed batch size "
                                   f"{batch}; export the model with a dynamic batch size")
        blocks.append([o[:len(o) - short] for o in outs])
    return [np.concatenate(parts) for parts in zip(*blocks)]


def activations(ann: onnx.ModelProto, outputs: list[str], feeds: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
    """The ANN's named activations on the given samples, as whole arrays (for the SNN-side calibration); a model
    with a fixed batch size runs on blocks of that size."""
    session = ort_session(ann, outputs)
    names = list(feeds)
    fixed = fixed_batch(ann)
    values = run_in_blocks(lambda vals: session.run(outputs, dict(zip(names, vals))), [feeds[k] for k in names],
                           fixed or batch_size, fixed is not None)
    return dict(zip(outputs, values))


def ort_session(model: onnx.ModelProto, extra_outputs: list[str] = ()) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` (any size) with ``extra_outputs`` exposed as graph outputs.

    A model too large for one protobuf is given to onnxruntime without its weights, which follow as external
    initializers: onnxruntime copies them while it loads the model, so our arrays are dropped once it has."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures surface as our own one-line errors
    if external.is_large(model):
        copy, moved = external.skeleton(model, "weights.bin")  # never read: every such weight is supplied below
        weights = [(t.name, ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(t))) for t, _ in moved]
        options.add_external_initializers([n for n, _ in weights], [v for _, v in weights])
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in extra_outputs:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _count(calibration, batch_size: int) -> int | None:
    if isinstance(calibration, dict) and calibration:
        n = len(next(iter(calibration.values())))
    elif isinstance(calibration, np.ndarray):
        n = len(calibration) if calibration.ndim else 0
    else:
        return len(calibration) if hasattr(calibration, "__len__") else None
    return -(-n // batch_size)
