"""Conversions against onnxruntime on the source model; passes; refusals; convergence of the SNN with T."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import GraphBuilder, cnn, mlp

import converter
from converter import CalibrationError, UnsupportedOpError
from runtime import InferenceSession


def ort_run(model, x):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def with_extras() -> onnx.ModelProto:
    """A model with what exporters leave behind: Identity, Dropout, a BN with no Conv before it, ReLU6, Softmax."""
    b = GraphBuilder(3)
    x = b.node("Identity", ["x"])
    x = b.batchnorm(x, 2)                                      # on the input: kept as a per-channel affine
    x = b.relu(b.batchnorm(b.conv(x, 2, 4, pads=[1, 1, 1, 1]), 4))
    x = b.node("Dropout", [x])
    x = b.node("Clip", [b.conv(x, 4, 4, pads=[1, 1, 1, 1]), b.const(np.float32(0.0)), b.const(np.float32(6.0))])
    x = b.node("Flatten", [b.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    y = b.node("Softmax", [b.gemm(x, 4 * 4 * 4, 3)], axis=1)
    return b.model([("x", ["N", 2, 8, 8])], [y])


CASES = {"mlp": (mlp, (12,)), "cnn": (cnn, (2, 12, 12)), "cnn-no-bn": (lambda: cnn(batchnorm=False), (2, 12, 12)),
         "extras": (with_extras, (2, 8, 8))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_threshold_ann_equals_source_when_nothing_is_clipped(name):
    make, shape = CASES[name]
    model = make()
    x = np.random.default_rng(0).random((40,) + shape).astype(np.float32)
    snn = converter.convert(model, x, timesteps=16, threshold="max", progress=False)
    want = ort_run(model, x)
    got = ort_run(snn.ann_model, x)
    if name == "extras":  # the output Softmax was dropped: compare logits through softmax
        got = np.exp(got - got.max(axis=1, keepdims=True))
        got /= got.sum(axis=1, keepdims=True)
        assert any("Softmax" in note for note in snn.report.notes)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_report_says_what_happened_to_every_node():
    x = np.random.default_rng(0).random((20, 2, 8, 8)).astype(np.float32)
    report = converter.convert(with_extras(), x, timesteps=8, progress=False).report
    actions = {n.op: n.action for n in report.nodes}
    assert actions["Identity"].startswith("removed") and actions["Dropout"].startswith("removed")
    assert "per-channel affine" in [n.action for n in report.nodes if n.op == "BatchNormalization"][0]
    assert "folded into Conv" in [n.action for n in report.nodes if n.op == "BatchNormalization"][1]
    assert actions["Softmax"].startswith("dropped") and actions["Relu"].startswith("threshold ReLU")
    assert all(n.action for n in report.nodes)
    clip_layer = next(l for l in report.layers if l.source_op == "Clip")
    assert clip_layer.upper_bound == 6.0 and clip_layer.v_th <= 6.0
    assert all(0 <= l.stats["clipped_fraction"] <= 1 for l in report.layers)
    assert report.to_dict()["settings"]["threshold"] == "optimal"


def test_threshold_methods_order():
    x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    snn = converter.convert(mlp(), x, timesteps=8, threshold="max", progress=False)
    vmax = snn.thresholds
    vp = snn.with_settings(threshold="p99").thresholds
    for name in vmax:
        assert 0 < vp[name] <= vmax[name]
    assert snn.with_settings(threshold="p100").thresholds == pytest.approx(vmax)


def test_snn_converges_to_threshold_ann_as_t_grows():
    model = cnn()
    x = np.random.default_rng(0).random((64, 2, 12, 12)).astype(np.float32)
    errors = []
    for steps in (16, 64, 256):
        snn = converter.convert(model, x, timesteps=steps, threshold="p99.9", progress=False)
        want = ort_run(snn.ann_model, x[:16])
        got = InferenceSession(snn.model).run(None, {"x": x[:16]}, timesteps=steps)[0]
        errors.append(float(np.mean(np.abs(got - want))))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 4  # roughly 1/T: 16x more steps, well over 4x less error


def test_old_opset_is_upgraded():
    b = GraphBuilder(0, opset=9)
    y = b.gemm(b.relu(b.gemm("x", 12, 16)), 16, 3)
    model = b.model([("x", ["N", 12])], [y], ir_version=4)
    x = np.random.default_rng(0).random((20, 12)).astype(np.float32)
    snn = converter.convert(model, x, timesteps=8, threshold="max", progress=False)
    np.testing.assert_allclose(ort_run(snn.ann_model, x), ort_run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, attrs, message", [
    ("Sigmoid", {}, "op Sigmoid has no rate-coded equivalent"),
    ("LeakyRelu", {"alpha": 0.1}, "op LeakyRelu has no rate-coded equivalent"),
    ("Softmax", {"axis": 1}, "Softmax inside the network"),
    ("Erf", {}, "op Erf is not supported yet"),
])
def test_unsupported_ops_are_refused_by_name(op, attrs, message):
    b = GraphBuilder(0)
    hidden = b.node(op, [b.gemm("x", 12, 8)], **attrs)
    y = b.gemm(b.relu(b.gemm(hidden, 8, 8)), 8, 3)
    model = b.model([("x", ["N", 12])], [y])
    with pytest.raises(UnsupportedOpError, match=f"node '{op}_2'.*{message}"):
        converter.convert(model, np.zeros((4, 12), np.float32), progress=False)


def test_product_of_activations_is_refused():
    b = GraphBuilder(0)
    a = b.relu(b.gemm("x", 12, 8))
    y = b.gemm(b.node("Mul", [a, a]), 8, 3)
    with pytest.raises(UnsupportedOpError, match="Mul of two activations is not linear"):
        converter.convert(b.model([("x", ["N", 12])], [y]), np.zeros((4, 12), np.float32), progress=False)


def test_calibration_forms_agree():
    x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    model = mlp()
    ref = converter.convert(model, x, timesteps=8, threshold="max", progress=False).thresholds
    as_dict = converter.convert(model, {"x": x}, timesteps=8, threshold="max", progress=False).thresholds
    as_batches = converter.convert(model, ((x[i:i + 10], np.zeros(10)) for i in range(0, 64, 10)), timesteps=8,
                                   threshold="max", progress=False).thresholds
    assert ref == as_dict == as_batches


@pytest.mark.parametrize("calibration, message", [
    (np.zeros((10, 13), np.float32), "calibration data: input 'x': expected shape"),
    (np.zeros((10,), np.float32), "expected rank 2"),
    (np.full((10, 12), np.nan, np.float32), "120 NaN/Inf values"),
    ({"y": np.zeros((10, 12), np.float32)}, "input 'x' missing"),
    (iter([]), "calibration data is empty"),
    (np.array(["a", "b"], dtype=object), "object arrays are not accepted"),
])
def test_bad_calibration_is_refused(calibration, message):
    with pytest.raises(CalibrationError, match=message.replace("(", r"\(")):
        converter.convert(mlp(), calibration, progress=False)


def test_bundled_mnist_cnn_is_near_lossless_at_t4():
    from converter.assets import bundled_path
    calib = np.load(bundled_path("mnist_calib.npz"))["image"]
    data = np.load(bundled_path("mnist_eval.npz"))
    x, y = data["image"][:300], data["y"][:300]
    path = str(bundled_path("mnist_vgg.onnx"))
    ann_acc = np.mean(ort.InferenceSession(path).run(None, {"image": x})[0].argmax(1) == y)
    snn = converter.convert(path, calib, timesteps=4, progress=False)  # optimal: calibrated on the SNN itself
    snn_acc = np.mean(InferenceSession(snn.model).run(None, {"image": x})[0].argmax(1) == y)
    assert snn_acc >= ann_acc - 0.01


@pytest.mark.parametrize("threshold", ["max", "optimal"])
def test_spike_readout_adds_an_output_neuron_layer_and_tracks_the_clipped_ann(threshold):
    model = cnn()
    rng = np.random.default_rng(11)
    calib, x = rng.random((96, 2, 12, 12)).astype(np.float32), rng.random((32, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(model, calib, timesteps=256, threshold=threshold, readout="spikes", select=False, progress=False)
    plain = converter.convert(model, calib, timesteps=256, threshold=threshold, select=False, progress=False)
    ops = [n.op_type for n in snn.model.graph.node]
    assert ops[-1] == "IFNeuron" and len(snn.thresholds) == len(plain.thresholds) + 1
    assert [o.name for o in snn.model.graph.output] == [o.name for o in model.graph.output]
    assert any(n.startswith(f"readout by output spikes: output '{model.graph.output[0].name}'") for n in snn.report.notes)
    assert all(np.array_equal(snn.thresholds[k], v) for k, v in plain.thresholds.items())  # the hidden layers are as before
    logits, clipped = ort_run(plain.ann_model, x), ort_run(snn.ann_model, x)
    v_out = snn.thresholds[snn.report.layers[-1].layer]  # a float, or one V_th per output channel
    np.testing.assert_allclose(clipped, np.minimum(np.maximum(logits, 0), v_out), rtol=1e-5, atol=1e-6)  # the ANN gets the same clip
    got = InferenceSession(snn.model).run(None, {"x": x}, timesteps=256)[0]
    assert np.all(got >= 0)
    assert float(np.mean(np.abs(got - clipped))) < 0.05 * float(np.mean(np.abs(clipped))) + 1e-3
    with pytest.raises(converter.InputError, match="readout must be one of"):
        converter.convert(model, calib, readout="count", progress=False)
