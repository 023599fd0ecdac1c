"""Layer-wise calibration on the SNN itself: the ``optimal`` threshold method.

Why: choosing each layer's V_th from ANN activations alone ignores that a spiking layer's input is the
quantised, late-starting output of the spiking layers before it; at small T those errors compound. Here the
SNN is simulated layer-major on calibration images (the graph is feed-forward, so each node runs once for
all T steps): linear nodes run in onnxruntime on the (T*N, ...) stack of per-step inputs (nodes that could mix
the samples of a batch, such as a Reshape naming the batch size, once per step), neurons follow the
format's per-step IF equations, gated max pools run with the runtime's own kernel. Layers are calibrated in topological order, each on the currents the already
converted layers really produce, against the source ANN's activation on the same image:

1. V_th per channel (or per layer): the candidate that minimises the mean squared error between the ANN
   activation and the rate the neuron fires in T steps, simulated step by step on the real input currents;
2. the initial membrane: as set (0, V_th/2, a number), or searched per channel ('calibrated');
3. bias correction (Li et al., ICML 2021): a per-channel shift that cancels the mean conversion error of that
   channel, so the error that remains is zero-mean and does not add up through the next layers.

The chosen parameters are then fixed and the layer's spikes feed the next layer. The ``ltb`` rule replaces
step 1 by local threshold balancing (Bu, Li & Yu, CVPR 2025; SpikingJelly's LocalThresholdBalancingRecipe),
run on the layer's own time-averaged SNN current instead of the ANN's: it ignores T, which is what can make it
better at T = 1, where the error criterion of step 1 is at its coarsest. Finally (:func:`select`), the
whole calibration is repeated for each candidate setting of the knobs the user left free (bias correction on
or off; v_init half or calibrated, and the ltb rule, for small T), and the candidate whose simulated SNN output
is closest to the ANN's on the calibration data is kept: which knob helps depends on T and on the model (at
T = 1 bias correction often hurts), so the choice is made for the target T.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from numba import njit, prange
from onnx import helper, numpy_helper

from runtime.format import DOMAIN, MAXPOOL_OP, NEURON_OP
from runtime.kernels.neuron import burst_fire
from runtime.plan import _attrs
from runtime.readout import OutputSums, add_block
from runtime.spike_pool import spike_max_pool_handler

from .calibrate import fixed_batch, run_in_blocks
from .progress import progress

V_TH_FACTORS = np.geomspace(0.1, 1.0, 19)     # candidate V_th / channel max of the ANN activation
V_INIT_FACTORS = np.array([0.0, 0.25, 0.5, 0.75])  # candidate v_init / V_th for v_init='calibrated'
BIAS_ROUNDS = 3
IMAGE_STEPS = 8192                              # calibration images x T simulated (bounds time and memory)
MIN_IMAGES = 32
LTB_PASSES, LTB_BATCH = 4, 100                   # local threshold balancing: passes over the images, images per update


@dataclass
class LayerParams:
    """What calibration chose for one neuron layer: (C,) arrays, or (1,) for layer-wide values."""

    v_th: np.ndarray
    shift: np.ndarray
    v_init: np.ndarray


def v_th_factors(burst: int) -> np.ndarray:
    """Candidate V_th / channel max: V_TH_FACTORS, extended down by the burst with the same points per decade (a
    burst neuron reaches ``burst`` x V_th in one step, so its best V_th is up to ``burst`` times smaller)."""
    if burst == 1:
        return V_TH_FACTORS
    return np.geomspace(0.1 / burst, 1.0, len(V_TH_FACTORS) + int(round((len(V_TH_FACTORS) - 1) * np.log10(burst))))


def images_for(timesteps: int, available: int) -> int:
    """How many calibration images to simulate at T: fewer for long runs, never fewer than MIN_IMAGES."""
    return int(min(available, max(MIN_IMAGES, IMAGE_STEPS // timesteps)))


@njit(parallel=True, cache=True)
def candidate_errors(x, target, v_th, v_init, shift, timesteps, subtract, signed, burst, sq_err, mean_err):
    """Simulate one layer for every candidate (k) and channel (c); accumulate errors against the target.
    ``signed``: the format's signed neuron (a negative spike when v < 0 and the net count is positive);
    ``burst``: the most spikes a neuron fires in one step (the format's burst neuron when > 1).

    x: (Tx, N, C, S) float32 currents (Tx == 1: constant); target: (N, C, S) float32 ANN activation;
    v_th, v_init, shift: (K, C) float32. Writes sq_err[k, c] = mean (target - rate)^2 and
    mean_err[k, c] = mean (target - rate) over the N*S elements of channel c. Each thread owns channels.
    """
    tx, n_img, n_ch, inner = x.shape
    n_cand = v_th.shape[0]
    scale = 1.0 / (n_img * inner)
    for c in prange(n_ch):
        v = np.empty(inner, np.float32)
        count = np.empty(inner, np.int32)
        th_row = np.empty(inner, np.float32)  # burst_fire's per-neuron thresholds
        for k in range(n_cand):
            th = v_th[k, c]
            sh = shift[k, c]
            th_row[:] = th
            e2 = 0.0
            e1 = 0.0
            for n in range(n_img):
                for s in range(inner):
                    v[s] = v_init[k, c]
                    count[s] = 0
                for t in range(timesteps):
                    _if_row(x[0 if tx == 1 else t, n, c], v, count, th, th_row, sh, subtract, signed, burst)
                for s in range(inner):
                    d = target[n, c, s] - count[s] * th / timesteps
                    e2 += d * d
                    e1 += d
            sq_err[k, c] = e2 * scale
            mean_err[k, c] = e1 * scale


@njit(cache=True, inline="always")
def _if_row(xr, v, count, th, th_row, sh, subtract, signed, burst):
    """One step of the format's neuron for a row of neurons of one channel: currents xr, membranes v and net spike
    counts ``count`` updated (``th_row``: th for each neuron, for the runtime's ``burst_fire``). One branch-free
    loop per neuron kind (the kind is the same for the whole row), with unsigned indices, so that LLVM vectorises
    it; each neuron does the arithmetic of kernels/neuron.py."""
    size = np.uint64(xr.shape[0])
    if burst > 1:  # the runtime's B subtractions, each where the membrane still reaches V_th
        for s in range(size):
            v[s] = v[s] + (xr[s] + sh)
        burst_fire(v, count, th_row, 1, xr.shape[0], burst)
    elif signed:
        for s in range(size):
            vs = v[s] + (xr[s] + sh)
            up = vs >= th
            down = vs < np.float32(0.0) and count[s] > 0  # never with up: v_th > 0
            count[s] += np.int32(up) - np.int32(down)
            v[s] = vs - th if up else (vs + th if down else vs)
    else:
        for s in range(size):
            vs = v[s] + (xr[s] + sh)
            up = vs >= th
            count[s] += np.int32(up)
            reset = vs - th if subtract else np.float32(0.0)
            v[s] = reset if up else vs


def _channels(shape: tuple) -> tuple[int, int]:
    """(channels, elements per channel per image) of an (N, C, ...) activation; (N,) counts as one channel."""
    if len(shape) < 2:
        return 1, 1
    return int(shape[1]), int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1


def _as_layout(values: np.ndarray, timesteps_axis: bool) -> np.ndarray:
    """View (Tx, N, ...) or (N, ...) as (Tx, N, C, S) / (N, C, S) contiguous float32."""
    shape = values.shape[1:] if timesteps_axis else values.shape
    c, s = _channels(shape)
    lead = (values.shape[0], shape[0]) if timesteps_axis else (shape[0],)
    return np.ascontiguousarray(values.reshape(lead + (c, s)), dtype=np.float32)


def _shift_base(shift, v_th: np.ndarray, timesteps: int) -> np.ndarray:
    if shift == "half":
        return v_th / (2 * timesteps)
    if shift == "none":
        return np.zeros_like(v_th)
    return np.full_like(v_th, float(shift))


def _v_init_base(v_init, v_th: np.ndarray) -> np.ndarray:
    if v_init == "half":
        return v_th / 2
    return np.full_like(v_th, float(v_init))


def choose_layer(x: np.ndarray, target: np.ndarray, timesteps: int, *, per_channel: bool, shift, v_init,
                 reset: str, bias: bool, upper_bound: float | None, v_max: np.ndarray | None = None,
                 signed: bool = False, burst: int = 1) -> LayerParams:
    """Parameters of one neuron layer from its real input currents x (Tx, N, C, S) and the ANN target (N, C, S)."""
    subtract = reset == "subtract"
    n_ch = target.shape[1]
    if v_max is None:
        v_max = target.max(axis=(0, 2)).astype(np.float64)
    layer_max = float(v_max.max()) if v_max.size else 0.0
    if layer_max <= 0:
        layer_max = 1.0
    base = np.where(v_max > 0, v_max, layer_max) if per_channel else np.full(n_ch, layer_max)
    v_th_c = base[None, :] * v_th_factors(burst)[:, None]
    if upper_bound is not None:
        v_th_c = np.minimum(v_th_c, upper_bound)
    if v_init == "calibrated":
        grid_th = np.repeat(v_th_c, len(V_INIT_FACTORS), axis=0)
        grid_v0 = grid_th * np.tile(V_INIT_FACTORS, len(v_th_c))[:, None]
    else:
        grid_th, grid_v0 = v_th_c, _v_init_base(v_init, v_th_c)
    grid_sh = _shift_base(shift, grid_th, timesteps)
    sq, _ = _errors(x, target, grid_th, grid_v0, grid_sh, timesteps, subtract, signed, burst)
    if per_channel:
        best = np.argmin(sq, axis=0)
        pick = lambda grid: grid[best, np.arange(n_ch)]
    else:
        best = int(np.argmin(sq.mean(axis=1)))
        pick = lambda grid: grid[best]
    v_th, v0, sh = pick(grid_th), pick(grid_v0), pick(grid_sh)
    if bias:
        sh = _correct_bias(x, target, v_th, v0, sh, timesteps, subtract, signed, burst)
    if not per_channel and not bias:
        v_th, v0, sh = v_th[:1], v0[:1], sh[:1]
    return LayerParams(v_th.astype(np.float32), sh.astype(np.float32), v0.astype(np.float32))


def _correct_bias(x, target, v_th, v0, sh, timesteps, subtract, signed, burst=1) -> np.ndarray:
    """Bias correction: add to each channel's shift the mean error it leaves, a few rounds (the rates move)."""
    for _ in range(BIAS_ROUNDS):
        _, mean = _errors(x, target, v_th[None], v0[None], sh[None], timesteps, subtract, signed, burst)
        sh = sh + mean[0]
    return sh


def balanced_thresholds(x: np.ndarray) -> np.ndarray:
    """Local threshold balancing of (N, C, S) activations: per channel, start at 0 and, for each block of
    LTB_BATCH images, LTB_PASSES times over the data, add twice the mean overflow above V_th. V_th climbs
    towards the channel's maximum and stops short of it by as much as the overflow's tail is thin."""
    v_th = np.zeros(x.shape[1])
    for _ in range(LTB_PASSES):
        for i in range(0, len(x), LTB_BATCH):
            block = x[i:i + LTB_BATCH]
            v_th = v_th + 2.0 * np.maximum(block - v_th[None, :, None], 0.0).mean(axis=(0, 2))
    return v_th


def balance_layer(x: np.ndarray, target: np.ndarray, timesteps: int, *, shift, v_init, reset: str, bias: bool,
                  upper_bound: float | None, signed: bool = False, burst: int = 1) -> LayerParams:
    """The ``ltb`` rule: V_th per channel balanced on the layer's time-averaged input current x (Tx, N, C, S),
    clipped at 0 as the ANN's ReLU does; a channel that never had a positive current gets the layer's largest
    V_th (or 1). v_init and shift as set; bias correction against the ANN target (N, C, S) if asked."""
    v_th = balanced_thresholds(np.maximum(x.mean(axis=0, dtype=np.float64), 0.0))
    fallback = float(v_th.max()) if v_th.size and v_th.max() > 0 else 1.0
    v_th = np.where(v_th > 0, v_th, fallback)
    if upper_bound is not None:
        v_th = np.minimum(v_th, upper_bound)
    v0, sh = _v_init_base(v_init, v_th), _shift_base(shift, v_th, timesteps)
    if bias:
        sh = _correct_bias(x, target, v_th, v0, sh, timesteps, reset == "subtract", signed, burst)
    return LayerParams(v_th.astype(np.float32), sh.astype(np.float32), v0.astype(np.float32))


def _errors(x, target, v_th, v_init, shift, timesteps, subtract, signed=False, burst=1):
    k, c = v_th.shape
    sq, mean = np.zeros((k, c)), np.zeros((k, c))
    candidate_errors(x, target, np.ascontiguousarray(v_th, np.float32), np.ascontiguousarray(v_init, np.float32),
                     np.ascontiguousarray(shift, np.float32), timesteps, subtract, signed, burst, sq, mean)
    return sq, mean


@njit(parallel=True, cache=True)
def _fire_channels(x, v_th, v_init, shift, timesteps, subtract, signed, burst, spikes):
    """The format's IF step, T times: x (Tx, N, C, S) currents, (C,) parameters, spikes (T, N, C, S) out: the
    step's change of the net spike count times V_th (0 or V_th; -V_th for a signed neuron's negative spike; k * V_th
    for a burst of k), as the runtime's float32(k) * v_th."""
    tx, n_img, n_ch, inner = x.shape
    for c in prange(n_ch):
        th, sh = v_th[c], shift[c]
        th_row = np.full(inner, th, np.float32)
        v = np.empty(inner, np.float32)
        count = np.empty(inner, np.int32)
        before = np.empty(inner, np.int32)
        for n in range(n_img):
            for s in range(inner):
                v[s] = v_init[c]
                count[s] = 0
            for t in range(timesteps):
                before[:] = count
                _if_row(x[0 if tx == 1 else t, n, c], v, count, th, th_row, sh, subtract, signed, burst)
                for s in range(inner):
                    spikes[t, n, c, s] = np.float32(count[s] - before[s]) * th


def fire(x: np.ndarray, params: LayerParams, timesteps: int, reset: str, signed: bool = False, burst: int = 1) -> np.ndarray:
    """Spikes (T, N, ...) of a layer with the chosen parameters for currents x (Tx, N, ...)."""
    layout = _as_layout(x, True)
    n_ch = layout.shape[2]
    v_th, shift, v0 = (np.ascontiguousarray(np.broadcast_to(a, (n_ch,)), np.float32) for a in (params.v_th, params.shift, params.v_init))
    spikes = np.empty((timesteps,) + layout.shape[1:], np.float32)
    _fire_channels(layout, v_th, v0, shift, timesteps, reset == "subtract", signed, burst, spikes)
    return spikes.reshape((timesteps,) + x.shape[1:])


@dataclass
class _PoolStep:
    """What the runtime's gated spiking max-pool handler reads of a plan step."""

    name: str
    attrs: dict


class _NodeRunner:
    """One linear node of the SNN graph as a tiny onnxruntime session (constants become initializers)."""

    def __init__(self, node: onnx.NodeProto, constants: dict[str, np.ndarray], opset: int, dtypes: dict[str, np.dtype]):
        """dtypes: each non-constant input's element type (float32 activations, int64 shape arithmetic, ...)."""
        if node.domain == DOMAIN:  # SpikeMaxPool on a constant input: the plain max pool
            node = helper.make_node("MaxPool", node.input, node.output, name=node.name, **_attrs(node))
        self.inputs = [name for name in node.input if name and name not in constants]  # as the caller passes them
        unique = list(dict.fromkeys(node.input))  # a node may read one value twice, e.g. Concat(x, x)
        inits = [numpy_helper.from_array(constants[name], name) for name in unique if name in constants]
        graph = helper.make_graph([node], "node", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(dtypes[n]), None)
                                                   for n in unique if n and n not in constants],
                                  [helper.make_empty_tensor_value_info(o) for o in node.output], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures surface as our own one-line errors
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.outputs = list(node.output)

    def __call__(self, values: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, dict(zip(self.inputs, values)))


# Ops that treat each sample of a batch on their own: all T steps run at once as one (T*N, ...) batch. Any other
# op runs once per step, or it would mix the steps: a Reshape whose shape names the batch size (ShuffleNet's
# channel shuffle, exported at batch 1), a Transpose, a Concat or Flatten over axis 0, ...
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Sum"})
_SAMPLEWISE = frozenset({"Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool", "MaxPool"}) | _ELEMENTWISE


def _samplewise(node: onnx.NodeProto, env: dict, constants: dict[str, np.ndarray]) -> bool:
    """Whether ``node`` may run on the (T*N, ...) stack of its time-varying inputs (see _SAMPLEWISE)."""
    dynamic = [k for k, name in enumerate(node.input) if name and name not in constants and env[name][1]]
    rank = env[node.input[dynamic[0]]][0].ndim - 1
    if node.op_type in ("Gemm", "MatMul"):
        return dynamic == [0] and not _attrs(node).get("transA", 0) and all(constants[n].ndim <= 2 for n in node.input if n in constants)
    if node.op_type in ("Flatten", "Concat"):
        return int(_attrs(node).get("axis", 1)) > 0
    if node.op_type in _ELEMENTWISE:  # a constant operand must broadcast over the batch axis
        return all(constants[name].ndim < rank or constants[name].shape[0] == 1 for name in node.input if name in constants)
    return node.op_type in _SAMPLEWISE


def calibrate_snn(snn: onnx.ModelProto, feeds: dict[str, np.ndarray], targets: dict[str, np.ndarray], timesteps: int, *,
                  per_channel: bool, shift, v_init, reset: str, bias: bool, upper_bounds: dict[str, float | None],
                  v_max: dict[str, np.ndarray] | None = None, rule: str = "error",
                  signed: bool = False, burst: int = 1) -> tuple[dict[str, LayerParams], dict[str, np.ndarray]]:
    """Calibrate every IFNeuron of ``snn`` (any placeholder parameters) in topological order; see the module doc.

    feeds: the calibration inputs (N, ...); targets: neuron name -> the source ANN's activation (N, ...) there.
    Returns the chosen parameters and the calibrated SNN's outputs at every step (graph output name -> (T, N, ...);
    (N, ...) for an output that is the same at every step).
    """
    opset = next((o.version for o in snn.opset_import if o.domain in ("", "ai.onnx")), 13)
    constants = {i.name: numpy_helper.to_array(i) for i in snn.graph.initializer}
    nodes = list(snn.graph.node)
    last_use = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            last_use[name] = i
    keep = {o.name for o in snn.graph.output}
    # A value is (array, dynamic): dynamic values are (T, N, ...), static ones (N, ...) are the same every step.
    env: dict[str, tuple[np.ndarray, bool]] = {k: (v, False) for k, v in feeds.items()}
    batch = fixed_batch(snn)
    chosen: dict[str, LayerParams] = {}
    for i, node in enumerate(progress(nodes, desc="calibrating the SNN layer by layer", unit="node")):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            continue
        if node.domain == DOMAIN and node.op_type == NEURON_OP:
            x, dynamic = env[node.input[0]]
            xt = x if dynamic else x[None]
            currents, target = _as_layout(xt, True), _as_layout(targets[node.name], False)
            if rule == "ltb":
                params = balance_layer(currents, target, timesteps, shift=shift, v_init=v_init, reset=reset, bias=bias,
                                       upper_bound=upper_bounds.get(node.name), signed=signed, burst=burst)
            else:
                params = choose_layer(currents, target, timesteps, per_channel=per_channel, shift=shift, v_init=v_init,
                                      reset=reset, bias=bias, upper_bound=upper_bounds.get(node.name),
                                      v_max=None if v_max is None else v_max.get(node.name), signed=signed, burst=burst)
            chosen[node.name] = params
            env[node.output[0]] = (fire(xt, params, timesteps, reset, signed, burst), True)
        elif node.domain == DOMAIN and node.op_type == MAXPOOL_OP and env[node.input[0]][1]:
            step = _PoolStep(node.name, _attrs(node))
            env[node.output[0]] = spike_max_pool_handler(step, [env[node.input[0]]], None, timesteps)
        else:
            args = [env[name] for name in node.input if name and name not in constants]
            dynamic = any(d for _, d in args)
            runner = _NodeRunner(node, constants, opset, {name: env[name][0].dtype for name in node.input if name and name not in constants})
            call = (lambda values, run=runner: run_in_blocks(run, values, batch, True)) if batch else runner
            if dynamic and not _samplewise(node, env, constants):
                per_step = [call([np.asarray(value[t]) if d else value for value, d in args]) for t in range(timesteps)]
                for name, values in zip(node.output, zip(*per_step)):
                    env[name] = (np.stack(values), True)
            elif not dynamic and batch is not None:  # the static part (e.g. the first Conv) of a fixed-batch model
                for name, value in zip(node.output, call([value for value, _ in args])):
                    env[name] = (value, False)
            else:
                stacked = []
                for value, d in args:
                    if dynamic:
                        value = value if d else np.broadcast_to(value, (timesteps,) + value.shape)
                        value = value.reshape((-1,) + value.shape[2:])
                    stacked.append(np.ascontiguousarray(value))
                results = runner(stacked)
                for name, value in zip(node.output, results):
                    env[name] = (value.reshape((timesteps, -1) + value.shape[1:]) if dynamic else value, dynamic)
        for name in node.input:
            if last_use.get(name) == i and name not in keep:
                env.pop(name, None)
    return chosen, {name: env[name][0] for name in keep}


@dataclass
class Candidate:
    """One setting of the free knobs tried by the final selection, and how its whole SNN did."""

    v_init: str | float
    bias: bool
    rule: str = "error"         # how V_th is chosen: "error" (step 1 of the module doc) or "ltb"
    signed: bool = False        # signed IF neurons (runtime/format.py)
    agreement: float = 0.0      # top-1 agreement of the SNN readout with the ANN output on the calibration data
    cross_entropy: float = 0.0  # of softmax(SNN readout) against the ANN's top-1 class: what the selection minimises


def _softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def select(snn: onnx.ModelProto, feeds: dict[str, np.ndarray], targets: dict[str, np.ndarray], ann_outputs: dict[str, np.ndarray],
           timesteps: int, candidates: list[Candidate], readout_start: int = 0, **fixed) -> tuple[Candidate, dict[str, LayerParams]]:
    """The T-aware final selection: calibrate the SNN once per candidate, simulate it whole on the calibration
    data, and keep the candidate whose readout (skipping ``readout_start`` steps, as the file will) agrees best
    with the ANN: among the candidates whose top-1 agreement with the ANN is within
    :func:`agreement_tolerance` of the best one's, the smallest cross-entropy of the softmax of the readout
    against the ANN's top-1 class (a smooth form of top-1 agreement, which ties at 100% once T is large
    enough); the first candidate on a tie.

    Only calibration data is used. With one candidate this is plain :func:`calibrate_snn`.
    """
    chosen = []
    for cand in candidates:
        params, outputs = calibrate_snn(snn, feeds, targets, timesteps, v_init=cand.v_init, bias=cand.bias, rule=cand.rule,
                                        signed=cand.signed, **fixed)
        if len(candidates) == 1:
            return cand, params
        agree, ce = [], []
        for name, want in ann_outputs.items():
            got = outputs[name]
            if got.ndim == want.ndim + 1:  # per-step outputs: read out as the runtime will
                got = add_block(got, OutputSums(), readout_start, False)[1]
            got = got.reshape(len(want), -1)
            labels = want.reshape(len(want), -1).argmax(1)
            agree.append(np.mean(got.argmax(1) == labels))
            ce.append(_softmax_cross_entropy(got.astype(np.float64), labels))
        cand.agreement, cand.cross_entropy = float(np.mean(agree)), float(np.mean(ce))
        chosen.append((cand, params))
    best = max(c.agreement for c, _ in chosen)
    floor = best - agreement_tolerance(best, len(next(iter(ann_outputs.values()))))
    return min(((c, p) for c, p in chosen if c.agreement >= floor), key=lambda item: item[0].cross_entropy)


def agreement_tolerance(best: float, n_samples: int) -> float:
    """How far below the best top-1 agreement a candidate may be and still count as its equal: two standard
    errors of the best's agreement on n samples (its disagreement rate at least 1/n). Cross-entropy alone can
    prefer a less confident candidate that agrees far less often (mnist_resnet at T = 1: 55% against 67%)."""
    miss = max(1.0 - best, 1.0 / n_samples)
    return 2.0 * float(np.sqrt(miss * (1.0 - miss) / n_samples))
