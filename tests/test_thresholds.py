"""Threshold methods: names, per-channel variants, and the SNN-side 'optimal' calibration, against onnxruntime."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import cnn, mlp

import converter
from converter import InputError
from converter.thresholds import Method, parse_method
from runtime import InferenceSession


def ort_run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("name, method", [
    ("max", Method("max", None, False)), ("p99.9", Method("percentile", 99.9, False)),
    ("max-channel", Method("max", None, True)), ("p99.9-channel", Method("percentile", 99.9, True)),
    ("optimal", Method("optimal", None, True)), ("optimal-layer", Method("optimal", None, False)),
])
def test_method_names(name, method):
    assert parse_method(name) == method


@pytest.mark.parametrize("name", ["p0", "p101", "max-layer", "optimal-channel", "best", ""])
def test_unknown_methods_are_refused_with_the_list(name):
    with pytest.raises(InputError, match="optimal-layer"):
        parse_method(name)


def test_calibrated_v_init_needs_optimal():
    with pytest.raises(InputError, match="v_init='calibrated' needs threshold 'optimal'"):
        converter.convert(mlp(), np.zeros((8, 12), np.float32), threshold="max", v_init="calibrated", progress=False)


def test_per_channel_max_is_each_channels_max_and_the_ann_keeps_the_source_function():
    model = cnn()
    x = np.random.default_rng(0).random((48, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(model, x, timesteps=8, threshold="max-channel", progress=False)
    layer = snn.thresholds
    assert any(isinstance(v, np.ndarray) and v.size > 1 for v in layer.values())
    scalar = snn.with_settings(threshold="max").thresholds
    for name, v in layer.items():
        assert np.max(v) == pytest.approx(scalar[name], rel=1e-6)
    # V_th = each channel's calibration max: the per-channel threshold-ReLU ANN clips nothing on that data.
    np.testing.assert_allclose(ort_run(snn.ann_model, x), ort_run(model, x), rtol=1e-4, atol=1e-5)
    neurons = [n for n in snn.model.graph.node if n.op_type == "IFNeuron"]
    assert any(a.type == onnx.AttributeProto.TENSOR for n in neurons for a in n.attribute)
    InferenceSession(snn.model).run(None, {"x": x[:4]}, timesteps=8)  # the runtime reads per-channel attributes


@pytest.mark.parametrize("make, shape", [(mlp, (12,)), (cnn, (2, 12, 12))])
def test_optimal_tracks_the_ann_closer_than_the_paper_at_small_t(make, shape):
    model = make()
    rng = np.random.default_rng(1)
    calib = rng.random((128,) + shape).astype(np.float32)
    x = rng.random((64,) + shape).astype(np.float32)
    want = ort_run(model, x)
    errors = {}
    for label, settings in {"paper": dict(threshold="max", shift="half", v_init=0.0), "optimal": dict(threshold="optimal"),
                            "optimal-layer": dict(threshold="optimal-layer")}.items():
        snn = converter.convert(model, calib, timesteps=4, progress=False, **settings)
        got = InferenceSession(snn.model).run(None, {"x": x}, timesteps=4)[0]
        errors[label] = float(np.mean(np.abs(got - want)))
    assert errors["optimal"] < 0.7 * errors["paper"]
    assert errors["optimal-layer"] < errors["paper"]


def test_bias_correction_and_v_init_are_ablatable():
    model = cnn()
    calib = np.random.default_rng(2).random((96, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(model, calib, timesteps=4, progress=False)
    assert snn.report.settings["v_init"] == "half" and snn.report.settings["shift"] == "none"
    plain = snn.with_settings(bias_correction=False, v_init=0.0)
    calibrated = snn.with_settings(v_init="calibrated")
    for other in (plain, calibrated):
        assert other.model.SerializeToString() != snn.model.SerializeToString()
    with pytest.raises(InputError, match="unknown setting 'bias'"):
        snn.with_settings(bias=False)


def _cross_entropy(readout, ann):
    z = readout - readout.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(ann)), ann.argmax(1)]))


def test_final_selection_keeps_the_candidate_the_runtime_finds_closest_to_the_ann():
    model = cnn()
    calib = np.random.default_rng(3).random((64, 2, 12, 12)).astype(np.float32)
    ann = ort_run(model, calib)
    snn = converter.convert(model, calib, timesteps=2, progress=False)
    assert any(note.startswith("optimal: final selection on 64 calibration samples at T=2") for note in snn.report.notes)
    scores = {}
    for v_init in ("half", "calibrated"):
        for bias in (True, False):  # each knob fixed: no selection, the runtime measures each candidate
            fixed = snn.with_settings(v_init=v_init, bias_correction=bias)
            assert not any(note.startswith("optimal: final selection") for note in fixed.report.notes)
            scores[v_init, bias] = _cross_entropy(InferenceSession(fixed.model).run(None, {"x": calib}, timesteps=2)[0], ann)
    chosen = (snn.report.settings["v_init"], snn.report.settings["bias_correction"])
    assert scores[chosen] <= min(scores.values()) + 1e-4
    assert snn.model.SerializeToString() == snn.with_settings(**dict(zip(("v_init", "bias_correction"), chosen))).model.SerializeToString()


def test_a_fixed_knob_is_not_searched_and_select_false_keeps_the_defaults():
    model = cnn()
    calib = np.random.default_rng(4).random((48, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(model, calib, timesteps=2, v_init=0.25, progress=False)
    note = next(n for n in snn.report.notes if n.startswith("optimal: final selection"))
    assert note.count("v_init 0.25 bias") == 2 and "calibrated" not in note
    plain = snn.with_settings(v_init=None, select=False)
    assert plain.report.settings["v_init"] == "half" and plain.report.settings["bias_correction"] is True
    assert not any(n.startswith("optimal: final selection") for n in plain.report.notes)
    with pytest.raises(InputError, match="select must be True or False"):
        snn.with_settings(select="yes")
