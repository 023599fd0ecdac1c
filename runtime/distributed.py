"""Batch inference on a Ray cluster: one ``InferenceSession`` per actor, batches mapped in parallel, outputs in
input order and bit-identical to a local run.

Ray is optional (the ``[ray]`` extra): it is imported only when a cluster is requested, never by ``import runtime``.
Every job is cut on the local session's own chunk boundaries, so each worker simulates exactly the chunks a local
run would (the engine's per-layer path choice and early stop are decided per chunk) and the outputs match bit for bit.
"""
from __future__ import annotations

import os
import re
import socket
import sys

import numpy as np

from . import external
from .errors import InputError, Onnx2SnnError
from .format import load_snn
from .session import DEFAULT_CHUNK_BYTES, InferenceSession, _concat, check_feeds
from .stats import RunResult

SHARDS_PER_WORKER = 4   # a few shards per worker keep the tail short when workers differ in speed
ACTOR_START_S = 60      # how long to wait for CPUs on a busy cluster before giving up
_ADDRESS = re.compile(r"^(auto|[A-Za-z0-9_.\-]+:\d{1,5})$")


def import_ray():
    """Ray, or a one-line InputError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise InputError("distributed runs need Ray, which is not installed; pip install 'onnx2snn[ray]'") from None
    return ray


class _Worker:
    """A Ray actor: keeps the session of the last model it was given, so a model is loaded once per actor."""

    def __init__(self, threads: int, engine: str, chunk_bytes: int, precision: str | None = None):
        self.options = {"threads": threads, "engine": engine, "chunk_bytes": chunk_bytes, "precision": precision}
        self.key, self.session = None, None

    def run(self, tag, key: str, model_ref: list, feeds: dict, steps: int, early_stop: int | None):
        """``model_ref`` is wrapped in a list so that Ray fetches the model only when this actor lacks it."""
        if key != self.key:
            import ray
            self.session, self.key = InferenceSession(external.unpack(ray.get(model_ref[0])), **self.options), key
        outputs = self.session.run(None, feeds, timesteps=steps, early_stop=early_stop)
        return tag, outputs, self.session.stats


class RayCluster:
    """Actors on a Ray cluster (a local one started here when ``address`` is None) that run SNN jobs.

    ``workers`` actors of ``threads_per_worker`` CPUs each (default: every CPU of the cluster). A local cluster
    is shut down by ``close()``; a cluster we only connected to is left running.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 engine: str = "auto", chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool | None = None,
                 precision: str | None = None):
        for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if address is not None and not _ADDRESS.match(address):
            raise InputError(f"Ray address must be HOST:PORT (the head node's GCS, port 6379 by default) or 'auto', got {address!r}")
        ray = import_ray()
        self._ray, self.progress = ray, progress
        self.engine, self.chunk_bytes, self.precision = engine, chunk_bytes, precision
        self._started = False
        if ray.is_initialized():
            pass  # reuse the caller's Ray (tests, notebooks); they shut it down
        elif address is None:
            cpus = (workers or max(1, (os.cpu_count() or 1) // threads_per_worker)) * threads_per_worker
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            self._started = True
        else:
            connect(ray, address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        workers = workers or max(1, cpus // threads_per_worker)
        if workers * threads_per_worker > cpus:
            self.close()
            raise InputError(f"{workers} workers x {threads_per_worker} threads need {workers * threads_per_worker} CPUs; "
                             f"the Ray cluster has {cpus}")
        actor = ray.remote(num_cpus=threads_per_worker)(_Worker)
        self.workers, self.threads_per_worker = workers, threads_per_worker
        self._actors = [actor.remote(threads_per_worker, engine, chunk_bytes, precision) for _ in range(workers)]
        ready, _ = ray.wait([a.__ray_ready__.remote() for a in self._actors], num_returns=workers, timeout=ACTOR_START_S)
        if len(ready) < workers:  # otherwise the jobs would wait for CPUs that other Ray jobs hold
            free = int(ray.available_resources().get("CPU", 0))
            self.close()
            raise InputError(f"only {len(ready)} of {workers} Ray workers started within {ACTOR_START_S} s; "
                             f"{free} of the cluster's {cpus} CPUs are free")

    def session(self, model, threads: int | None = None) -> "DistributedSession":
        """Same call as ``InferenceSession(model, threads=...)``, so code written for one takes the other."""
        if threads is not None and threads != self.threads_per_worker:
            raise InputError(f"threads per worker are set when the cluster starts ({self.threads_per_worker}), got {threads}")
        return DistributedSession(self, model)

    def run_many(self, jobs: list[tuple], early_stop: int | None = None) -> list[RunResult]:
        """Run (session, feeds, steps) jobs: all their shards are queued at once, so workers never wait on one job."""
        ray = self._ray
        from ray.util import ActorPool
        tasks, parts = [], []
        for j, (session, feeds, steps) in enumerate(jobs):
            bounds = _shard_bounds(session._local, feeds, steps, early_stop, self.workers)
            parts.append([None] * (len(bounds) - 1))
            tasks += [(j, s, session, {k: v[a:b] for k, v in feeds.items()}, steps) for s, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        results = ActorPool(self._actors).map_unordered(
            lambda actor, t: actor.run.remote(t[:2], t[2].key, [t[2].ref], t[3], t[4], early_stop), tasks)
        from tqdm.auto import tqdm
        enabled = self.progress if self.progress is not None else sys.stderr.isatty()
        total = sum(len(next(iter(t[3].values()))) for t in tasks)
        with tqdm(total=total, desc="ray", unit="sample", disable=not enabled, leave=False, file=sys.stderr) as bar:
            try:
                for (j, s), outputs, stats in results:
                    parts[j][s] = RunResult(outputs, None, stats, jobs[j][2])
                    bar.update(len(outputs[0]))
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, Onnx2SnnError):
                    raise exc.cause from None
                raise
        return [p[0] if len(p) == 1 else _concat(p) for p in parts]

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            self._ray.kill(actor)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DistributedSession:
    """``InferenceSession.run`` on a ``RayCluster``: same inputs, outputs, errors and merged ``stats``."""

    def __init__(self, cluster: RayCluster, model):
        model = load_snn(model)
        self._local = InferenceSession(model, threads=1, engine=cluster.engine, chunk_bytes=cluster.chunk_bytes, precision=cluster.precision)
        self._cluster = cluster
        self.ref = cluster._ray.put(external.pack(model))  # a large model: its skeleton and weight arrays
        self.key = self.ref.hex()
        self.metadata = self._local.metadata
        self.stats: dict = {}

    @property
    def default_timesteps(self) -> int | None:
        return self._local.default_timesteps

    def get_inputs(self):
        return self._local.get_inputs()

    def get_outputs(self):
        return self._local.get_outputs()

    def run(self, output_names, input_feed, timesteps: int | None = None, early_stop: int | None = None) -> list[np.ndarray]:
        steps = timesteps if timesteps is not None else self.default_timesteps
        if steps is None:
            raise InputError("timesteps not given and the SNN file does not record them; pass timesteps=T")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InputError(f"timesteps must be a positive integer, got {steps!r}")
        if early_stop is not None and (isinstance(early_stop, bool) or not isinstance(early_stop, (int, np.integer)) or early_stop < 1):
            raise InputError(f"early_stop must be a positive integer (steps of a stable top-1), got {early_stop!r}")
        feeds = check_feeds(self._local._plan.inputs, input_feed)
        (result,) = self._cluster.run_many([(self, feeds, int(steps))], early_stop)
        self.stats = result.stats
        return self._local._select(output_names, result.outputs)


def _shard_bounds(session: InferenceSession, feeds: dict, steps: int, early_stop: int | None, workers: int) -> list[int]:
    """Shard edges on whole chunks of the local session (``chunk_size``), about SHARDS_PER_WORKER per worker."""
    n = next(iter(feeds.values())).shape[0] if feeds else 1
    chunk = session.chunk_size(feeds, steps, early_stop)
    chunks = -(-n // chunk)
    per_shard = max(1, -(-chunks // (workers * SHARDS_PER_WORKER))) * chunk
    return list(range(0, n, per_shard)) + [n]


def connect(ray, address: str) -> None:
    """``ray.init`` on an existing cluster, or a one-line InputError saying why it cannot be reached."""
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address!r}: {' '.join(str(exc).split())[:200]}") from None


def _check_reachable(address: str) -> None:
    """Fail in seconds on a bad address: ``ray.init`` itself retries an unreachable one for minutes."""
    if address == "auto":
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise InputError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one there with 'ray start --head'") from None
