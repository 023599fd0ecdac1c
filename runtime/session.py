"""``InferenceSession``: load an SNN file once, then run it on batches, like onnxruntime's session."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numba
import numpy as np
import onnx

from .engine import PRECISIONS, KernelCache, RunState, run_numba
from .errors import InputError, SNNFormatError
from .format import load_snn, metadata
from .plan import TensorInfo, compile_plan
from .reference import run_reference
from .stats import RunResult, numel, with_totals

ENGINES = ("auto", "event", "dense", "reference")  # "numba" is accepted as "auto"
# Bytes of one layer's (T, chunk, ...) activations: small enough that buffers are recycled by the allocator
# instead of being fresh pages from the OS (page faults cost more than the simulation), large enough to keep
# every thread busy. Peak memory is a few times this, whatever the batch size.
DEFAULT_CHUNK_BYTES = 24 << 20
# Below this many activations per layer (T x batch x widest layer) a layer takes well under a millisecond, and
# waking the other threads for each of its parallel loops costs more than it saves: such runs use one thread.
# Results do not depend on the thread count.
SERIAL_WORK = 1 << 19


@dataclass(frozen=True)
class NodeArg:
    """What ``get_inputs()`` / ``get_outputs()`` return, as in onnxruntime."""

    name: str
    shape: list
    type: str


class InferenceSession:
    """Run an ``*.snn.onnx`` file for T time steps on CPU.

    ``threads`` caps the threads (None: all cores). ``engine`` is "auto" (layer-major Numba engine; each
    linear layer takes the event-driven path on spikes and the dense path on the analog input; in float64, the
    path its measured spike density favours), "event" or
    "dense" (one path everywhere, for benchmarking), or "reference" (the literal NumPy engine, for checking).
    ``precision``: "float32" (the Numba engines' default: float32 sums in a fixed order, deterministic and the same
    for any thread count) or "float64" (the exact engine of earlier releases, equal to the float64 reference;
    slower). The reference engine is float64 unless asked for "float32": then it is the float32 oracle, whose
    sums the event path equals bit for bit (docs/runtime.md, "Numerics"). Calls are serialised by a lock: one
    session may be shared by several Python threads, each call then runs with all its threads.
    """

    def __init__(self, path_or_model: str | os.PathLike | bytes | onnx.ModelProto, threads: int | None = None,
                 engine: str = "auto", chunk_bytes: int = DEFAULT_CHUNK_BYTES, precision: str | None = None):
        model = load_snn(path_or_model)   # not kept: the plan holds the weights (a second copy would double memory)
        self._plan = compile_plan(model)
        self.metadata = metadata(model)
        self.threads = _check_threads(threads)
        engine = "auto" if engine == "numba" else engine
        if engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine
        if precision is not None and precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision or ("float64" if engine == "reference" else "float32")
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, (int, np.integer)) or chunk_bytes < 1:
            raise InputError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
        self.chunk_bytes = int(chunk_bytes)
        self.stats: dict = {}
        self._cache = KernelCache(engine if engine != "reference" else "auto", self.precision)
        self._lock = threading.Lock()

    @property
    def default_timesteps(self) -> int | None:
        return self._plan.timesteps

    def get_inputs(self) -> list[NodeArg]:
        return [_node_arg(i) for i in self._plan.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [_node_arg(o) for o in self._plan.outputs]

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray], timesteps: int | None = None,
            threads: int | None = None, early_stop: int | None = None) -> list[np.ndarray]:
        """Rate readout (mean over the steps) of the requested outputs.

        ``early_stop=k``: simulate in blocks of k steps and stop once every sample's top-1 class (of the first
        output) has been the same for the last k steps; ``stats["steps_used"]`` says how many steps ran.
        """
        return self._select(output_names, self._run(input_feed, timesteps, threads, False, early_stop).outputs)

    def run_trace(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray], timesteps: int | None = None,
                  threads: int | None = None, early_stop: int | None = None) -> list[np.ndarray]:
        """Readout after every step t = 1..T: one array (T, ...) per output; its last row equals ``run``.

        With ``early_stop`` the rows stop at the steps used (a chunk that stopped sooner repeats its last row).
        """
        return self._select(output_names, self._run(input_feed, timesteps, threads, True, early_stop).trace)

    def _select(self, output_names, values):
        names = [o.name for o in self._plan.outputs]
        if output_names is None:
            return values
        missing = [n for n in output_names if n not in names]
        if missing:
            raise InputError(f"unknown output {missing[0]!r}; outputs: {', '.join(names)}")
        return [values[names.index(n)] for n in output_names]

    def _run(self, input_feed, timesteps, threads, trace, early_stop=None) -> RunResult:
        steps = timesteps if timesteps is not None else self._plan.timesteps
        if steps is None:
            raise InputError("timesteps not given and the SNN file does not record them; pass timesteps=T")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InputError(f"timesteps must be a positive integer, got {steps!r}")
        if early_stop is not None:
            if isinstance(early_stop, bool) or not isinstance(early_stop, (int, np.integer)) or early_stop < 1:
                raise InputError(f"early_stop must be a positive integer (steps of a stable top-1), got {early_stop!r}")
            if self.engine == "reference":
                raise InputError("early_stop needs a Numba engine (auto, event or dense), not the reference engine")
        feeds = check_feeds(self._plan.inputs, input_feed)
        n_threads = _check_threads(threads) if threads is not None else self.threads
        with self._lock:
            previous = numba.get_num_threads()
            numba.set_num_threads(n_threads or numba.config.NUMBA_NUM_THREADS)
            try:
                result = self._run_chunks(feeds, int(steps), trace, early_stop)
            except (ValueError, IndexError) as exc:  # a graph that passed validation but contradicts itself
                shapes = {k: list(v.shape) for k, v in feeds.items()}
                raise SNNFormatError(f"the SNN graph cannot be evaluated on inputs of shape {shapes}: {' '.join(str(exc).split())[:300]}") from None
            finally:
                numba.set_num_threads(previous)
            self.stats = result.stats
        return result

    def chunk_size(self, feeds: dict[str, np.ndarray], steps: int, early_stop: int | None = None) -> int:
        """Samples per chunk: no layer's (T, chunk, ...) activations exceed ``chunk_bytes`` (the reference engine
        never chunks). Distributed runs cut batches on these same boundaries, so they give the same bits."""
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        if self.engine == "reference" or self._fixed_batch():  # a fixed batch (Reshapes may name it) is never cut
            return batch
        per_sample = sum(numel(v.shape[1:]) for v in feeds.values()) or 1
        widest = max(per_sample, self._widest_layer(feeds))
        return max(1, int(self.chunk_bytes // (4 * min(steps, early_stop or steps) * widest)))

    def _run_chunks(self, feeds, steps, trace, early_stop) -> RunResult:
        """Split the batch so that no layer's (T, chunk, ...) activations exceed ``chunk_bytes``."""
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        chunk = self.chunk_size(feeds, steps, early_stop)
        widest = max(sum(numel(v.shape[1:]) for v in feeds.values()) or 1, self._widest_layer(feeds))
        if min(steps, early_stop or steps) * min(batch, chunk) * widest < SERIAL_WORK:
            numba.set_num_threads(1)
        if self.engine == "reference" or batch <= chunk:
            return self._run_once(feeds, steps, trace, early_stop)
        parts = [self._run_once({k: v[i:i + chunk] for k, v in feeds.items()}, steps, trace, early_stop)
                 for i in range(0, batch, chunk)]
        return _concat(parts)

    def _run_once(self, feeds, steps, trace, early_stop) -> RunResult:
        if self.engine == "reference":
            return run_reference(self._plan, feeds, steps, trace, self._cache.ops)
        if not early_stop:
            result = run_numba(self._plan, feeds, steps, self._cache, trace)
            result.stats["steps_used"] = steps
            return result
        state, parts = RunState(), []
        while state.steps_done < steps:
            parts.append(run_numba(self._plan, feeds, min(early_stop, steps - state.steps_done), self._cache, True, state))
            top = np.concatenate([p.trace[0] for p in parts]).reshape(state.steps_done, len(parts[0].outputs[0]), -1).argmax(-1)
            if state.steps_done >= early_stop and (top[-early_stop:] == top[-1]).all():
                break
        return _join_blocks(parts, trace, steps)

    def _fixed_batch(self) -> bool:
        """Whether the model was exported for one batch size (its first input's first dim is a number)."""
        shape = self._plan.inputs[0].shape if self._plan.inputs else ()
        return bool(shape) and isinstance(shape[0], int) and shape[0] > 0

    def _widest_layer(self, feeds) -> int:
        """Largest per-sample activation, from one reference step on a single sample (cached per input shape)."""
        key = tuple((k, v.shape[1:]) for k, v in sorted(feeds.items()))
        if getattr(self, "_widest_key", None) != key:
            probe = run_reference(self._plan, feeds if self._fixed_batch() else {k: v[:1] for k, v in feeds.items()}, 1)
            self._widest = max([1] + [layer["neurons"] for layer in probe.stats["layers"]])
            self._widest_key = key
        return self._widest

