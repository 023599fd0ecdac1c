"""The Numba engine: layer-major, event-driven simulation of a feed-forward SNN graph.

The graph has no recurrence, so each node runs once for all T steps of the batch before the next node:
a value is either *static* (the same at every step, shape (N, ...): the analog input and everything computed
from it alone, computed once) or *dynamic* (shape (T, N, ...)). Neurons turn any current into dynamic spikes;
Conv and Gemm/MatMul take the event-driven path (scatter weights for the non-zero inputs only) or the dense
path, chosen per node and chunk from the measured input density (``KernelCache.choose``); a Conv feeding a neuron
layer directly (or through a residual Add) is fused with it. Every op means what it means on one step; ops
without a kernel run through the NumPy reference ops, per step when they must.

Two precisions (design.md 5a): "float32" (the default) sums in float32, the event kernels in the canonical order
of ``reference_ops.FLOAT32_OPS`` and the dense path in onnxruntime (``runtime.dense``); "float64" is the exact
engine of earlier releases (float64 sums rounded once, equal to the float64 reference; dense path im2col + dgemm).
docs/runtime.md has the details.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np

from .kernels.conv import conv2d_events, conv2d_events_if, im2col, tap_targets
from .kernels.dense import matmul_events
from .kernels.neuron import BLOCK, if_layer_state
from .kernels.pool import avg_pool2d
from .dense import DenseNode
from .errors import InputError, SNNFormatError
from .format import NeuronParams
from .plan import Plan, Step, evaluating
from .readout import OutputSums, add_block
from .reference_ops import FLOAT32_OPS, OPS, _spatial_pads, pool_geometry
from .spike_pool import spike_max_pool_handler
from .stats import RunResult, StatsLayout, layer_stats, layout_key, numel, stats_layout

Value = tuple  # (array, dynamic)


# Auto path rule: event-driven scatter when at most this fraction of a layer's inputs is non-zero, otherwise the
# dense path. float64: im2col + dgemm; measured on the benchmark machine (docs/runtime.md) for the bundled CNNs'
# 16-64 channel layers, about 0.15-0.45 ns per synaptic op per thread (event) against 0.1-0.5 ns per MAC (dense,
# im2col included), so the crossover lies between densities 1/3 and 1; below it the event path wins.
EVENT_MAX_DENSITY = 0.5
# float32 does not choose by density: its event path sums in the canonical order and its dense path
# (onnxruntime's Conv/Gemm) in MLAS's, so a choice by the chunk's density would make a sample's result depend on
# the other samples it runs with (a served request would differ from the same input run alone, a batch of 256
# from the same images in batches of 100). Spiking inputs take the event path, the analog input (run once per
# run, dense by nature) the dense one: each path gives every sample the same bits in any batch (tested).
DENSE_BLOCK_BYTES = 8 << 20  # im2col buffer per BLAS call: bounded memory whatever the batch
PRECISIONS = ("float32", "float64")
MAX_LAYOUTS = 256  # stats layouts kept per session (one per input shape, i.e. per batch size)


class KernelCache:
    """Per-session state shared by the handlers: weights rearranged once per node, the path mode
    ("auto" | "event" | "dense"), the precision ("float32" | "float64": the dtype of weights and sums, and the
    reference ops that ops without a kernel run), the path each node took in the last run (for stats), the
    densities of the current run's values that are known without counting (``densities``: value name -> fraction
    non-zero), and ``spike_sink``: None, or a dict that collects every neuron layer's spikes of each run
    (name -> list of (T, N, ...) int8 spike signs, one per chunk; AveragePools are then not fused, so that the spikes
    exist; the numbers do not change), for ``runtime.compare``."""

    def __init__(self, mode: str = "auto", precision: str = "float32"):
        self._items: dict[tuple, tuple] = {}
        self.mode = mode
        self.precision = precision
        self.dtype = np.float32 if precision == "float32" else np.float64
        self.ops = FLOAT32_OPS if precision == "float32" else OPS
        self.paths: dict[str, str] = {}
        self.densities: dict[str, float] = {}
        self.spike_sink: dict[str, list] | None = None
        self.layouts: dict[tuple, StatsLayout] = {}   # the stats' shape-only part, per set of shapes

    def get(self, key: tuple, make):
        """The item made for ``key``, made by ``make()`` on first use (None is kept too)."""
        try:
            return self._items[key]
        except KeyError:
            item = self._items[key] = make()
            return item

    def stats_layout(self, plan: Plan, shapes: dict[str, tuple]) -> StatsLayout:
        """The stats' shape-only part for these shapes, kept per set of shapes (one per batch size seen; at most
        MAX_LAYOUTS, for callers that vary the batch freely)."""
        key = layout_key(shapes)
        layout = self.layouts.get(key)
        if layout is None:
            if len(self.layouts) >= MAX_LAYOUTS:
                self.layouts.clear()
            layout = self.layouts[key] = stats_layout(plan, shapes)
        return layout

    def choose(self, step: Step, x: np.ndarray, dynamic: bool) -> str:
        """The path for this node and input: forced by the mode; in float32 (auto) event for a spiking input and
        dense for the analog one; in float64 (auto) by the input's density, known from the spike counts of the
        layer that made it, or else counted."""
        if self.mode != "auto":
            path = self.mode
        elif self.precision == "float32":
            path = "event" if dynamic else "dense"
        else:
            known = self.densities.get(step.inputs[0])
            path = "event" if (density(x) if known is None else known) <= EVENT_MAX_DENSITY else "dense"
        self.paths[step.name] = path
        return path


def density(x: np.ndarray) -> float:
    return np.count_nonzero(x) / max(1, x.size)


def spike_density(counts: np.ndarray, size: int, neuron: NeuronParams) -> float | None:
    """The density of a neuron layer's output from its spike counts: the same number ``density`` would count,
    unless a threshold is 0 (then a spike is a zero; None: count instead)."""
    return int(counts.sum()) / max(1, size) if neuron.thresholds_nonzero else None


# Ops that only rearrange their first input: the output has its density.
SAME_ELEMENTS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity"})


def _blocks(n: int) -> int:
    """Work items for a parallel kernel: several per thread for balance; results do not depend on it."""
    return max(1, min(n, 8 * numba.get_num_threads()))


def _neuron(step: Step, x: Value, timesteps: int, state) -> tuple[Value, np.ndarray, object]:
    """Spikes (T, ...) of one neuron layer, its spike count per step, and its state after the last step: the
    membranes, or for signed neurons (membranes, net spike counts). ``state`` None: a fresh start."""
    arr, dyn = x
    shape = arr.shape[1:] if dyn else arr.shape
    m = numel(shape)
    rows = np.ascontiguousarray(arr.reshape((timesteps if dyn else 1, m)), dtype=np.float32)
    p = step.neuron
    inner = numel(shape[2:]) if len(shape) > 2 else 1
    v_th, shift, v_init = p.per_channel
    if state is None:
        v = np.tile(np.repeat(v_init, inner), m // (inner * v_init.size))  # element m has channel (m // inner) % C
        state = (v, np.zeros(m, np.int32)) if p.signed else v
    spikes = np.empty((timesteps, m), np.float32)
    counts = np.zeros(((m + BLOCK - 1) // BLOCK, timesteps), np.int64)
    v, net = state if p.signed else (state, np.zeros(0, np.int32))
    if_layer_state(rows, timesteps, v_th, shift, v, net, inner, p.reset == "subtract", p.burst, spikes, counts)
    return (spikes.reshape((timesteps,) + shape), True), counts.sum(axis=0), state


@dataclass
class RunState:
    """What one block of steps hands to the next, so a run can stop early: membranes, the static values
    (computed once), the running sums of the outputs (``readout.OutputSums``), and the steps done so far."""
    membranes: dict = field(default_factory=dict)
    static: dict = field(default_factory=dict)
    sums: list | None = None
    steps_done: int = 0


STATEFUL_OTHER_THAN_NEURONS = ("SpikeMaxPool",)


class ConvWeights(NamedTuple):
    """One Conv node prepared for one input shape, in the precision's dtype (float64: exact products, as the
    float64 reference; float32: the products of the float32 oracle)."""
    wt: np.ndarray        # (Cg*KH*KW*O,) as (Cg, KH, KW, O)
    wflip: np.ndarray     # same with kx reversed, for the unit-stride kernel (empty if not applicable)
    wmat: np.ndarray      # float64: (groups, Cg*KH*KW, O/groups) for the im2col dense path; float32: empty
    bias: np.ndarray      # (O,)
    rows: np.ndarray      # (H, KH) tap targets
    cols: np.ndarray      # (W, KW)
    pad_w: int
    groups: int
    out_hw: tuple
    dense: tuple          # float32 dense path: (weight (O, Cg, KH, KW) float32, Conv attributes) for ``DenseNode``


def _conv_weights(step: Step, w: np.ndarray, b: np.ndarray | None, in_shape: tuple, dtype=np.float64) -> ConvWeights:
    one_d = w.ndim == 3
    w4 = w[:, :, None, :] if one_d else w
    spatial = 1 if one_d else 2
    strides = list(step.attrs.get("strides", [1] * spatial))
    dilations = list(step.attrs.get("dilations", [1] * spatial))
    pads = _spatial_pads(step.attrs, in_shape[2:], tuple(w.shape[2:]), strides, dilations)
    if one_d:
        strides, dilations, pads = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
    h, wd = (1, in_shape[2]) if one_d else in_shape[2:]
    n_out, cg, kh, kw = w4.shape
    groups = int(step.attrs.get("group", 1))
    if groups < 1 or in_shape[1] != cg * groups or n_out % groups or (b is not None and b.size != n_out):
        # the kernels index weights by these sizes without bounds checks: refuse before they run
        raise SNNFormatError(f"node '{step.name}': Conv of {in_shape[1]} input channels with weights {list(w.shape)}, group {groups}"
                             f"{'' if b is None else f' and {b.size} biases'} does not fit")
    ho = (h + pads[0] + pads[2] - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
    wo = (wd + pads[1] + pads[3] - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
    wk = w4.astype(dtype)
    wt = np.ascontiguousarray(wk.transpose(1, 2, 3, 0))
    unit = groups == 1 and strides[1] == 1 and dilations[1] == 1
    wflip = np.ascontiguousarray(wt[:, :, ::-1, :]).reshape(-1) if unit else np.empty(0, dtype)
    og = n_out // groups
    wmat = np.ascontiguousarray(wk.reshape(groups, og, cg * kh * kw).transpose(0, 2, 1)) if dtype == np.float64 else np.empty(0)
    bias = np.zeros(n_out, dtype) if b is None else b.astype(dtype)
    rows = tap_targets(h, kh, strides[0], pads[0], dilations[0], ho)
    cols = tap_targets(wd, kw, strides[1], pads[1], dilations[1], wo)
    dense = (w4.astype(np.float32), dict(kernel_shape=[kh, kw], strides=strides, pads=pads, dilations=dilations, group=groups))
    return ConvWeights(wt.reshape(-1), wflip, wmat, bias, rows, cols, pads[1], groups, (ho, wo), dense)


def conv_rows(x: np.ndarray, cw: ConvWeights, path: str, dense: DenseNode | None = None) -> np.ndarray:
    """Conv of a (B, C, H, W) float32 batch by the event or the dense path (``dense``: onnxruntime's float32 Conv;
    None: im2col + float64 BLAS); (B, O, Ho, Wo) float32."""
    ho, wo = cw.out_hw
    out = np.empty((x.shape[0], cw.bias.shape[0], ho, wo), np.float32)
    if path == "event":
        conv2d_events(x, cw.wt, cw.wflip, cw.bias, cw.rows, cw.cols, cw.pad_w, cw.groups, out, _blocks(x.shape[0]))
        return out
    if dense is not None:
        return dense(x, out, numba.get_num_threads())
    groups, k, og = cw.wmat.shape
    cg = k // (cw.rows.shape[1] * cw.cols.shape[1])
    per_block = max(1, DENSE_BLOCK_BYTES // (8 * ho * wo * k))
    for start in range(0, x.shape[0], per_block):
        xb = x[start:start + per_block]
        cols = np.empty((xb.shape[0] * ho * wo, k), np.float64)
        for g in range(groups):
            im2col(xb, cw.rows, cw.cols, g * cg, wo, cols)
            part = cols @ cw.wmat[g]  # float64 BLAS; the sums are rounded once below
            part += cw.bias[g * og:(g + 1) * og]
            out[start:start + xb.shape[0], g * og:(g + 1) * og] = part.reshape(xb.shape[0], ho, wo, og).transpose(0, 3, 1, 2)
    return out


def _conv(step: Step, args: list, cache: KernelCache, timesteps: int) -> Value | None:
    """Conv of a dynamic (T, N, C, [H,] W) or static (N, C, [H,] W) input with constant weights."""
    (x, dyn), w = args[0], args[1]
    b_val = args[2] if len(args) > 2 else None
    lead = 2 if dyn else 1
    if w[1] or (b_val is not None and b_val[1]) or x.ndim - lead not in (2, 3):
        return None
    b = b_val[0] if b_val is not None else None
    in_shape = x.shape[lead - 1:]
    cw = cache.get((step.name, in_shape[1:]), lambda: _conv_weights(step, w[0], b, in_shape, cache.dtype))  # any batch
    xs = x.reshape((-1,) + x.shape[lead:])
    if xs.ndim == 3:
        xs = xs[:, :, None, :]
    xs = np.ascontiguousarray(xs, dtype=np.float32)
    path = cache.choose(step, xs, dyn)
    dense = None
    if path == "dense" and cache.precision == "float32":
        dense = cache.get((step.name, in_shape[1:], "dense"), lambda: DenseNode("Conv", cw.dense[0], cw.bias, cw.dense[1]))
    out = conv_rows(xs, cw, path, dense)
    if x.ndim - lead == 2:
        out = out[:, :, 0, :]
    return out.reshape(x.shape[:lead] + out.shape[1:]), dyn


class Fused(NamedTuple):
    """What a fused Conv(+Add)+IF(+AveragePool) kernel returns."""
    value: Value               # the spikes (T, N, O, Ho, Wo), or the pooled spikes when ``pooled``
    counts: np.ndarray         # spikes per step
    membranes: object          # after the last step, (N, O, Ho, Wo) flattened; signed neurons: (membranes, net counts); None unless kept
    density: float | None      # fraction of non-zero elements of ``value`` (None: unknown)
    pooled: bool
    spike_shape: tuple         # (N, O, Ho, Wo): one step's spikes (and current)


def _conv_neuron(step: Step, neuron: Step, args: list, residual: np.ndarray | None, cache: KernelCache, timesteps: int,
                 v, pool: Step | None = None, keep_state: bool = True) -> Fused | None:
    """Conv on spikes fused with the neuron layer it feeds (optionally through an Add of a ``residual``), on the
    event path: the current is integrated per sample and step while in cache and never stored. A ``pool`` (the
    AveragePool that is the spikes' only reader) is fused too when its windows tile the map: then the spikes
    are not stored either. ``v``: the neuron's state from an earlier block of steps, as ``_neuron`` keeps it, or
    None; ``keep_state`` False: the state after the run is not wanted (``membranes`` None: a run of all its
    steps at once saves the transposes). None when the pattern does not apply (then the nodes run one by one)."""
    (x, dyn), w = args[0], args[1]
    b_val = args[2] if len(args) > 2 else None
    if not dyn or w[1] or (b_val is not None and b_val[1]) or x.ndim != 5:
        return None
    in_shape = x.shape[1:]
    cw = cache.get((step.name, in_shape[1:]), lambda: _conv_weights(step, w[0], b_val[0] if b_val is not None else None, in_shape, cache.dtype))
    n_out, (ho, wo) = cw.bias.shape[0], cw.out_hw
    n_batch = x.shape[1]
    out_shape = (timesteps, n_batch, n_out, ho, wo)
    if residual is not None and residual.shape != out_shape:
        return None
    window = _tiling_pool(pool, out_shape[2:], cache) if pool is not None and cache.spike_sink is None else None
    xs = np.ascontiguousarray(x, dtype=np.float32)
    if cache.choose(step, xs, True) != "event":
        return None
    p = neuron.neuron
    v_th, shift, v_init = cache.get((neuron.name, "per_channel", n_out),
                                    lambda: tuple(np.ascontiguousarray(np.broadcast_to(a, (n_out,))) for a in p.per_channel))
    # the kernel keeps membranes (and signed neurons' net counts) channels-last (N, Ho, Wo, O); the run state holds
    # them as (N, O, Ho, Wo), flat, as ``_neuron`` does
    to_last = lambda a: np.ascontiguousarray(a.reshape(n_batch, n_out, ho * wo).transpose(0, 2, 1)).reshape(-1)
    to_first = lambda a: np.ascontiguousarray(a.reshape(n_batch, ho * wo, n_out).transpose(0, 2, 1)).reshape(-1)
    if v is None:
        v_cl = np.empty(n_batch * ho * wo * n_out, v_init.dtype)  # its own array: the kernel writes it
        v_cl.reshape(-1, n_out)[:] = v_init
        net_cl = np.zeros(v_cl.size if p.signed else 0, np.int32)
    else:
        v_cl, net_cl = (to_last(v[0]), to_last(v[1])) if p.signed else (to_last(v), np.zeros(0, np.int32))
    res = np.ascontiguousarray(residual, dtype=np.float32) if residual is not None else np.empty((0,) * 5, np.float32)
    if window is None:
        out, geometry, div = np.empty(out_shape, np.float32), np.empty(0, np.int64), 1.0
    else:
        (kh, kw), div = window
        out, geometry = np.empty((timesteps, n_batch, n_out, ho // kh, wo // kw), np.float32), np.array([kh, kw], np.int64)
    counts = np.zeros((_blocks(n_batch), timesteps), np.int64)
    nonzero = np.zeros((counts.shape[0], 1), np.int64)
    conv2d_events_if(xs, cw.wt, cw.wflip, cw.bias, cw.rows, cw.cols, cw.pad_w, cw.groups, np.array([ho, wo], np.int64), res,
                     v_th, shift, p.reset == "subtract", p.burst, v_cl, net_cl, geometry, div, out, counts, nonzero)
    v = None if not keep_state else (to_first(v_cl), to_first(net_cl)) if p.signed else to_first(v_cl)
    counts = counts.sum(axis=0)
    known = spike_density(counts, out.size, p) if window is None else int(nonzero.sum()) / max(1, out.size)
    return Fused((out, True), counts, v, known, window is not None, out_shape[1:])


def _tiling_pool(pool: Step, in_shape: tuple, cache: KernelCache) -> tuple[tuple[int, int], float] | None:
    """((KH, KW), divisor) of a 2-D AveragePool whose windows tile its (C, H, W) input: stride == kernel, no
    padding, every window inside the input (so one divisor, KH * KW); None otherwise. Decided once per shape."""
    def decide():
        if pool.op != "AveragePool" or len(pool.attrs.get("kernel_shape", ())) != 2:
            return None
        kernel, strides, pads, divisor = pool_geometry(pool.attrs, (1,) + in_shape)
        (kh, kw), (hp, wp) = kernel, divisor.shape
        if list(strides) != list(kernel) or any(pads) or hp * kh > in_shape[1] or wp * kw > in_shape[2] \
                or not np.all(divisor == kh * kw):
            return None
        return (kh, kw), float(kh * kw)
    return cache.get((pool.name, "tiling", in_shape), decide)


def _fusable(plan: Plan, index: int, env: dict, outputs: set) -> tuple[list[Step], str | None] | None:
    """Conv -> IFNeuron, or Conv -> Add(residual) -> IFNeuron, where the neuron (through the Add) is the only reader
    of the Conv's current, optionally followed by an AveragePool that is the only reader of the spikes: (the
    steps, the residual's name or None). The neuron need not be the next step (a strided block computes its
    shortcut Conv in between): nothing before it reads its spikes, so it can run at the Conv's place. The
    residual must already be computed (in ``env``) and dynamic. Whether the pool's geometry can be fused is
    decided by ``_conv_neuron``."""
    conv = plan.steps[index]
    if conv.op != "Conv":
        return None

    def only_reader(name: str) -> Step | None:
        readers = plan.consumers.get(name, [])
        return readers[0] if name not in outputs and len(readers) == 1 else None

    def with_pool(chain: list[Step]) -> list[Step]:
        pool = only_reader(chain[-1].outputs[0])
        return chain + [pool] if pool is not None and pool.op == "AveragePool" else chain

    nxt = only_reader(conv.outputs[0])
    if nxt is None:
        return None
    if nxt.neuron is not None and nxt.inputs[0] == conv.outputs[0]:
        return with_pool([conv, nxt]), None
    if nxt.op == "Add" and len(nxt.inputs) == 2 and conv.outputs[0] in nxt.inputs:
        neuron = only_reader(nxt.outputs[0])
        other = [n for n in nxt.inputs if n != conv.outputs[0]]
        if len(other) == 1 and other[0] in env and env[other[0]][1] and neuron is not None \
                and neuron.neuron is not None and neuron.inputs[0] == nxt.outputs[0]:
            return with_pool([conv, nxt, neuron]), other[0]
    return None


def _matmul_weights(step: Step, args: list, dtype=np.float64):
    """Weight (K, N) and bias (N,) in ``dtype``, rounded exactly as the reference Gemm/MatMul rounds them."""
    w = args[1][0]
    if step.op == "Gemm" and step.attrs.get("transB", 0):
        w = w.T
    bias = np.zeros(w.shape[-1], dtype)  # sized after transB: a bias-less Gemm's output width
    if step.op == "Gemm":
        w = np.float32(step.attrs.get("alpha", 1.0)) * w.astype(np.float32)
        c = args[2][0] if len(args) > 2 and args[2] is not None else None
        if c is not None:
            bias = np.broadcast_to((np.float32(step.attrs.get("beta", 1.0)) * c).astype(dtype).reshape(-1), (w.shape[1],))
    return np.ascontiguousarray(w, dtype=dtype), np.ascontiguousarray(bias)


def _matmul(step: Step, args: list, cache: KernelCache, timesteps: int) -> Value | None:
    (x, dyn) = args[0]
    w_val = args[1]
    if w_val[1] or w_val[0].ndim != 2:
        return None
    if step.op == "Gemm":
        if step.attrs.get("transA", 0) or x.ndim != (3 if dyn else 2):
            return None
        c = args[2] if len(args) > 2 else None
        n_out = w_val[0].shape[0] if step.attrs.get("transB", 0) else w_val[0].shape[1]
        if c is not None and (c[1] or c[0].size not in (1, n_out)):
            return None
    w, bias = cache.get((step.name,), lambda: _matmul_weights(step, args, cache.dtype))
    if x.shape[-1] != w.shape[0]:  # the kernel reads w by x's width without bounds checks
        raise SNNFormatError(f"node '{step.name}': {step.op} of {x.shape[-1]} features with a weight for {w.shape[0]} does not fit")
    rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
    path = cache.choose(step, rows, dyn)
    out = np.empty((rows.shape[0], w.shape[1]), np.float32)
    if path == "event":
        matmul_events(rows, w.reshape(-1), bias, out, _blocks(rows.shape[0]))
    elif cache.precision == "float32":
        cache.get((step.name, "dense"), lambda: DenseNode("Gemm", w, bias))(rows, out, numba.get_num_threads())
    else:
        out = (rows.astype(np.float64) @ w + bias).astype(np.float32)
    return out.reshape(x.shape[:-1] + (w.shape[1],)), dyn


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
    return cache.ops[step.op]([a[0] for a in args], step.attrs)[0], True


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
    out = cache.ops[step.op]([merged] + [a[0] if a is not None else None for a in args[1:]], step.attrs)[0]
    return out.reshape((timesteps, -1) + out.shape[1:]), True


def _reshape_like(step: Step, args: list, cache, timesteps: int) -> Value | None:
    """Reshape, Squeeze, Unsqueeze: the per-step result shape applied to the whole (T, ...) array."""
    x = args[0][0]
    if any(a is not None and a[1] for a in args[1:]):
        return None
    one = cache.ops[step.op]([x[0]] + [a[0] if a is not None else None for a in args[1:]], step.attrs)[0]
    return x.reshape((timesteps,) + one.shape), True


def _transpose(step: Step, args: list, cache, timesteps: int) -> Value | None:
    x = args[0][0]
    perm = step.attrs.get("perm", list(range(x.ndim - 1))[::-1])
    return np.ascontiguousarray(x.transpose([0] + [p + 1 for p in perm])), True


def _per_step(step: Step, args: list, timesteps: int, ops: dict) -> list[Value]:
    """Fallback: evaluate the op once per time step (correct for any op, slower)."""
    per_t = [ops[step.op]([(a[0][t] if a[1] else a[0]) if a is not None else None for a in args], step.attrs)
             for t in range(timesteps)]
    return [(np.stack([r[i] for r in per_t]), True) for i in range(len(step.outputs))]


# Linear ops on the static (analog) part, computed once per run: the same kernels, usually the dense path.
STATIC = {"Conv": _conv, "Gemm": _matmul, "MatMul": _matmul}
DYNAMIC = {
    "Conv": _conv, "Gemm": _matmul, "MatMul": _matmul,
    "Add": _elementwise, "Sub": _elementwise, "Mul": _elementwise, "Div": _elementwise, "Sum": _elementwise,
    "AveragePool": _avg_pool, "GlobalAveragePool": _merged_batch, "ReduceMean": _merged_batch, "Flatten": _merged_batch,
    "Reshape": _reshape_like, "Squeeze": _reshape_like, "Unsqueeze": _reshape_like, "Transpose": _transpose,
    "SpikeMaxPool": spike_max_pool_handler,
}


def run_numba(plan: Plan, feeds: dict[str, np.ndarray], timesteps: int, cache: KernelCache, trace: bool = False,
              state: RunState | None = None) -> RunResult:
    """Simulate ``timesteps`` steps layer by layer; return the rate readout (and per-step readouts if ``trace``).

    With a ``state``, the run continues from where the previous block of steps left it, and updates it.
    """
    fresh = state is None
    state = RunState() if fresh else state
    if not fresh and any(s.op in STATEFUL_OTHER_THAN_NEURONS for s in plan.steps):
        raise InputError(f"early stop runs block by block, which op {STATEFUL_OTHER_THAN_NEURONS[0]} does not support; run without it")
    env: dict[str, Value] = {name: (arr, False) for name, arr in plan.constants.items()}
    env.update({name: (arr, False) for name, arr in feeds.items()})
    counts: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    shapes: dict[str, tuple] = {}
    cache.paths, cache.densities = {}, {}
    output_names = {o.name for o in plan.outputs}
    skip: set[str] = set()
    start = time.perf_counter()
    for index, step in enumerate(plan.steps):
        if step.name in skip:  # already computed, fused with the Conv before it
            continue
        with evaluating(step):
            t0 = time.perf_counter()
            timed = step.name
            args = [env[name] if name else None for name in step.inputs]
            value = None
            chain = _fusable(plan, index, env, output_names)
            if chain is not None:
                steps, residual = chain
                pool = steps.pop() if steps[-1].op == "AveragePool" else None
                neuron = steps[-1]
                fused = _conv_neuron(step, neuron, args, env[residual][0] if residual else None, cache, timesteps,
                                     state.membranes.get(neuron.name), pool, keep_state=not fresh)
                if fused is not None:
                    value, counts[neuron.name], state.membranes[neuron.name] = fused.value, fused.counts, fused.membranes
                    if fused.pooled:
                        steps.append(pool)
                    skip.update(s.name for s in steps[1:])
                    for s in steps[:-1]:
                        shapes[s.outputs[0]] = fused.spike_shape
                        for name in s.inputs:
                            if plan.last_use.get(name) == plan.index[s.name]:
                                env.pop(name, None)
                    index = plan.index[steps[-1].name]
                    step, timed = steps[-1], neuron.name  # what follows records the last step's output and frees its input
                    if fused.density is not None:
                        cache.densities[step.outputs[0]] = fused.density
            if value is not None:
                results = [value]
            elif step.neuron is not None:
                value, counts[step.name], state.membranes[step.name] = _neuron(step, args[0], timesteps, state.membranes.get(step.name))
                cache.densities[step.outputs[0]] = spike_density(counts[step.name], value[0].size, step.neuron)
                results = [value]
            elif all(name in state.static for name in step.outputs):
                results = [(state.static[name], False) for name in step.outputs]
            elif not any(a is not None and a[1] for a in args):
                handler = STATIC.get(step.op) if args[0] is not None and args[0][0].dtype == np.float32 else None
                value = handler(step, args, cache, timesteps) if handler else None
                results = [value] if value is not None else \
                    [(r, False) for r in cache.ops[step.op]([a[0] if a is not None else None for a in args], step.attrs)]
                if not fresh:
                    state.static.update((name, v[0]) for name, v in zip(step.outputs, results))
            else:
                handler = DYNAMIC.get(step.op)
                value = handler(step, args, cache, timesteps) if handler else None
                results = [value] if value is not None else _per_step(step, args, timesteps, cache.ops)
            if step.neuron is not None and cache.spike_sink is not None:
                cache.spike_sink.setdefault(step.name, []).append(np.sign(results[0][0]).astype(np.int8))
            for name, value in zip(step.outputs, results):
                env[name] = value
                shapes[name] = value[0].shape[1:] if value[1] else np.shape(value[0])
            if step.op in SAME_ELEMENTS and step.inputs[0] in cache.densities and results[0][1]:
                cache.densities[step.outputs[0]] = cache.densities[step.inputs[0]]
            for name in step.inputs:  # free what no later step reads: bounded peak memory, recycled buffers
                if plan.last_use.get(name) == index:
                    env.pop(name, None)
            times[timed] = time.perf_counter() - t0
    sums, outputs, traced = [], [], []
    for i, o in enumerate(plan.outputs):
        arr, dyn = env[o.name]
        arr = np.broadcast_to(arr, (timesteps,) + np.shape(arr)) if not dyn else arr
        previous = state.sums[i] if state.sums is not None else OutputSums(steps=state.steps_done)
        total, now, rows = add_block(arr, previous, plan.readout_start, trace)
        sums.append(total)
        outputs.append(now)
        traced.append(rows)
    state.sums, state.steps_done = sums, state.steps_done + timesteps
    shapes.update({name: np.shape(arr) for name, arr in list(feeds.items()) + list(plan.constants.items())})
    stats = layer_stats(plan, counts, shapes, timesteps, times, time.perf_counter() - start, cache.stats_layout(plan, shapes))
    stats["node_path"] = dict(cache.paths)
    stats["precision"] = cache.precision
    return RunResult(outputs, traced if trace else None, stats, timesteps)
