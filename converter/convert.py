"""``convert()``: ONNX ANN in, SNN graph description out.

load & check -> passes (clean-up, BatchNorm folding, activation rewrite) -> calibration in onnxruntime ->
V_th per layer or channel (for 'optimal': calibrated layer by layer on the SNN itself) -> SNN description and
threshold-ReLU ANN. The result can be re-emitted for another T or other settings without running the ANN on the
calibration data again (a subset of it is kept for the SNN-side calibration).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from runtime import format as fmt
from runtime.plan import TensorInfo, _info

from .calibrate import ActivationStats, activations, calibrate
from .channels import compact, per_channel_clips, set_neuron_params
from .dry_run import dry_run
from .errors import InputError
from .load import Source, load_model
from .passes import PASSES
from .passes.context import Context
from .passes.spike_readout import READOUTS
from .policy import policy_of
from .report import LayerEntry, NodeEntry, Report
from .layerwise import Candidate, images_for, select as select_candidates
from .thresholds import SNN_SIDE, parse_method, shift_value, threshold
from .writer import build_ann, build_snn, save_atomic

RESETS = fmt.RESETS
CALIBRATED_V_INIT_MAX_T = 2   # the final selection tries a calibrated v_init up to this T (docs/quality.md, ablation)
LTB_MAX_T = 2                 # ... and local threshold balancing up to this T (docs/quality.md)
SNN_CALIBRATION_IMAGES = 512   # calibration samples kept for the SNN-side ('optimal') calibration
SELECTION_NOTE = "optimal: final selection"
READOUT_START_NOTE = "readout_start"


@dataclass
class Settings:
    timesteps: int
    threshold: str
    shift: str | float
    reset: str
    v_init: str | float
    bias_correction: bool | None
    select: bool = True
    readout_start: int = 0
    signed_spikes: bool | None = False  # None: optimal's final selection tries both
    burst: int = 1                      # most spikes per neuron and step (optimal only)


def _check_settings(timesteps, threshold_method, shift, reset, v_init, bias_correction, select=True, readout_start=0,
                    signed_spikes=False, burst=1) -> Settings:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise InputError(f"timesteps must be a positive integer, got {timesteps!r}")
    method = parse_method(threshold_method)
    shift = shift if shift is not None else ("none" if method.kind in SNN_SIDE else "half")
    v_init = v_init if v_init is not None else ("half" if method.kind in SNN_SIDE else 0.0)
    if shift not in ("half", "none"):
        try:
            shift = float(shift)
        except (TypeError, ValueError):
            raise InputError(f"shift must be 'half', 'none' or a number, got {shift!r}") from None
    if reset not in RESETS:
        raise InputError(f"reset must be one of {RESETS}, got {reset!r}")
    if v_init == "calibrated" and method.kind != "optimal":
        raise InputError(f"v_init='calibrated' needs threshold 'optimal' or 'optimal-layer', got {threshold_method!r}")
    if v_init not in ("half", "calibrated"):
        try:
            v_init = float(v_init)
        except (TypeError, ValueError):
            raise InputError(f"v_init must be 'half' (V_th/2), 'calibrated' or a number, got {v_init!r}") from None
    bias_correction = method.kind == "optimal" if bias_correction is None else bias_correction
    if not isinstance(bias_correction, bool):
        raise InputError(f"bias_correction must be True or False, got {bias_correction!r}")
    if not isinstance(select, bool):
        raise InputError(f"select must be True or False, got {select!r}")
    if isinstance(readout_start, bool) or not isinstance(readout_start, (int, np.integer)) or readout_start < 0:
        raise InputError(f"readout_start must be a non-negative integer (steps the readout skips), got {readout_start!r}")
    if signed_spikes is not None and not isinstance(signed_spikes, bool):
        raise InputError(f"signed_spikes must be True, False or None (let optimal's selection choose), got {signed_spikes!r}")
    if signed_spikes is not False and reset != "subtract":
        raise InputError(f"signed spikes need reset 'subtract', got reset {reset!r}")
    if signed_spikes is None and not (method.kind == "optimal" and select):
        raise InputError(f"signed_spikes=None (--spikes auto) lets optimal's final selection choose the neuron; with threshold "
                         f"{threshold_method!r}{'' if select else ' and no selection'} give True or False (--spikes signed|unsigned)")
    if isinstance(burst, bool) or not isinstance(burst, (int, np.integer)) or not 1 <= burst <= fmt.MAX_BURST:
        raise InputError(f"burst must be an integer from 1 to {fmt.MAX_BURST} (most spikes per neuron and step), got {burst!r}")
    if burst > 1 and (method.kind != "optimal" or reset != "subtract" or signed_spikes is not False):
        raise InputError(f"burst {burst} needs threshold 'optimal' or 'optimal-layer' (its V_th search knows the burst), reset "
                         f"'subtract' and unsigned spikes; got threshold {threshold_method!r}, reset {reset!r}, signed_spikes {signed_spikes!r}")
    return Settings(timesteps, threshold_method, shift, reset, v_init, bias_correction, select, int(readout_start), signed_spikes,
                    int(burst))


class ConvertedSNN:
    """The result of a conversion: SNN and threshold-ReLU ANN models, the report, and the means to re-emit
    both for another number of time steps or other settings (from the kept calibration statistics and samples).

    ``thresholds`` maps each neuron layer to its V_th: a float, or a float32 (C,) array when it is per channel.
    """

    def __init__(self, source: Source, ctx: Context, stats: dict[str, ActivationStats], settings: Settings,
                 samples: dict[str, np.ndarray], targets: dict[str, np.ndarray] | None = None):
        self._source, self._ctx, self._stats = source, ctx, stats
        self._samples, self._targets = samples, targets
        self.raw_settings = settings   # as given: None means the method's default
        self.settings = _check_settings(*vars(settings).values())
        self.thresholds: dict[str, float | np.ndarray] = {}
        self.report: Report = ctx.report
        self.model: onnx.ModelProto
        self.ann_model: onnx.ModelProto
        self._emit()

    def _emit(self) -> None:
        s = self.settings
        ctx = self._ctx
        method = parse_method(s.threshold)
        names = [act.node.name for act in ctx.activations]
        stats = {act.node.name: self._stats[act.node.outputs[0].name] for act in ctx.activations}
        meta = {fmt.META_THRESHOLD_METHOD: s.threshold, fmt.META_SOURCE_SHA256: self._source.sha256}
        placeholder = {name: 1.0 for name in names}
        model = build_snn(ctx, placeholder, s.timesteps, {n: 0.0 for n in names}, {n: 0.0 for n in names}, s.reset, self._source.opset, meta)
        signed = bool(s.signed_spikes)
        if method.kind in SNN_SIDE:
            candidates = self._candidates(method) if method.kind == "optimal" else [Candidate(s.v_init, s.bias_correction, "ltb", signed)]
            feeds, targets, ann_outputs = self._calibration_set()
            best, chosen = select_candidates(model, feeds, targets, ann_outputs, s.timesteps, candidates, s.readout_start, per_channel=method.per_channel,
                                             shift=s.shift, reset=s.reset, burst=s.burst, upper_bounds={a.node.name: a.upper_bound for a in ctx.activations},
                                             v_max={n: stats[n].channel_max for n in names})
            s = self.settings = Settings(**(vars(s) | {"v_init": best.v_init, "bias_correction": best.bias, "signed_spikes": best.signed}))
            rule, signed = best.rule, best.signed
            if len(candidates) > 1:
                describe = lambda c: (f"{'ltb, ' if c.rule == 'ltb' else ''}{'signed, ' if c.signed else ''}"
                                      f"v_init {c.v_init} bias {'on' if c.bias else 'off'}")
                self.report.notes.append(
                    f"{SELECTION_NOTE} on {len(next(iter(feeds.values())))} calibration samples at T={s.timesteps} "
                    "(top-1 agreement with the ANN / cross-entropy against its top-1; the smallest cross-entropy among those within "
                    "two standard errors of the best agreement wins): " + ", ".join(
                        f"{describe(c)}: {100 * c.agreement:.1f}% / {c.cross_entropy:.3g}" for c in candidates)
                    + f"; chose {describe(best)}")
            params = {n: {"v_th": compact(p.v_th), "shift": compact(p.shift), "v_init": compact(p.v_init)} for n, p in chosen.items()}
        else:
            rule = None
            params = {}
            for act in ctx.activations:
                v_th = threshold(stats[act.node.name], method, act.upper_bound)
                v_init = v_th / 2 if s.v_init == "half" else v_th * 0.0 + float(s.v_init)
                params[act.node.name] = {"v_th": compact(v_th), "shift": compact(shift_value(s.shift, v_th, s.timesteps)), "v_init": compact(v_init)}
        for p in params.values():
            if signed:
                p["signed"] = 1
            if s.burst > 1:
                p["burst"] = s.burst
        set_neuron_params(model, params)
        if s.readout_start >= s.timesteps:
            self.report.notes.append(f"{READOUT_START_NOTE} {s.readout_start} >= T={s.timesteps}: a run of T steps reads out the plain mean")
        if s.readout_start:
            entry = model.metadata_props.add()
            entry.key, entry.value = fmt.META_READOUT_START, str(s.readout_start)
        fmt.validate(model, "<converted SNN>")
        self.thresholds = {n: params[n]["v_th"] for n in names}
        self.report.layers = [LayerEntry(act.node.name, act.source_op, float(np.max(self.thresholds[act.node.name])), act.upper_bound,
                                         stats[act.node.name].summary(float(np.max(self.thresholds[act.node.name]))))
                              for act in ctx.activations]
        self.report.settings = {"timesteps": s.timesteps, "threshold": s.threshold, "shift": s.shift, "reset": s.reset,
                                "v_init": s.v_init, "bias_correction": s.bias_correction, "select": s.select,
                                "readout_start": s.readout_start, "v_th_rule": rule, "signed_spikes": signed, "burst": s.burst,
                                "readout": self._ctx.options.get("readout", "membrane")}
        self.model = model
        self.ann_model = build_ann(ctx, {n: float(np.max(v)) for n, v in self.thresholds.items()}, self._source.opset)
        per_channel_clips(self.ann_model, {n: v for n, v in self.thresholds.items() if isinstance(v, np.ndarray)},
                          {n: stats[n].ndim for n in names})
        dry_run(self.model, self.ann_model, self._samples)

    def _candidates(self, method) -> list[Candidate]:
        """What optimal's final selection tries: every combination of the knobs the user left unset (bias correction
        on/off; v_init half/calibrated for T <= CALIBRATED_V_INIT_MAX_T; plain or signed neurons if signed_spikes is
        None), and for T <= LTB_MAX_T, if both v_init and bias correction are unset and V_th is per channel, local
        threshold balancing (v_init half, no bias correction) with each neuron."""
        s, raw = self.settings, self.raw_settings
        if not s.select:
            return [Candidate(s.v_init, s.bias_correction, signed=s.signed_spikes)]
        small = s.timesteps <= CALIBRATED_V_INIT_MAX_T
        v_inits = ["half", "calibrated"] if raw.v_init is None and small else [s.v_init]
        biases = [True, False] if raw.bias_correction is None else [s.bias_correction]
        signs = [False, True] if s.signed_spikes is None else [s.signed_spikes]
        candidates = [Candidate(v0, b, signed=sg) for sg in signs for v0 in v_inits for b in biases]
        if raw.v_init is None and raw.bias_correction is None and method.per_channel and s.timesteps <= LTB_MAX_T:
            candidates += [Candidate("half", False, "ltb", sg) for sg in signs]
        return candidates

    def _calibration_set(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Samples, the source ANN's activations on them (neuron name -> array) and its outputs (output name ->
        array), computed once, cut for T."""
        acts = self._ctx.activations
        if self._targets is None:
            clean = build_ann(self._ctx, {a.node.name: float(a.node.inputs[2].values) for a in acts}, self._source.opset)
            outputs = [o.name for o in clean.graph.output]
            values = activations(clean, [a.node.outputs[0].name for a in acts] + outputs, self._samples)
            self._targets = ({a.node.name: values[a.node.outputs[0].name] for a in acts}, {o: values[o] for o in outputs})
        n = images_for(self.settings.timesteps, next(iter(self._samples.values())).shape[0])
        cut = lambda d: {k: v[:n] for k, v in d.items()}
        return cut(self._samples), cut(self._targets[0]), cut(self._targets[1])

    def with_settings(self, **changes) -> "ConvertedSNN":
        """A copy re-emitted with other settings (timesteps, threshold, shift, reset, v_init, bias_correction, select,
        readout_start, signed_spikes, burst)."""
        unknown = sorted(set(changes) - set(vars(self.settings)))
        if unknown:
            raise InputError(f"unknown setting {unknown[0]!r}; settings: {', '.join(vars(self.settings))}")
        current = vars(self.raw_settings) | changes
        settings = Settings(**current)
        notes = [n for n in self.report.notes if not n.startswith((SELECTION_NOTE, READOUT_START_NOTE))]  # per emission
        report = Report(self.report.source, [NodeEntry(**vars(n)) for n in self.report.nodes], [], notes)
        ctx = Context(self._ctx.graph, report, self._ctx.name, self._ctx.activations, self._ctx.options)
        return ConvertedSNN(self._source, ctx, self._stats, settings, self._samples, self._targets)

    def save(self, path: str | os.PathLike) -> None:
        save_atomic(self.model, path)

    def save_ann(self, path: str | os.PathLike) -> None:
        save_atomic(self.ann_model, path)


