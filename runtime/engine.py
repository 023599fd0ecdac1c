"""The Numba engine: layer-major, event-driven simulation of a feed-forward SNN graph.

The graph has no recurrence, so each node runs once for all T steps of the batch before the next node:
a value is either *static* (the same at every step, shape (N, ...): the analog input and everything computed
from it alone, computed once) or *dynamic* (shape (T, N, ...)). Neurons turn any current into dynamic spikes;
Conv and Gemm/MatMul on spikes scatter weights for the non-zero inputs only (kernels/). Every op means what it
means on one step; ops without a kernel run through the NumPy reference ops, per step when they must.
"""
from __future__ import annotations

import time

import numpy as np

from .kernels.conv import conv2d_events, tap_targets
from .kernels.dense import matmul_events
from .kernels.neuron import BLOCK, if_layer
from .kernels.pool import avg_pool2d
from .plan import Plan, Step
from .reference_ops import OPS, _spatial_pads, pool_geometry
from .spike_pool import spike_max_pool_handler
from .stats import RunResult, layer_stats

Value = tuple  # (array, dynamic)


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class KernelCache:
    """Weights rearranged for the kernels, prepared once per node and reused across runs."""

    def __init__(self):
        self._items: dict[str, tuple] = {}

    def get(self, key: tuple, make):
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = make()
        return item


