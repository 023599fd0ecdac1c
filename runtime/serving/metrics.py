"""Prometheus metrics of one server: requests, latency, batch sizes, and the SNN's spikes, SynOps and energy.

Each server has its own registry (tests and Ray replicas may hold several servers in one process); ``/metrics``
serves it in Prometheus' text format. Totals are counters, so a dashboard takes rates, e.g. spikes per
inference = ``rate(onnx2snn_spikes_total[1m]) / rate(onnx2snn_inferences_total[1m])``; the ``*_per_inference``
gauges hold the same figures for the last batch run.
"""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("onnx2snn_requests", "Inference requests by model and HTTP status", ["model", "code"], registry=registry)
        self.latency = Histogram("onnx2snn_request_duration_seconds", "Inference request latency, body received to response ready",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram("onnx2snn_queue_seconds", "Time a request waited for its batch to start", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("onnx2snn_batch_size", "Samples per session run (dynamic batching)", ["model"],
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.run_time = Histogram("onnx2snn_run_seconds", "Session run time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.inferences = Counter("onnx2snn_inferences", "Samples inferred", ["model"], registry=registry)
        self.spikes = Counter("onnx2snn_spikes", "Spikes over all neuron layers and steps", ["model"], registry=registry)
        self.synops = Counter("onnx2snn_synops", "Synaptic operations (spikes x fan-out)", ["model"], registry=registry)
        self.energy = Counter("onnx2snn_energy_microjoules", "Estimated SNN energy at 45 nm (0.9 pJ per accumulate; an estimate, "
                              "not a measurement)", ["model"], registry=registry)
        self.per_inference = {key: Gauge(f"onnx2snn_{key}_per_inference", f"{text} per sample in the last batch", ["model"], registry=registry)
                              for key, text in (("spikes", "Spikes"), ("synops", "SynOps"), ("energy_microjoules", "Estimated energy (uJ)"))}
        self.queue_depth = Gauge("onnx2snn_queue_depth", "Requests waiting for a batch", ["model"], registry=registry)

    def record_run(self, model: str, jobs, stats: dict, seconds: float) -> None:
        started = time.perf_counter() - seconds
        samples = sum(j.samples for j in jobs)
        self.batch_size.labels(model).observe(samples)
        self.run_time.labels(model).observe(seconds)
        for job in jobs:
            self.queue_wait.labels(model).observe(max(0.0, started - job.queued_at))
        figures = {"spikes": stats["total_spikes"], "synops": stats["total_synops"],
                   "energy_microjoules": stats["energy_estimate_uj"]["snn"]}
        self.inferences.labels(model).inc(samples)
        self.spikes.labels(model).inc(figures["spikes"])
        self.synops.labels(model).inc(figures["synops"])
        self.energy.labels(model).inc(figures["energy_microjoules"])
        for key, value in figures.items():
            self.per_inference[key].labels(model).set(value / max(1, samples))

    def text(self) -> bytes:
        return generate_latest(self.registry)
