"""Per-layer spike statistics: spikes, firing rate, synaptic operations (SynOps), dense MAC equivalent and time.

SynOps of a neuron layer = its spikes x its mean fan-out, where the fan-out of one input element of a linear
layer is that layer's dense multiply-accumulates divided by its number of input elements; copies (Flatten,
Reshape, Concat, ...) pass spikes through unchanged, so the fan-out looks through them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .plan import PASS_THROUGH, Plan, Step

# Energy per operation at 45 nm (Horowitz, ISSCC 2014), the figures SNN papers conventionally use.
PJ_PER_AC = 0.9
PJ_PER_MAC = 4.6


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    trace: list[np.ndarray] | None
    stats: dict
    timesteps: int
    extra: dict = field(default_factory=dict)


def numel(shape) -> int:
    """Elements of an array of ``shape`` (0 for None); plain integers: NumPy's prod costs microseconds per call."""
    return math.prod(int(d) for d in shape) if shape is not None else 0


def dense_macs(step: Step, shapes: dict[str, tuple]) -> int:
    """Multiply-accumulates of one evaluation of a linear node on the whole batch (one time step)."""
    out = shapes.get(step.outputs[0])
    if out is None:
        return 0
    if step.op == "Conv":
        return numel(out) * numel(shapes[step.inputs[1]][1:])
    if step.op == "Gemm":
        a = shapes[step.inputs[0]]
        return numel(out) * (a[0] if step.attrs.get("transA", 0) else a[-1])
    if step.op == "MatMul":
        return numel(out) * shapes[step.inputs[0]][-1]
    if step.op == "AveragePool":
        return numel(out) * numel(step.attrs["kernel_shape"])
    if step.op in ("GlobalAveragePool", "ReduceMean"):
        return numel(shapes[step.inputs[0]])
    return numel(out)


def fan_out(plan: Plan, tensor: str, shapes: dict[str, tuple], depth: int = 0) -> float:
    """Mean number of synaptic operations one non-zero element of ``tensor`` causes downstream."""
    n_in = numel(shapes.get(tensor))
    total = 0.0
    for consumer in plan.consumers.get(tensor, []):
        if consumer.neuron is not None:
            total += 1.0
        elif consumer.op in PASS_THROUGH and depth < 64:
            total += fan_out(plan, consumer.outputs[0], shapes, depth + 1)
        elif consumer.op in ("Shape",):
            continue
        elif n_in:
            total += dense_macs(consumer, shapes) / n_in
    return total


@dataclass(frozen=True)
class StatsLayout:
    """What the stats take from the shapes alone: the ANN's MACs, the batch, and per neuron layer its neurons and
    fan-out. The same for every run on inputs of one shape, so a session keeps it (``layout_key``)."""
    ann_macs: int
    batch: int
    layers: tuple[tuple[str, int, float], ...]   # (layer, neurons, fan-out)


def layout_key(shapes: dict[str, tuple]) -> tuple:
    return tuple(sorted(shapes.items()))


def stats_layout(plan: Plan, shapes: dict[str, tuple]) -> StatsLayout:
    layers, dense_total = [], 0
    for step in plan.steps:
        if step.neuron is None:
            if step.op not in PASS_THROUGH and step.op != "Shape":
                dense_total += dense_macs(step, shapes)
            continue
        shape = shapes.get(step.outputs[0], ())
        layers.append((step.name, numel(shape[1:]) if len(shape) > 1 else 1, fan_out(plan, step.outputs[0], shapes)))
    batch = max((shapes.get(i.name, (1,))[0] for i in plan.inputs), default=1) or 1
    return StatsLayout(dense_total, batch, tuple(layers))


def layer_stats(plan: Plan, spike_counts: dict[str, np.ndarray], shapes: dict[str, tuple], timesteps: int,
                times: dict[str, float], total_time: float, layout: StatsLayout | None = None) -> dict:
    """Stats of one run; ``spike_counts`` holds per-step spike totals of each neuron layer over the batch;
    ``layout``: ``stats_layout(plan, shapes)`` if the caller kept it."""
    layout = layout or stats_layout(plan, shapes)
    layers = []
    for name, neurons, fan in layout.layers:
        spikes = int(spike_counts[name].sum())
        layers.append({"layer": name, "neurons": neurons, "spikes": spikes, "fan_out": fan,
                       "synops": spikes * fan, "time_s": times.get(name, 0.0)})
    return with_totals({"timesteps": timesteps, "batch": layout.batch, "layers": layers, "ann_macs": layout.ann_macs,
                        "time_s": total_time, "node_time_s": dict(times)})


def with_totals(stats: dict) -> dict:
    """Fill the totals and the energy estimate from the per-layer rows (also after merging chunks)."""
    layers = stats["layers"]
    sample_steps = stats.get("sample_steps", stats["batch"] * stats["timesteps"])
    for layer in layers:
        layer["firing_rate"] = layer["spikes"] / max(1, layer["neurons"] * sample_steps)
        # what a dense (clock-driven) simulation does for the same synapses: every neuron, every step
        layer["dense_macs"] = layer["neurons"] * sample_steps * layer.get("fan_out", 0.0)
    stats["total_spikes"] = sum(layer["spikes"] for layer in layers)
    stats["total_synops"] = sum(layer["synops"] for layer in layers)
    stats["total_dense_macs"] = sum(layer["dense_macs"] for layer in layers)
    stats["energy_estimate_uj"] = {
        "note": "estimate only: 45 nm figures, 0.9 pJ per accumulate (SNN), 4.6 pJ per MAC (ANN)",
        "snn": stats["total_synops"] * PJ_PER_AC * 1e-6,
        "ann": stats["ann_macs"] * PJ_PER_MAC * 1e-6,
    }
    return stats