def _neuron(step: Step, x: Value, timesteps: int) -> tuple[Value, np.ndarray]:
    arr, dyn = x
    shape = arr.shape[1:] if dyn else arr.shape
    m = _prod(shape)
    rows = np.ascontiguousarray(arr.reshape((timesteps if dyn else 1, m)), dtype=np.float32)
    p = step.neuron
    inner = _prod(shape[2:]) if len(shape) > 2 else 1
    spikes = np.empty((timesteps, m), np.float32)
    counts = np.zeros(((m + BLOCK - 1) // BLOCK, timesteps), np.int64)
    if_layer(rows, timesteps, *p.per_channel(), inner, p.reset == "subtract", spikes, counts)
    return (spikes.reshape((timesteps,) + shape), True), counts.sum(axis=0)


def _conv_weights(step: Step, w: np.ndarray, b: np.ndarray | None, in_shape: tuple):
    """Weight (Cg, KH, KW, O) and bias in float64, the tap tables, and the output size, for one input shape."""
    one_d = w.ndim == 3
    w4 = w[:, :, None, :] if one_d else w
    spatial = 1 if one_d else 2
    strides = list(step.attrs.get("strides", [1] * spatial))
    dilations = list(step.attrs.get("dilations", [1] * spatial))
    pads = _spatial_pads(step.attrs, in_shape[2:], tuple(w.shape[2:]), strides, dilations)
    if one_d:
        strides, dilations, pads = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
    h, wd = (1, in_shape[2]) if one_d else in_shape[2:]
    kh, kw = w4.shape[2:]
    ho = (h + pads[0] + pads[2] - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
    wo = (wd + pads[1] + pads[3] - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
    wt = np.ascontiguousarray(w4.transpose(1, 2, 3, 0), dtype=np.float64)
    bias = np.zeros(w.shape[0], np.float64) if b is None else b.astype(np.float64)
    rows = tap_targets(h, kh, strides[0], pads[0], dilations[0], ho)
    cols = tap_targets(wd, kw, strides[1], pads[1], dilations[1], wo)
    return wt, bias, rows, cols, (ho, wo)


def _conv(step: Step, args: list, cache: KernelCache, timesteps: int) -> Value | None:
    (x, dyn), w = args[0], args[1]
    if args[1][1] or (len(args) > 2 and args[2] is not None and args[2][1]) or x.ndim not in (4, 5):
        return None
    b = args[2][0] if len(args) > 2 and args[2] is not None else None
    wt, bias, rows, cols, (ho, wo) = cache.get((step.name, x.shape[2:]), lambda: _conv_weights(step, w[0], b, x.shape[1:]))
    xs = x.reshape((-1,) + x.shape[2:])
    if x.ndim == 4:
        xs = xs[:, :, None, :]
    out = np.empty((xs.shape[0], wt.shape[3], ho, wo), np.float32)
    conv2d_events(np.ascontiguousarray(xs, dtype=np.float32), wt, bias, rows, cols, int(step.attrs.get("group", 1)), out)
    if x.ndim == 4:
        out = out[:, :, 0, :]
    return out.reshape((timesteps, -1) + out.shape[1:]), True


def _matmul_weights(step: Step, args: list):
    """Weight (K, N) and bias (N,) in float64, rounded exactly as the reference Gemm/MatMul rounds them."""
    w = args[1][0]
    bias = np.zeros(w.shape[-1], np.float64)
    if step.op == "Gemm":
        if step.attrs.get("transB", 0):
            w = w.T
        w = np.float32(step.attrs.get("alpha", 1.0)) * w.astype(np.float32)
        c = args[2][0] if len(args) > 2 and args[2] is not None else None
        if c is not None:
            bias = np.broadcast_to((np.float32(step.attrs.get("beta", 1.0)) * c).astype(np.float64).reshape(-1), (w.shape[1],))
    return np.ascontiguousarray(w, dtype=np.float64), np.ascontiguousarray(bias)


def _matmul(step: Step, args: list, cache: KernelCache, timesteps: int) -> Value | None:
    (x, dyn) = args[0]
    w_val = args[1]
    if w_val[1] or w_val[0].ndim != 2:
        return None
    if step.op == "Gemm":
        if step.attrs.get("transA", 0) or x.ndim != 3:
            return None
        c = args[2] if len(args) > 2 else None
        n_out = w_val[0].shape[0] if step.attrs.get("transB", 0) else w_val[0].shape[1]
        if c is not None and (c[1] or c[0].size not in (1, n_out)):
            return None
    w, bias = cache.get((step.name,), lambda: _matmul_weights(step, args))
    rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
    out = np.empty((rows.shape[0], w.shape[1]), np.float32)
    matmul_events(rows, w, bias, out)
    return out.reshape(x.shape[:-1] + (w.shape[1],)), True


def _avg_pool(step: Step, args: list, cache: KernelCache, timesteps: int) -> Value | None:
    x = args[0][0]
    if x.ndim not in (4, 5):
        return None
    kernel, strides, pads, divisor = cache.get((step.name, x.shape[2:]), lambda: pool_geometry(step.attrs, x.shape[1:]))
    xs = x.reshape((-1,) + x.shape[2:])
    if x.ndim == 4:
        xs = xs[:, :, None, :]
    out = np.empty(xs.shape[:2] + divisor.shape, np.float32)
    geometry = np.array(kernel + strides + pads[:2], np.int64)
    avg_pool2d(np.ascontiguousarray(xs, dtype=np.float32), geometry, divisor, out)
    if x.ndim == 4:
        out = out[:, :, 0, :]
    return out.reshape((timesteps, -1) + out.shape[1:]), True


def _elementwise(step: Step, args: list, cache, timesteps: int) -> Value | None:
    step_rank = next(a[0].ndim - 1 for a in args if a[1])
    if any(not dyn and arr.ndim > step_rank for arr, dyn in args):
        return None
    return OPS[step.op]([a[0] for a in args], step.attrs)[0], True


def _merged_batch(step: Step, args: list, cache, timesteps: int) -> Value | None:
    """Ops that treat every sample alike: run once on the (T*N, ...) batch."""
    x = args[0][0]
    if any(a is not None and a[1] for a in args[1:]):
        return None
    axes = step.attrs.get("axes")
    if step.op == "ReduceMean" and (axes is None or any(int(a) % (x.ndim - 1) == 0 for a in axes)):
        return None
    if step.op == "Flatten" and int(step.attrs.get("axis", 1)) % (x.ndim - 1) == 0:
        return None
    merged = x.reshape((-1,) + x.shape[2:])
    out = OPS[step.op]([merged] + [a[0] if a is not None else None for a in args[1:]], step.attrs)[0]
    return out.reshape((timesteps, -1) + out.shape[1:]), True


def _reshape_like(step: Step, args: list, cache, timesteps: int) -> Value | None:
    """Reshape, Squeeze, Unsqueeze: the per-step result shape applied to the whole (T, ...) array."""
    x = args[0][0]
    if any(a is not None and a[1] for a in args[1:]):
        return None
    one = OPS[step.op]([x[0]] + [a[0] if a is not None else None for a in args[1:]], step.attrs)[0]
    return x.reshape((timesteps,) + one.shape), True


def _transpose(step: Step, args: list, cache, timesteps: int) -> Value | None:
    x = args[0][0]
    perm = step.attrs.get("perm", list(range(x.ndim - 1))[::-1])
    return np.ascontiguousarray(x.transpose([0] + [p + 1 for p in perm])), True


def _per_step(step: Step, args: list, timesteps: int) -> list[Value]:
    """Fallback: evaluate the op once per time step (correct for any op, slower)."""
    per_t = [OPS[step.op]([(a[0][t] if a[1] else a[0]) if a is not None else None for a in args], step.attrs)
             for t in range(timesteps)]
    return [(np.stack([r[i] for r in per_t]), True) for i in range(len(step.outputs))]


DYNAMIC = {
    "Conv": _conv, "Gemm": _matmul, "MatMul": _matmul,
    "Add": _elementwise, "Sub": _elementwise, "Mul": _elementwise, "Div": _elementwise, "Sum": _elementwise,
    "AveragePool": _avg_pool, "GlobalAveragePool": _merged_batch, "ReduceMean": _merged_batch, "Flatten": _merged_batch,
    "Reshape": _reshape_like, "Squeeze": _reshape_like, "Unsqueeze": _reshape_like, "Transpose": _transpose,
    "SpikeMaxPool": spike_max_pool_handler,
}


def run_numba(plan: Plan, feeds: dict[str, np.ndarray], timesteps: int, cache: KernelCache, trace: bool = False) -> RunResult:
    """Simulate ``timesteps`` steps layer by layer; return the rate readout (and per-step readouts if ``trace``)."""
    env: dict[str, Value] = {name: (arr, False) for name, arr in plan.constants.items()}
    env.update({name: (arr, False) for name, arr in feeds.items()})
    counts: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    shapes: dict[str, tuple] = {}
    start = time.perf_counter()
    for index, step in enumerate(plan.steps):
        t0 = time.perf_counter()
        args = [env[name] if name else None for name in step.inputs]
        if step.neuron is not None:
            value, counts[step.name] = _neuron(step, args[0], timesteps)
            results = [value]
        elif not any(a is not None and a[1] for a in args):
            results = [(r, False) for r in OPS[step.op]([a[0] if a is not None else None for a in args], step.attrs)]
        else:
            handler = DYNAMIC.get(step.op)
            value = handler(step, args, cache, timesteps) if handler else None
            results = [value] if value is not None else _per_step(step, args, timesteps)
        for name, value in zip(step.outputs, results):
            env[name] = value
            shapes[name] = value[0].shape[1:] if value[1] else np.shape(value[0])
        for name in step.inputs:  # free what no later step reads: bounded peak memory, recycled buffers
            if plan.last_use.get(name) == index:
                del env[name]
        times[step.name] = time.perf_counter() - t0
    outputs, traced = [], []
    for o in plan.outputs:
        arr, dyn = env[o.name]
        if not dyn:
            outputs.append(np.asarray(arr, dtype=np.float32))
            if trace:
                traced.append(np.broadcast_to(outputs[-1], (timesteps,) + outputs[-1].shape).copy())
            continue
        if trace:
            running = np.cumsum(arr, axis=0, dtype=np.float64)
            running /= np.arange(1, timesteps + 1, dtype=np.float64).reshape((-1,) + (1,) * (arr.ndim - 1))
            traced.append(running.astype(np.float32))
            outputs.append(traced[-1][-1].copy())
        else:
            outputs.append((arr.sum(axis=0, dtype=np.float64) / timesteps).astype(np.float32))
    shapes.update({name: np.shape(arr) for name, arr in list(feeds.items()) + list(plan.constants.items())})
    stats = layer_stats(plan, counts, shapes, timesteps, times, time.perf_counter() - start)
    return RunResult(outputs, traced if trace else None, stats, timesteps)
