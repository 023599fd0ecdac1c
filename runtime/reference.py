"""The NumPy reference engine: the per-step equations of the SNN format, followed literally.

Step-major: at every time step t = 1..T the whole graph is evaluated once, neurons carry their membrane
from one step to the next, and graph outputs are averaged over the steps (rate readout, optionally delayed:
runtime/readout.py). Slow and simple;
it is the oracle every faster engine is tested against: with the float64 ops (``reference_ops.OPS``, the default)
it is the float64 reference, with ``FLOAT32_OPS`` the float32 oracle of the event kernels' canonical order.
"""
from __future__ import annotations

import time

import numpy as np

from .format import MAXPOOL_OP, NeuronParams
from .plan import Plan, evaluating
from .readout import OutputSums, add_block, readout
from .reference_ops import OPS, spike_max_pool_step
from .stats import RunResult, layer_stats


def channel_view(values: np.ndarray, ndim: int) -> np.ndarray:
    """Shape per-channel parameters (C,) to broadcast over an (N, C, ...) tensor; (1,) stays a scalar."""
    if values.size == 1:
        return values.reshape(())
    return values.reshape((1, values.size) + (1,) * (ndim - 2))


def if_step(x: np.ndarray, v: np.ndarray, p: NeuronParams, net: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One integrate-and-fire step: (current, membrane, net spike count) -> (spikes, membrane, net spike count).
    ``net`` (positive minus negative spikes so far) is only kept for signed neurons; None otherwise."""
    v_th, shift = channel_view(p.v_th, x.ndim), channel_view(p.shift, x.ndim)
    v = v + (x + shift)
    if p.burst > 1:  # up to ``burst`` spikes, one subtraction each, then s = k * v_th
        k = np.zeros(x.shape, np.int32)
        for _ in range(p.burst):
            fired = v >= v_th
            v = np.where(fired, v - v_th, v).astype(np.float32)
            k += fired
        return (k.astype(np.float32) * v_th).astype(np.float32), v, net
    fired = v >= v_th
    spikes = np.where(fired, v_th, np.float32(0.0)).astype(np.float32)
    if p.reset == "subtract":
        v = np.where(fired, v - v_th, v)
    else:
        v = np.where(fired, np.float32(0.0), v)
    if p.signed:
        net = np.zeros(x.shape, np.int32) if net is None else net
        back = ~fired & (v < 0) & (net > 0)
        spikes = np.where(back, -v_th, spikes).astype(np.float32)
        v = np.where(back, v + v_th, v)
        net = net + fired.astype(np.int32) - back.astype(np.int32)
    return spikes, v.astype(np.float32), net


def initial_membrane(x: np.ndarray, p: NeuronParams) -> np.ndarray:
    return np.broadcast_to(channel_view(p.v_init, x.ndim), x.shape).astype(np.float32)


def run_reference(plan: Plan, feeds: dict[str, np.ndarray], timesteps: int, trace: bool = False, ops: dict = OPS) -> RunResult:
    """Simulate ``timesteps`` steps; return the rate readout (and the readout after every step if ``trace``)."""
    membrane: dict[str, np.ndarray] = {}
    net: dict[str, np.ndarray | None] = {}  # signed neurons' net spike counts
    spike_counts = {s.name: np.zeros(timesteps, np.int64) for s in plan.neurons}
    sums = {o.name: OutputSums() for o in plan.outputs}
    traces = {o.name: [] for o in plan.outputs} if trace else None
    shapes: dict[str, tuple] = {}
    start = time.perf_counter()
    for t in range(timesteps):
        env = dict(plan.constants)
        env.update(feeds)
        for step in plan.steps:
            with evaluating(step):
                args = [env[name] if name else None for name in step.inputs]
                if step.neuron is not None:
                    v = membrane.get(step.name)
                    if v is None:
                        v = initial_membrane(args[0], step.neuron)
                    spikes, membrane[step.name], net[step.name] = if_step(args[0], v, step.neuron, net.get(step.name))
                    spike_counts[step.name][t] = int(np.count_nonzero(spikes))
                    results = [spikes]
                elif step.op == MAXPOOL_OP:  # stateful: running totals of its inputs, like a membrane
                    totals = membrane.get(step.name)
                    if totals is None:
                        totals = np.zeros(args[0].shape, np.float64)
                    pooled, membrane[step.name] = spike_max_pool_step(args[0], totals, step.attrs)
                    results = [pooled]
                else:
                    results = ops[step.op](args, step.attrs)
                for name, value in zip(step.outputs, results):
                    env[name] = value
        for name in sums:
            sums[name], now, _ = add_block(np.asarray(env[name])[None], sums[name], plan.readout_start, False)
            if trace:
                traces[name].append(now)
        if t == 0:
            shapes = {k: np.shape(v) for k, v in env.items()}
    elapsed = time.perf_counter() - start
    outputs = [readout(sums[o.name], plan.readout_start) for o in plan.outputs]
    traced = [np.stack(traces[o.name]) for o in plan.outputs] if trace else None
    stats = layer_stats(plan, spike_counts, shapes, timesteps, {}, elapsed)
    return RunResult(outputs, traced, stats, timesteps)
