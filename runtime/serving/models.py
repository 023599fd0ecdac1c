"""A model being served: its session, its batcher, its v2 metadata, and the checks that turn a request into a job.

Every check runs on the request's own thread before the job is queued, so a bad request is refused with a 4xx
naming what was wrong and never reaches, or spoils, a batch.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..session import InferenceSession, check_feeds
from .batcher import DynamicBatcher, Job, Result
from .codec import RequestError, datatype_of, decode_inputs, request_parameters, requested_outputs

SPIKE_COUNTS = "spike_counts"   # extra output, on request: spikes per neuron layer over the request's samples and steps
REQUEST_PARAMETERS = {"timesteps", "early_stop", "binary_data_output"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_META = "onnx2snn."


@dataclass(frozen=True)
class Limits:
    """What one server accepts: batching window, the largest T a request may ask for, the body size."""
    max_batch: int = 64
    max_delay_ms: float = 5.0
    max_timesteps: int = 1024
    max_body_bytes: int = 64 << 20

    def __post_init__(self):
        for name in ("max_batch", "max_timesteps", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_delay_ms, bool) or not isinstance(self.max_delay_ms, (int, float)) or not 0 <= self.max_delay_ms <= 10_000:
            raise InputError(f"max_delay_ms must be a number of milliseconds from 0 to 10000, got {self.max_delay_ms!r}")


def model_name(path: str | os.PathLike) -> str:
    """``models/mnist_vgg.snn.onnx`` -> ``mnist_vgg``."""
    base = os.path.basename(os.fspath(path))
    for suffix in (".snn.onnx", ".onnx"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[:-len(suffix)]
    return base


def check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"model name {name!r} must be 1-128 letters, digits, '_', '.' or '-' (it is part of the URL); "
                         "give one with --name")
    return name


@dataclass
class Prepared:
    job: Job
    outputs: list[tuple[str, bool]]   # (name, as binary?) in the order asked for
    request_id: str | None


class ServedModel:
    """One SNN file behind the protocol. ``timesteps`` overrides the file's T as the default of requests."""

    def __init__(self, source, name: str | None = None, timesteps: int | None = None, threads: int | None = None,
                 limits: Limits = Limits(), engine_lock: threading.Lock | None = None, on_run=None, warm_up: bool = True):
        if name is None and isinstance(source, (str, os.PathLike)):
            name = model_name(source)
        self.name, self.limits = check_name(name), limits
        self.session = InferenceSession(source, threads=threads)
        self.timesteps = timesteps if timesteps is not None else self.session.default_timesteps
        if self.timesteps is not None:
            self.timesteps = self._steps(self.timesteps, "timesteps")
        self._inputs = self.session._plan.inputs
        self.input_types = {i.name: datatype_of(i.dtype) for i in self._inputs}
        self.output_names = [o.name for o in self.session._plan.outputs]
        self.layers = [step.name for step in self.session._plan.neurons]
        self._output_shapes = {o.name: [_dim(d) for d in o.shape] for o in self.session._plan.outputs}
        self._output_types = {o.name: datatype_of(o.dtype) for o in self.session._plan.outputs}
        if warm_up:
            self._warm_up()
        self.batcher = DynamicBatcher(self.session, limits.max_batch, limits.max_delay_ms / 1000, engine_lock,
                                      (lambda jobs, stats, seconds: on_run(self.name, jobs, stats, seconds)) if on_run else None, name)

    def _warm_up(self) -> None:
        """Compile the kernels (Numba JIT) before the server says it is ready, on one all-zero and one all-one
        sample (both paths of the engine), and learn the outputs' shapes if the file does not declare them."""
        if any(not isinstance(d, int) or d < 1 for i in self._inputs for d in i.shape[1:]):
            return  # symbolic sample dimensions: nothing to build a sample from
        feeds = {i.name: np.stack([np.zeros(i.shape[1:], i.dtype), np.ones(i.shape[1:], i.dtype)]) for i in self._inputs}
        outputs = self.session.run(None, feeds, timesteps=2)
        for name, value in zip(self.output_names, outputs):
            self._output_shapes[name] = [-1] + list(value.shape[1:])
            self._output_types[name] = datatype_of(value.dtype)

    def metadata(self) -> dict:
        """The v2 model metadata, plus ``parameters``: the SNN's T, threshold method and what a request may set."""
        meta = self.session.metadata
        params = {key[len(_META):]: value for key, value in meta.items() if key.startswith(_META)}
        params.update(timesteps=self.timesteps, max_timesteps=self.limits.max_timesteps, max_batch=self.limits.max_batch,
                      request_parameters=sorted(REQUEST_PARAMETERS), extra_outputs=[SPIKE_COUNTS], spike_layers=self.layers)
        return {"name": self.name, "versions": ["1"], "platform": "onnx2snn",
                "inputs": [{"name": i.name, "datatype": self.input_types[i.name], "shape": [_dim(d) for d in i.shape]} for i in self._inputs],
                "outputs": [{"name": n, "datatype": self._output_types[n], "shape": self._output_shapes[n]} for n in self.output_names],
                "parameters": params}

    def ready(self) -> bool:
        return self.batcher.alive()

    def prepare(self, request: dict, binary: memoryview) -> Prepared:
        """Check a decoded request and build its job; raise RequestError (4xx) naming what was wrong."""
        params = request_parameters(request, REQUEST_PARAMETERS)
        steps = self._steps(params["timesteps"], "timesteps") if "timesteps" in params else self.timesteps
        if steps is None:
            raise RequestError(f"model {self.name!r} records no T; give parameters.timesteps")
        early_stop = self._steps(params["early_stop"], "early_stop") if params.get("early_stop") is not None else None
        binary_out = params.get("binary_data_output", False)
        if not isinstance(binary_out, bool):
            raise RequestError(f"binary_data_output must be true or false, got {binary_out!r}")
        request_id = request.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise RequestError(f"'id' must be a string, got {request_id!r}")
        outputs = requested_outputs(request, self.output_names + [SPIKE_COUNTS], self.output_names, binary_out)
        arrays = decode_inputs(request, binary, self.input_types)
        try:
            feeds = check_feeds(self._inputs, arrays)
        except InputError as exc:
            raise RequestError(str(exc)) from None
        alone = any(name == SPIKE_COUNTS for name, _ in outputs)
        return Prepared(Job(feeds, steps, early_stop, alone), outputs, request_id)

    def respond(self, prepared: Prepared, result: Result) -> tuple[dict, list[tuple[str, np.ndarray, bool]]]:
        """The response's fields and its (name, array, binary?) outputs."""
        values = dict(zip(self.output_names, result.outputs))
        stats = result.stats
        params = {"timesteps": prepared.job.timesteps, "steps_used": int(stats.get("steps_used", prepared.job.timesteps)),
                  "batch_size": result.batch_size}
        if prepared.job.alone:  # the run held this request only: its stats are the request's
            values[SPIKE_COUNTS] = np.array([layer["spikes"] for layer in stats["layers"]], dtype=np.int64)
            params.update(synops=float(stats["total_synops"]), energy_estimate_uj=float(stats["energy_estimate_uj"]["snn"]))
        response = {"model_name": self.name, "model_version": "1", "parameters": params}
        if prepared.request_id is not None:
            response["id"] = prepared.request_id
        return response, [(name, values[name], binary) for name, binary in prepared.outputs]

    def _steps(self, value, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise RequestError(f"{what} must be an integer from 1 to {self.limits.max_timesteps}, got {value!r}")
        if not 1 <= value <= self.limits.max_timesteps:
            raise RequestError(f"{what} must be from 1 to {self.limits.max_timesteps} (the server's limit, --max-timesteps), got {value}")
        return int(value)

    def close(self) -> None:
        self.batcher.close()


def _dim(d) -> int:
    return d if isinstance(d, int) and d > 0 else -1


def load_models(paths: list, names: list[str] | None = None, timesteps: int | None = None, threads: int | None = None,
                limits: Limits = Limits(), on_run=None) -> dict[str, ServedModel]:
    """One ``ServedModel`` per file, named after the file or by ``names``; they share one engine lock."""
    if names is not None and len(names) != len(paths):
        raise InputError(f"{len(names)} names for {len(paths)} models; give one --name per model, in order")
    lock, models = threading.Lock(), {}
    try:
        for k, path in enumerate(paths):
            model = ServedModel(path, names[k] if names else None, timesteps, threads, limits, lock, on_run)
            if model.name in models:
                model.close()
                raise InputError(f"two models are named {model.name!r}; give distinct names with --name")
            models[model.name] = model
    except Exception:
        for model in models.values():
            model.close()
        raise
    return models
