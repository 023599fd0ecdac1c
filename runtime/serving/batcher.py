"""Dynamic batching: concurrent requests for one model become one ``InferenceSession.run``, and each caller gets
its own rows back.

One worker thread per model takes the oldest waiting job, adds the waiting jobs that can share its run (same T,
no early stop, no spike counts asked for) in arrival order until ``max_batch`` samples, and runs the batch once it
is full or ``max_delay_s`` after the later of the oldest job's arrival and the end of the previous run (as
Triton's dynamic batcher waits for a fuller batch). The wait after a run matters under load: the callers answered
by that run send their next requests within a millisecond or two, and waiting for them merges them with the
callers that queued during the run; without it N clients settle into two cohorts that alternate in batches of N/2.
A lone request waits ``max_delay_s`` (0: never).

Why the exceptions: without early stop a sample's outputs do not depend on the other samples of its batch (the
engine adds each output in a fixed order; see docs/runtime.md), so batched rows equal a run of the request alone.
Early stop is decided for a whole chunk, and spike counts are totals over a run, so those requests run by
themselves: their response is exactly what ``session.run`` gives on their inputs.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..session import InferenceSession

log = logging.getLogger("onnx2snn.serve")


@dataclass(eq=False)   # jobs are told apart by identity (their arrays have no truth value)
class Job:
    feeds: dict[str, np.ndarray]   # already checked against the model's inputs (``check_feeds``)
    timesteps: int
    early_stop: int | None = None
    alone: bool = False            # run as a batch of its own (spike counts asked for)
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def samples(self) -> int:
        return len(next(iter(self.feeds.values())))

    def shares_with(self, other: "Job") -> bool:
        return not (self.alone or other.alone or self.early_stop or other.early_stop) and self.timesteps == other.timesteps


@dataclass
class Result:
    """What one job gets back: its rows of every output, the stats of its run, and that run's batch size."""
    outputs: list[np.ndarray]
    stats: dict
    batch_size: int


class DynamicBatcher:
    """Queue of jobs for one session, run by one thread; ``engine_lock`` (shared by the server's models)
    keeps two models from running Numba's parallel loops at once, which not every threading layer allows."""

    def __init__(self, session: InferenceSession, max_batch: int, max_delay_s: float,
                 engine_lock: threading.Lock | None = None, on_run=None, name: str = "model"):
        self.session, self.max_batch, self.max_delay_s = session, max_batch, max_delay_s
        self._engine_lock = engine_lock or threading.Lock()
        self._on_run = on_run          # called with (jobs, stats, seconds) after each successful run
        self._queue: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._free_since = 0.0         # when the previous run ended
        self._thread = threading.Thread(target=self._loop, name=f"onnx2snn-batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(job)
            self._wake.notify()
        return job.future

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Finish the jobs already queued, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - never let the thread die with callers waiting
                log.exception("batcher of %s failed", self._thread.name)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            self._free_since = time.perf_counter()

    def _next_batch(self) -> list[Job] | None:
        with self._wake:
            while not self._queue:
                if self._closed:
                    return None
                self._wake.wait()
            first = self._queue.popleft()
            batch, samples = [first], first.samples
            deadline = max(first.queued_at, self._free_since) + self.max_delay_s
            while not first.alone and not first.early_stop and samples < self.max_batch:
                for job in list(self._queue):
                    if job.shares_with(first) and samples + job.samples <= self.max_batch:
                        self._queue.remove(job)
                        batch.append(job)
                        samples += job.samples
                remaining = deadline - time.perf_counter()
                if samples >= self.max_batch or remaining <= 0 or self._closed:
                    break
                self._wake.wait(remaining)
            return batch

    def _run(self, batch: list[Job]) -> None:
        try:
            results = self._simulate(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the callers, who answer 4xx or 500
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("a batch of %d requests failed (%s: %s); running them one by one", len(batch), type(exc).__name__, exc)
            for job in batch:  # only the request that caused it fails
                self._run([job])
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)

    def _simulate(self, batch: list[Job]) -> list[Result]:
        first = batch[0]
        feeds = first.feeds if len(batch) == 1 else {k: np.concatenate([j.feeds[k] for j in batch]) for k in first.feeds}
        start = time.perf_counter()
        with self._engine_lock:
            outputs = self.session.run(None, feeds, timesteps=first.timesteps, early_stop=first.early_stop)
            stats = self.session.stats
        seconds = time.perf_counter() - start
        if self._on_run is not None:
            self._on_run(batch, stats, seconds)
        size = len(outputs[0]) if outputs else first.samples
        bounds = np.cumsum([0] + [j.samples for j in batch])
        return [Result([o[a:b] for o in outputs], stats, size) for a, b in zip(bounds, bounds[1:])]