MAXPOOL_MODES = ("gate", "avg", "pre")


def prepare(model, maxpool: str = "gate", readout: str = "membrane") -> tuple[Source, Context, onnx.ModelProto]:
    """Load and clean a model: run every pass. Returns the source, the pass context, and the clean ANN.

    maxpool: "gate" (MaxPool on spikes becomes the gated onnx2snn.SpikeMaxPool), "avg" (every MaxPool is
    approximated by an AveragePool, in the threshold-ReLU ANN too; reported) or "pre" (a MaxPool after an
    activation moves before it, so its neuron integrates pooled currents; reported). With any mode, a MaxPool
    after an activation of a static input is moved before it: that is exact. readout: "membrane" (the outputs'
    mean over T) or "spikes" (a neuron layer on every output, read out by its spike count; see
    passes/spike_readout.py)."""
    if maxpool not in MAXPOOL_MODES:
        raise InputError(f"maxpool must be one of {MAXPOOL_MODES}, got {maxpool!r}")
    if readout not in READOUTS:
        raise InputError(f"readout must be one of {READOUTS}, got {readout!r}")
    source = load_model(model)
    graph = gs.import_onnx(source.model)
    report = Report(source=source.name)
    used = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in used:
            node.name = f"{node.name or node.op}_{i}"
        used.add(node.name)
        entry = policy_of(node.op)
        report.nodes.append(NodeEntry(node.name, node.op, entry.policy if entry else "refuse", ""))
    ctx = Context(graph, report, source.name, options={"maxpool": maxpool, "readout": readout})
    for graph_pass in PASSES:
        graph_pass.run(ctx)
    if not ctx.activations:
        report.notes.append("the model has no Relu or Clip(0, c) activations: the SNN has no neurons and equals the ANN at every step")
    for entry in report.nodes:
        if not entry.action:
            entry.action = "kept (simulated every step)"
    clean = onnx.ModelProto()
    clean.CopyFrom(build_ann(ctx, {a.node.name: float(a.node.inputs[2].values) for a in ctx.activations}, source.opset))
    return source, ctx, clean