def check_feeds(inputs: list[TensorInfo], input_feed) -> dict[str, np.ndarray]:
    """Validate a feed dict against the model's inputs: names, ranks, fixed dims, dtypes, NaN/Inf, batch."""
    if not isinstance(input_feed, dict):
        raise InputError(f"input_feed must be a dict of input name -> array, got {type(input_feed).__name__}")
    expected = {i.name: i for i in inputs}
    unknown = [k for k in input_feed if k not in expected]
    if unknown:
        raise InputError(f"unknown input {unknown[0]!r}; inputs: {', '.join(expected)}")
    missing = [k for k in expected if k not in input_feed]
    if missing:
        raise InputError(f"input {missing[0]!r} not given; inputs: {', '.join(expected)}")
    feeds = {name: check_array(input_feed[name], name, info) for name, info in expected.items()}
    batches = {name: arr.shape[0] for name, arr in feeds.items() if arr.ndim}
    if len(set(batches.values())) > 1:
        raise InputError(f"inputs disagree on the batch size: {batches}")
    return feeds


def check_array(value, name: str, info: TensorInfo) -> np.ndarray:
    """Validate one feed against the declared shape; cast safely to the declared dtype; refuse NaN/Inf."""
    arr = np.asarray(value)
    if arr.dtype == object:
        raise InputError(f"input {name!r}: object arrays are not accepted; give a numeric array")
    if arr.ndim != len(info.shape):
        raise InputError(f"input {name!r}: expected rank {len(info.shape)} shape {_fmt(info.shape)}, got shape {arr.shape}")
    for axis, (want, got) in enumerate(zip(info.shape, arr.shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise InputError(f"input {name!r}: expected shape {_fmt(info.shape)}, got {arr.shape} (axis {axis})")
    if arr.size == 0:
        raise InputError(f"input {name!r} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InputError(f"input {name!r}: dtype {arr.dtype} cannot be used as {np.dtype(info.dtype).name}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"input {name!r} has {int(bad.sum())} NaN/Inf values (first at index {first}); clean the data first")
    return np.ascontiguousarray(arr, dtype=info.dtype)


def _check_threads(threads) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    return min(int(threads), numba.config.NUMBA_NUM_THREADS)


_ORT_TYPE_NAMES = {"float32": "float", "float64": "double"}


def _node_arg(info: TensorInfo) -> NodeArg:
    name = np.dtype(info.dtype).name
    return NodeArg(info.name, list(info.shape), f"tensor({_ORT_TYPE_NAMES.get(name, name)})")


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _summed_stats(parts: list[RunResult]) -> dict:
    """The first part's stats with per-layer spikes, SynOps and times, and per-node times, summed over all parts."""
    stats = dict(parts[0].stats)
    stats["layers"] = [dict(layer) for layer in parts[0].stats["layers"]]
    stats["node_time_s"] = dict(parts[0].stats["node_time_s"])
    for p in parts[1:]:
        for acc, layer in zip(stats["layers"], p.stats["layers"]):
            for key in ("spikes", "synops", "time_s"):
                acc[key] += layer[key]
        for k, v in p.stats["node_time_s"].items():
            stats["node_time_s"][k] = stats["node_time_s"].get(k, 0.0) + v
    return stats


def _join_blocks(parts: list[RunResult], trace: bool, requested: int) -> RunResult:
    """One result from consecutive blocks of steps of the same samples (early stop)."""
    stats = _summed_stats(parts)
    used = sum(p.timesteps for p in parts)
    stats.update(timesteps=used, steps_used=used, timesteps_requested=requested, time_s=sum(p.stats["time_s"] for p in parts))
    traced = [np.concatenate([p.trace[i] for p in parts]) for i in range(len(parts[0].trace))] if trace else None
    return RunResult(parts[-1].outputs, traced, with_totals(stats), used)


def _concat(parts: list[RunResult]) -> RunResult:
    outputs = [np.concatenate([p.outputs[i] for p in parts]) for i in range(len(parts[0].outputs))]
    trace = None
    if parts[0].trace is not None:
        rows = max(p.trace[0].shape[0] for p in parts)  # chunks that stopped early repeat their last readout
        trace = [np.concatenate([np.concatenate([p.trace[i], np.repeat(p.trace[i][-1:], rows - len(p.trace[i]), axis=0)])
                                 for p in parts], axis=1) for i in range(len(parts[0].trace))]
    stats = _summed_stats(parts)
    stats.update(batch=sum(p.stats["batch"] for p in parts), time_s=sum(p.stats["time_s"] for p in parts),
                 ann_macs=sum(p.stats["ann_macs"] for p in parts),
                 sample_steps=sum(p.stats["batch"] * p.stats["timesteps"] for p in parts))
    if "steps_used" in stats:
        stats["steps_used"] = max(p.stats["steps_used"] for p in parts)
        stats["timesteps"] = stats["steps_used"]
    return RunResult(outputs, trace, with_totals(stats), parts[0].timesteps)
