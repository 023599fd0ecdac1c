"""Threshold methods: names, per-channel variants, and the SNN-side 'optimal' calibration, against onnxruntime."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import GraphBuilder, cnn, mlp

import converter
from converter import InputError
from converter.layerwise import agreement_tolerance
from converter.thresholds import Method, parse_method
from runtime import InferenceSession


def ort_run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("name, method", [
    ("max", Method("max", None, False)), ("p99.9", Method("percentile", 99.9, False)),
    ("max-channel", Method("max", None, True)), ("p99.9-channel", Method("percentile", 99.9, True)),
    ("optimal", Method("optimal", None, True)), ("optimal-layer", Method("optimal", None, False)),
    ("ltb", Method("ltb", None, True)),
])
def test_method_names(name, method):
    assert parse_method(name) == method


@pytest.mark.parametrize("name", ["p0", "p101", "max-layer", "optimal-channel", "ltb-layer", "ltb-channel", "best", ""])
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


def _neuron_params(model) -> list:
    return [(n.name, [(a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute]) for n in model.graph.node if n.op_type == "IFNeuron"]


def test_final_selection_keeps_the_candidate_the_runtime_finds_closest_to_the_ann():
    model = cnn()
    calib = np.random.default_rng(3).random((64, 2, 12, 12)).astype(np.float32)
    ann = ort_run(model, calib)
    snn = converter.convert(model, calib, timesteps=2, progress=False)
    note = next(n for n in snn.report.notes if n.startswith("optimal: final selection"))
    assert note.startswith("optimal: final selection on 64 calibration samples at T=2")
    fixed = {}  # each candidate with its knobs fixed: no selection, the runtime measures each one
    for v_init in ("half", "calibrated"):
        for bias in (True, False):
            fixed[f"v_init {v_init} bias {'on' if bias else 'off'}"] = snn.with_settings(v_init=v_init, bias_correction=bias)
    fixed["ltb, v_init half bias off"] = snn.with_settings(threshold="ltb")
    scores, agreement = {}, {}
    for label, other in fixed.items():
        assert not any(n.startswith("optimal: final selection") for n in other.report.notes)
        out = InferenceSession(other.model).run(None, {"x": calib}, timesteps=2)[0]
        scores[label], agreement[label] = _cross_entropy(out, ann), float(np.mean(out.argmax(1) == ann.argmax(1)))
    chosen = note.rsplit("; chose ", 1)[1]
    best = max(agreement.values())
    eligible = [k for k in scores if agreement[k] >= best - agreement_tolerance(best, len(calib)) - 1e-9]
    assert chosen in eligible and scores[chosen] <= min(scores[k] for k in eligible) + 1e-4
    assert _neuron_params(snn.model) == _neuron_params(fixed[chosen].model)


def test_agreement_tolerance_is_two_standard_errors():
    assert agreement_tolerance(0.666, 500) == pytest.approx(2 * np.sqrt(0.334 * 0.666 / 500))  # 4.2 points
    assert agreement_tolerance(1.0, 500) == pytest.approx(2 * np.sqrt(0.002 * 0.998 / 500))    # 100%: a 1/n miss rate
    assert agreement_tolerance(0.99, 10_000) < agreement_tolerance(0.99, 100)


def test_local_threshold_balancing_follows_its_update_rule():
    from converter.layerwise import LTB_PASSES, balanced_thresholds
    # one channel, values 1 and 3: the first update adds 2 x mean overflow = 4, after which nothing overflows
    assert balanced_thresholds(np.array([[[1.0]], [[3.0]]])).tolist() == [4.0]
    x = np.random.default_rng(7).exponential(size=(250, 3, 5))
    v_th = np.zeros(3)
    for _ in range(LTB_PASSES):  # the rule written out: blocks of 100 images
        for block in (x[:100], x[100:200], x[200:]):
            v_th += 2 * np.clip(block - v_th[None, :, None], 0, None).mean(axis=(0, 2))
    np.testing.assert_allclose(balanced_thresholds(x), v_th, rtol=1e-12)
    assert np.all(v_th < x.max(axis=(0, 2)))  # a thin tail: it stops short of the maximum


def test_ltb_snn_converges_to_its_threshold_relu_ann():
    model = cnn()
    rng = np.random.default_rng(8)
    calib, x = rng.random((96, 2, 12, 12)).astype(np.float32), rng.random((32, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(model, calib, timesteps=8, threshold="ltb", progress=False)
    assert snn.report.settings["threshold"] == "ltb"
    assert snn.report.settings["v_init"] == "half" and snn.report.settings["bias_correction"] is False
    assert not any(n.startswith("optimal: final selection") for n in snn.report.notes)
    assert all(isinstance(v, np.ndarray) for v in snn.thresholds.values())
    errors = {}
    for steps in (8, 256):
        other = snn.with_settings(timesteps=steps)  # V_th from the currents simulated at that T
        want = ort_run(other.ann_model, x)  # its threshold-ReLU ANN, in onnxruntime
        got = InferenceSession(other.model).run(None, {"x": x}, timesteps=steps)[0]
        errors[steps] = float(np.mean(np.abs(got - want)))
    assert errors[256] < 0.25 * errors[8]
    assert errors[256] < 0.02 * float(np.mean(np.abs(want)))
    with pytest.raises(InputError, match="v_init='calibrated' needs threshold 'optimal'"):
        snn.with_settings(v_init="calibrated")


def test_a_fixed_knob_is_not_searched_and_select_false_keeps_the_defaults():
    model = cnn()
    calib = np.random.default_rng(4).random((48, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(model, calib, timesteps=2, v_init=0.25, progress=False)
    note = next(n for n in snn.report.notes if n.startswith("optimal: final selection"))
    tried = note.split("; chose ")[0]
    assert tried.count("v_init 0.25 bias") == 2 and "calibrated" not in tried and "ltb" not in tried
    plain = snn.with_settings(v_init=None, select=False)
    assert plain.report.settings["v_init"] == "half" and plain.report.settings["bias_correction"] is True
    assert not any(n.startswith("optimal: final selection") for n in plain.report.notes)
    with pytest.raises(InputError, match="select must be True or False"):
        snn.with_settings(select="yes")


def _pool_cnn(first: bool):
    """Conv-Relu(-MaxPool)-Conv-Relu(-MaxPool)-GlobalAveragePool-Gemm: the MaxPool after the first or the second Relu."""
    b = GraphBuilder(5)
    x = b.relu(b.conv("x", 2, 6, pads=[1, 1, 1, 1]))
    if first:
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.relu(b.conv(x, 6, 8, pads=[1, 1, 1, 1]))
    if not first:
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    y = b.gemm(b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1), 8, 4)
    return b.model([("x", ["N", 2, 8, 8])], [y])


def _producer_ops(model, op):
    produced = {o: n for n in model.graph.node for o in n.output}
    return [produced[n.input[0]].op_type if n.input[0] in produced else "input" for n in model.graph.node if n.op_type == op]


@pytest.mark.parametrize("maxpool", ["gate", "pre"])
def test_a_maxpool_after_a_static_activation_moves_before_the_neuron_exactly(maxpool):
    model = _pool_cnn(first=True)
    x = np.random.default_rng(5).random((32, 2, 8, 8)).astype(np.float32)
    snn = converter.convert(model, x, timesteps=64, threshold="max-channel", maxpool=maxpool, progress=False)
    assert _producer_ops(snn.model, "MaxPool") == ["Conv"]          # pooled currents, then the neuron
    assert not any(n.op_type == "SpikeMaxPool" for n in snn.model.graph.node)
    assert any(n.op == "MaxPool" and "exact" in n.action for n in snn.report.nodes)
    np.testing.assert_allclose(ort_run(snn.ann_model, x), ort_run(model, x), rtol=1e-4, atol=1e-5)
    got = InferenceSession(snn.model).run(None, {"x": x}, timesteps=64)[0]
    want = ort_run(model, x)
    assert np.mean(np.abs(got - want)) < 0.05 * np.mean(np.abs(want))


def test_a_maxpool_on_spikes_moves_before_the_neuron_only_when_asked_and_reported():
    model = _pool_cnn(first=False)
    x = np.random.default_rng(6).random((32, 2, 8, 8)).astype(np.float32)
    gate = converter.convert(model, x, timesteps=8, progress=False)
    assert [n.op_type for n in gate.model.graph.node].count("SpikeMaxPool") == 1
    pre = converter.convert(model, x, timesteps=8, maxpool="pre", progress=False)
    assert _producer_ops(pre.model, "SpikeMaxPool") == ["Conv"]  # it pools the currents, then the neuron fires
    assert any("at the user's request" in note for note in pre.report.notes)
    # the threshold-ReLU ANN is unchanged by the move (max commutes with a monotone activation)
    np.testing.assert_allclose(ort_run(pre.with_settings(threshold="max-channel").ann_model, x), ort_run(model, x), rtol=1e-4, atol=1e-5)
