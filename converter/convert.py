"""``convert()``: ONNX ANN in, SNN graph description out.

load & check -> passes (clean-up, BatchNorm folding, activation rewrite) -> calibration in onnxruntime ->
per-layer V_th -> SNN description and threshold-ReLU ANN. The result can be re-emitted for another T without
calibrating again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from runtime import format as fmt
from runtime.plan import TensorInfo, _info

from .calibrate import ActivationStats, calibrate
from .errors import InputError
from .load import Source, load_model
from .passes import PASSES
from .passes.context import Context
from .policy import policy_of
from .report import LayerEntry, NodeEntry, Report
from .thresholds import parse_method, shift_value, threshold
from .writer import build_ann, build_snn, save_atomic

RESETS = fmt.RESETS


@dataclass
class Settings:
    timesteps: int
    threshold: str
    shift: str | float
    reset: str
    v_init: str | float


def _check_settings(timesteps, threshold_method, shift, reset, v_init) -> Settings:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise InputError(f"timesteps must be a positive integer, got {timesteps!r}")
    parse_method(threshold_method)
    if shift not in ("half", "none"):
        try:
            shift = float(shift)
        except (TypeError, ValueError):
            raise InputError(f"shift must be 'half', 'none' or a number, got {shift!r}") from None
    if reset not in RESETS:
        raise InputError(f"reset must be one of {RESETS}, got {reset!r}")
    if v_init != "half":
        try:
            v_init = float(v_init)
        except (TypeError, ValueError):
            raise InputError(f"v_init must be 'half' (V_th/2) or a number, got {v_init!r}") from None
    return Settings(timesteps, threshold_method, shift, reset, v_init)


class ConvertedSNN:
    """The result of a conversion: SNN and threshold-ReLU ANN models, the report, and the means to re-emit
    both for another number of time steps (thresholds are recomputed from the kept calibration statistics)."""

    def __init__(self, source: Source, ctx: Context, stats: dict[str, ActivationStats], settings: Settings):
        self._source, self._ctx, self._stats = source, ctx, stats
        self.settings = settings
        self.thresholds: dict[str, float] = {}
        self.report: Report = ctx.report
        self.model: onnx.ModelProto
        self.ann_model: onnx.ModelProto
        self._emit()

    def _emit(self) -> None:
        s = self.settings
        ctx = self._ctx
        self.thresholds, shifts, inits = {}, {}, {}
        self.report.layers = []
        for act in ctx.activations:
            name = act.node.name
            v_th = threshold(self._stats[act.node.outputs[0].name], s.threshold, s.timesteps, s.shift, act.upper_bound)
            self.thresholds[name] = v_th
            shifts[name] = shift_value(s.shift, v_th, s.timesteps)
            inits[name] = v_th / 2 if s.v_init == "half" else float(s.v_init)
            self.report.layers.append(LayerEntry(name, act.source_op, v_th, act.upper_bound,
                                                 self._stats[act.node.outputs[0].name].summary(v_th)))
        self.report.settings = {"timesteps": s.timesteps, "threshold": s.threshold, "shift": s.shift, "reset": s.reset, "v_init": s.v_init}
        meta = {fmt.META_THRESHOLD_METHOD: s.threshold, fmt.META_SOURCE_SHA256: self._source.sha256}
        self.model = build_snn(ctx, self.thresholds, s.timesteps, shifts, inits, s.reset, self._source.opset, meta)
        self.ann_model = build_ann(ctx, self.thresholds, self._source.opset)

    def with_settings(self, **changes) -> "ConvertedSNN":
        """A copy re-emitted with other settings (timesteps, threshold, shift, reset, v_init); no recalibration."""
        current = vars(self.settings) | changes
        settings = _check_settings(current["timesteps"], current["threshold"], current["shift"], current["reset"], current["v_init"])
        report = Report(self.report.source, [NodeEntry(**vars(n)) for n in self.report.nodes], [], list(self.report.notes))
        ctx = Context(self._ctx.graph, report, self._ctx.name, self._ctx.activations)
        return ConvertedSNN(self._source, ctx, self._stats, settings)

    def save(self, path: str | os.PathLike) -> None:
        save_atomic(self.model, path)

    def save_ann(self, path: str | os.PathLike) -> None:
        save_atomic(self.ann_model, path)


MAXPOOL_MODES = ("gate", "avg")


def prepare(model, maxpool: str = "gate") -> tuple[Source, Context, onnx.ModelProto]:
    """Load and clean a model: run every pass. Returns the source, the pass context, and the clean ANN.

    maxpool: "gate" (MaxPool on spikes becomes the gated onnx2snn.SpikeMaxPool) or "avg" (every MaxPool is
    approximated by an AveragePool, in the threshold-ReLU ANN too; reported)."""
    if maxpool not in MAXPOOL_MODES:
        raise InputError(f"maxpool must be one of {MAXPOOL_MODES}, got {maxpool!r}")
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
    ctx = Context(graph, report, source.name, options={"maxpool": maxpool})
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


def convert(model, calibration, timesteps: int = 32, threshold: str = "optimal", shift: str | float = "half",
            reset: str = "subtract", v_init: str | float = 0.0, batch_size: int = 64,
            progress: bool | None = None, maxpool: str = "gate") -> ConvertedSNN:
    """Convert an ONNX ANN (path, bytes or ModelProto) into an SNN.

    calibration: an array (single-input models), a dict input name -> array, or an iterable of such batches
    (tuples such as a DataLoader's (images, labels) are taken input by input). threshold: 'max', 'pXX.X' or
    'optimal'; shift: 'half' (V_th/2T), 'none' or a float; reset: 'subtract' or 'zero'; v_init: a float or 'half';
    maxpool: 'gate' (spiking max pooling) or 'avg' (approximate MaxPool by AveragePool, reported).
    """
    settings = _check_settings(timesteps, threshold, shift, reset, v_init)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    source, ctx, clean = prepare(model, maxpool)
    names = [a.node.outputs[0].name for a in ctx.activations]
    stats = calibrate(clean, model_inputs(clean), names, calibration, batch_size, progress)
    return ConvertedSNN(source, ctx, stats, settings)