def model_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    initializers = {i.name for i in model.graph.initializer}
    return [_info(vi) for vi in model.graph.input if vi.name not in initializers]


def convert(model, calibration, timesteps: int = 32, threshold: str = "optimal", shift: str | float | None = None,
            reset: str = "subtract", v_init: str | float | None = None, bias_correction: bool | None = None, batch_size: int = 64,
            progress: bool | None = None, maxpool: str = "gate", select: bool = True, readout: str = "membrane",
            readout_start: int = 0, signed_spikes: bool | None = False, burst: int = 1) -> ConvertedSNN:
    """Convert an ONNX ANN (path, bytes or ModelProto) into an SNN.

    calibration: an array (single-input models), a dict input name -> array, or an iterable of such batches
    (tuples such as a DataLoader's (images, labels) are taken input by input). threshold: see
    ``thresholds.METHODS_HELP``; shift: 'half' (V_th/2T), 'none' or a float; reset: 'subtract' or 'zero';
    v_init: a float, 'half' (V_th/2) or 'calibrated' (searched per channel, optimal only). shift and v_init
    default to what works best with the method: 'none' and 'half' for 'optimal', the paper's 'half' and 0 otherwise.
    bias_correction: for
    'optimal', add to each channel's shift the mean error it leaves on the calibration data; maxpool: 'gate'
    (spiking max pooling), 'avg' (approximate MaxPool by AveragePool, reported) or 'pre' (MaxPool before the
    neuron, approximate, reported); readout: 'membrane' (each output's mean over T, the default) or 'spikes'
    (each output through one more neuron layer, read out by its spike count; reported); readout_start: the
    steps the readout skips (delayed readout, stored in the file; default 0). select: for 'optimal', try every
    combination of the knobs left at their default (bias correction on or off; v_init half or calibrated up to
    T = CALIBRATED_V_INIT_MAX_T, and local threshold balancing up to LTB_MAX_T), simulate each whole SNN on the
    calibration data and keep the one whose output (read out as the file will be) agrees best with the ANN's
    (reported in the notes); select=False uses the defaults (v_init half, bias correction on). signed_spikes:
    True writes signed IF neurons (a negative spike takes back an excess; a format extension, see
    docs/format.md), None lets optimal's final selection try both (twice the calibration time). burst: the most
    spikes a neuron may fire in one step (1: the paper's neuron; B > 1: burst neurons, a format extension for
    small T, optimal only, see docs/format.md).
    """
    _check_settings(timesteps, threshold, shift, reset, v_init, bias_correction, select, readout_start, signed_spikes, burst)
    settings = Settings(timesteps, threshold, shift, reset, v_init, bias_correction, select, readout_start, signed_spikes, burst)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    source, ctx, clean = prepare(model, maxpool, readout)
    names = [a.node.outputs[0].name for a in ctx.activations]
    stats, samples = calibrate(clean, model_inputs(clean), names, calibration, batch_size, progress, keep=SNN_CALIBRATION_IMAGES)
    del clean  # emitted again from the graph: a large model's weights are not held once more meanwhile
    return ConvertedSNN(source, ctx, stats, settings, samples)
