"""Op coverage: each exporter shape and op converts, its threshold-ReLU ANN matches onnxruntime on the source
model, and the Numba engine matches the NumPy reference on the SNN."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import GraphBuilder
from onnx import TensorProto as TP
from onnx import helper as h

import converter
from runtime import InferenceSession
from runtime.kernels.maxpool import spike_max_pool
from runtime.reference_ops import spike_max_pool_step
from runtime.spike_pool import window_indices


def ort_outputs(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check(model, feeds, timesteps=8, threshold="max", **kw):
    """Threshold-ANN == source (nothing clipped with max thresholds; through a softmax where the converter
    dropped the output Softmax); Numba == reference on the SNN."""
    snn = converter.convert(model, feeds, timesteps=timesteps, threshold=threshold, progress=False, **kw)
    dropped = any("Softmax" in note for note in snn.report.notes)
    for got, want in zip(ort_outputs(snn.ann_model, feeds), ort_outputs(model, feeds)):
        np.testing.assert_allclose(softmax(got) if dropped else got, want, rtol=1e-4, atol=1e-5)
    small = {k: v[:4] for k, v in feeds.items()}
    fast = InferenceSession(snn.model).run(None, small)
    ref = InferenceSession(snn.model, engine="reference").run(None, small)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    return snn


def images(*shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_keras_style_nhwc_transposes_and_matmul_add():
    b = GraphBuilder(1)
    x = b.node("Transpose", ["x"], perm=[0, 3, 1, 2])                       # NHWC -> NCHW around the Conv
    x = b.node("Transpose", [b.relu(b.conv(x, 3, 4, pads=[1, 1, 1, 1]))], perm=[0, 2, 3, 1])
    x = b.node("Reshape", [x, b.const(np.array([-1, 6 * 6 * 4], np.int64))])
    w = b.const(b.rng.standard_normal((144, 5)).astype(np.float32) * 0.1)
    y = b.node("Add", [b.node("MatMul", [b.relu(x), w]), b.const(np.full(5, 0.1, np.float32))])
    check(b.model([("x", ["N", 6, 6, 3])], [y]), {"x": images(16, 6, 6, 3)})


def test_dynamo_style_reducemean_squeeze_unsqueeze_and_shape_arithmetic():
    b = GraphBuilder(2)
    x = b.relu(b.conv("x", 2, 4, pads=[1, 1, 1, 1]))
    pooled = b.node("ReduceMean", [x, b.const(np.array([2, 3], np.int64))], keepdims=1)   # opset 18 axes input
    batch = b.node("Gather", [b.node("Shape", [pooled]), b.const(np.array(0, np.int64))], axis=0)
    shape = b.node("Concat", [b.node("Unsqueeze", [batch, b.const(np.array([0], np.int64))]), b.const(np.array([-1], np.int64))], axis=0)
    flat = b.node("Reshape", [pooled, shape])
    flat = b.node("Squeeze", [b.node("Unsqueeze", [flat, b.const(np.array([1], np.int64))]), b.const(np.array([1], np.int64))])
    y = b.gemm(b.relu(b.gemm(flat, 4, 6)), 6, 3)
    b.opset = 18
    check(b.model([("x", ["N", 2, 5, 5])], [y]), {"x": images(16, 2, 5, 5)})


def test_inception_style_concat_pad_and_multiple_inputs_outputs():
    b = GraphBuilder(3)
    x = b.relu(b.conv("a", 2, 4, pads=[1, 1, 1, 1]))
    left = b.relu(b.conv(x, 4, 3, k=1))
    right = b.relu(b.conv(b.node("Pad", [x, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))]), 4, 5))
    cat = b.node("Concat", [left, right], axis=1)
    side = b.relu(b.gemm("b", 3, 4))
    y1 = b.node("Flatten", [b.node("GlobalAveragePool", [cat])])
    y2 = b.node("Sum", [b.gemm(side, 4, 8), y1])
    check(b.model([("a", ["N", 2, 6, 6]), ("b", ["N", 3])], [y1, y2]), {"a": images(16, 2, 6, 6), "b": images(16, 3, seed=1)})


def test_conv_transpose_resize_and_depthwise():
    b = GraphBuilder(4)
    x = b.relu(b.conv("x", 3, 6, pads=[1, 1, 1, 1]))
    x = b.relu(b.conv(x, 6, 6, group=6, pads=[0, 1, 1, 0], dilations=[1, 2]))
    w = b.const(b.rng.standard_normal((6, 4, 3, 3)).astype(np.float32) * 0.3)
    x = b.relu(b.node("ConvTranspose", [x, w], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]))
    x = b.node("Resize", [x, b.const(np.zeros(0, np.float32)), b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y = b.node("Flatten", [b.node("AveragePool", [b.relu(b.conv(x, 4, 2, pads=[1, 1, 1, 1]))], kernel_shape=[3, 3],
                                  strides=[3, 3], ceil_mode=1, count_include_pad=1)])
    check(b.model([("x", ["N", 3, 6, 5])], [y]), {"x": images(16, 3, 6, 5)})


def maxpool_model():
    b = GraphBuilder(5)
    x = b.node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])           # on the analog input: exact
    x = b.relu(b.conv(b.relu(b.conv(x, 2, 6, pads=[1, 1, 1, 1])), 6, 6, pads=[1, 1, 1, 1]))
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # on spikes: gated
    x = b.relu(b.conv(x, 6, 8, pads=[1, 1, 1, 1]))
    y = b.gemm(b.node("Flatten", [b.node("GlobalAveragePool", [x])]), 8, 4)
    return b.model([("x", ["N", 2, 16, 16])], [y])


def test_maxpool_is_gated_on_spikes_and_plain_on_the_input():
    x = images(32, 2, 16, 16)
    snn = check(maxpool_model(), {"x": x})
    ops = [(n.domain, n.op_type) for n in snn.model.graph.node if "MaxPool" in n.op_type]
    assert ops == [("", "MaxPool"), ("onnx2snn", "SpikeMaxPool")]
    want = ort_outputs(snn.ann_model, {"x": x[:8]})[0]
    errors = []
    for steps in (16, 64, 256):
        model = snn.with_settings(timesteps=steps).model
        errors.append(np.abs(InferenceSession(model).run(None, {"x": x[:8]})[0] - want).mean())
    assert errors[0] > errors[1] > errors[2] and errors[2] < errors[0] / 4


def test_maxpool_avg_is_opt_in_and_reported():
    snn = converter.convert(maxpool_model(), images(16, 2, 16, 16), timesteps=8, progress=False, maxpool="avg")
    ops = [n.op_type for n in snn.model.graph.node]
    assert ops.count("MaxPool") == 1 and "SpikeMaxPool" not in ops and ops.count("AveragePool") == 1
    assert any("approximated by an AveragePool" in note for note in snn.report.notes)
    with pytest.raises(converter.InputError, match="maxpool must be one of"):
        converter.convert(maxpool_model(), images(4, 2, 16, 16), progress=False, maxpool="max")


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[2, 2], strides=[2, 2]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                                   dict(kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 1])])
def test_spike_max_pool_kernel_equals_reference(attrs):
    rng = np.random.default_rng(7)
    steps = 6
    x = ((rng.random((steps, 2, 3, 9, 8)) < 0.3) * 0.5).astype(np.float32)
    x[:, :, 1] += rng.random((steps, 2, 9, 8)).astype(np.float32)  # a channel of analog currents, ties broken by value
    totals = np.zeros(x.shape[1:], np.float64)
    ref = []
    for t in range(steps):
        out, totals = spike_max_pool_step(x[t], totals, attrs)
        ref.append(out)
    from runtime.reference_ops import max_pool_geometry
    kernel, strides, pads, dil, size = max_pool_geometry(attrs, x.shape[1:])
    rows = window_indices(kernel[0], strides[0], pads[0], dil[0], size[0], 9)
    cols = window_indices(kernel[1], strides[1], pads[1], dil[1], size[1], 8)
    out = np.empty((steps, 6) + size, np.float32)
    spike_max_pool(np.ascontiguousarray(x.reshape(steps, 6, 9, 8)), rows, cols, out)
    np.testing.assert_array_equal(out.reshape((steps,) + np.stack(ref).shape[1:]), np.stack(ref))


def test_spike_max_pool_rate_tracks_the_largest_input_rate():
    """Two inputs firing at rates 0.25 and 0.75 (period 4): the gated output fires at 0.75."""
    steps = 400
    t = np.arange(steps)
    a = (t % 4 == 0).astype(np.float32)
    b_ = (t % 4 != 0).astype(np.float32)
    x = np.stack([a, b_], axis=-1).reshape(steps, 1, 1, 1, 2)
    totals = np.zeros((1, 1, 1, 2))
    outs = []
    for step in range(steps):
        out, totals = spike_max_pool_step(x[step], totals, dict(kernel_shape=[1, 2]))
        outs.append(out[0, 0, 0, 0])
    assert np.mean(outs) == pytest.approx(0.75, abs=0.01)


def test_old_ir3_opset9_model_converts():
    """Like the structure-only models in onnx's test data: IR 3, opset 9, initializers listed as inputs."""
    b = GraphBuilder(6, opset=9)
    y = b.gemm(b.relu(b.node("Flatten", [b.node("MaxPool", [b.relu(b.conv("x", 1, 4, pads=[1, 1, 1, 1]))],
                                                        kernel_shape=[2, 2], strides=[2, 2])])), 4 * 4 * 4, 3)
    graph = h.make_graph(b.nodes, "old", [h.make_tensor_value_info("x", TP.FLOAT, [1, 1, 8, 8])] +
                         [h.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in b.inits],
                         [h.make_tensor_value_info(y, TP.FLOAT, None)], b.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 9)])
    model.ir_version = 3
    check(onnx.shape_inference.infer_shapes(model), {"x": images(1, 1, 8, 8)})


def test_model_without_activations_converts_with_a_note():
    b = GraphBuilder(8)
    y = b.node("Flatten", [b.node("AveragePool", [b.conv("x", 2, 3)], kernel_shape=[2, 2])])
    snn = check(b.model([("x", ["N", 2, 6, 6])], [y]), {"x": images(8, 2, 6, 6)})
    assert any("no Relu" in note for note in snn.report.notes)


def shufflenet_model(batch=1):
    """Two ShuffleNet units as the structure-only light_shufflenet has them: group 1x1 conv, channel shuffle
    (Reshape with the batch size written out, Transpose, Reshape), depthwise conv; a stride-2 unit that
    concatenates an AveragePool of its input, a stride-1 unit with a residual Sum; a MaxPool after the stem (moved
    before the stem's neuron, exact: its input is the analog image)."""
    b = GraphBuilder(9)

    def shuffle(x, groups, c, hw):
        x = b.node("Reshape", [x, b.const(np.array([batch, groups, c // groups, hw, hw], np.int64))])
        x = b.node("Transpose", [x], perm=[0, 2, 1, 3, 4])
        return b.node("Reshape", [x, b.const(np.array([batch, c, hw, hw], np.int64))])

    def branch(x, c, hw, stride):
        x = shuffle(b.relu(b.batchnorm(b.conv(x, c, 8, k=1, group=2), 8)), 2, 8, hw)
        x = b.batchnorm(b.conv(x, 8, 8, group=8, strides=[stride, stride], pads=[1, 1, 1, 1]), 8)
        return b.batchnorm(b.conv(x, 8, 8, k=1, group=2), 8)

    x = b.relu(b.batchnorm(b.conv("x", 3, 8, strides=[2, 2], pads=[1, 1, 1, 1]), 8))
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    pooled = b.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.relu(b.node("Concat", [branch(x, 8, 8, 2), pooled], axis=1))
    x = b.relu(b.node("Sum", [b.node("Concat", [branch(x, 16, 4, 1)] * 2, axis=1), x]))
    y = b.gemm(b.node("Flatten", [b.node("GlobalAveragePool", [x])]), 16, 5)
    return b.model([("x", [batch, 3, 32, 32])], [y])


def test_shufflenet_units_convert_and_converge():
    """Group conv, channel shuffle, depthwise conv, AveragePool + Concat, Sum: the SNN error shrinks as 1/T."""
    x = {"x": images(1, 3, 32, 32)}
    snn = check(shufflenet_model(), x, threshold="max-channel")
    want = ort_outputs(snn.ann_model, x)[0]
    errors = [np.abs(InferenceSession(snn.with_settings(timesteps=t).model).run(None, x)[0] - want).max() for t in (32, 128)]
    assert errors[1] < errors[0] / 2, errors


def test_optimal_thresholds_on_a_graph_with_a_fixed_batch_reshape():
    """The layer-wise calibration simulates all T steps at once; a Reshape whose shape names the batch size
    (ShuffleNet's channel shuffle, exported at batch 1) must still see one step at a time."""
    x = {"x": images(1, 3, 32, 32)}
    snn = converter.convert(shufflenet_model(), x, timesteps=64, threshold="optimal", progress=False)
    want = ort_outputs(snn.ann_model, x)[0]
    got = InferenceSession(snn.model).run(None, x)[0]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_optimal_on_a_fixed_batch_model_uses_every_calibration_sample():
    """A batch-1 export (its Reshapes name the batch size) is calibrated on all its samples, block by block of
    its batch size, exactly as the same graph with the batch written as 3 calibrates on them in one batch."""
    x = images(3, 3, 32, 32)
    fixed = converter.convert(shufflenet_model(), [x[i:i + 1] for i in range(3)], timesteps=8, threshold="optimal", progress=False)
    whole = converter.convert(shufflenet_model(batch=3), {"x": x}, timesteps=8, threshold="optimal", progress=False)
    one_array = converter.convert(shufflenet_model(), x, timesteps=8, threshold="optimal", progress=False)  # fed 1 by 1
    assert one_array.model.SerializeToString() == fixed.model.SerializeToString()
    params = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute if a.name in ("v_th", "shift", "v_init")}
              for snn in (fixed, whole) for n in snn.model.graph.node if n.op_type == "IFNeuron"]
    half = len(params) // 2
    for got, want in zip(params[:half], params[half:]):
        for key in want:
            g, w = (onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.float64(v) for v in (got[key], want[key]))
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=key)
    (out,) = InferenceSession(fixed.model).run(None, {"x": x[:1]})
    assert np.all(np.isfinite(out))
    with pytest.raises(converter.CalibrationError, match="batch size is fixed at 2; give a multiple of 2"):
        converter.convert(shufflenet_model(batch=2), x, timesteps=8, progress=False)


def test_a_layer_threshold_leaves_channels_below_its_resolution_silent():
    """One V_th for a layer whose channels differ in scale (ShuffleNet: a Concat of a branch and a much larger
    AveragePool path): a channel whose activation is below V_th/(2T) never fires, at any T below V_th/(2a);
    one V_th per channel resolves it. docs/results.md (model corpus) explains the ShuffleNet numbers with this."""
    b = GraphBuilder(10)
    small = b.node("Mul", [b.node("Conv", ["x", b.const(np.full((1, 1, 1, 1), 0.01, np.float32))]), b.const(np.float32(1.0))])
    big = b.node("Conv", ["x", b.const(np.ones((1, 1, 1, 1), np.float32))])
    y = b.node("GlobalAveragePool", [b.relu(b.node("Concat", [small, big], axis=1))])
    model = b.model([("x", ["N", 1, 4, 4])], [y])
    x = {"x": np.full((1, 1, 4, 4), 1.0, np.float32)}          # activations 0.01 and 1.0: V_th = 1.0 per layer
    for t in (16, 32):                                           # 0.01 < 1.0 / (2T): silent
        out = InferenceSession(converter.convert(model, x, timesteps=t, threshold="max", progress=False).model).run(None, x)[0]
        assert out[0, 0, 0, 0] == 0.0 and out[0, 1, 0, 0] == pytest.approx(1.0)
    out = InferenceSession(converter.convert(model, x, timesteps=16, threshold="max-channel", progress=False).model).run(None, x)[0]
    np.testing.assert_allclose(out[0, :, 0, 0], [0.01, 1.0], rtol=1e-5)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_without_bias_runs_in_both_engines(trans_b):
    """A bias-less Gemm (C omitted) with transB: the output width is the weight's row count, not its column count."""
    b = GraphBuilder(7)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [b.relu(b.conv("x", 3, 8, pads=[1, 1, 1, 1]))])], axis=1)
    w = b.rng.standard_normal((10, 8) if trans_b else (8, 10)).astype(np.float32) * 0.3
    y = b.node("Gemm", [x, b.const(w)], transB=trans_b)
    snn = check(b.model([("x", ["N", 3, 6, 6])], [y]), {"x": images(16, 3, 6, 6)})
    assert InferenceSession(snn.model).run(None, {"x": images(4, 3, 6, 6)})[0].shape == (4, 10)


def dynamo_flatten_model():
    """Sub/Div input normalisation, a residual Add, and ``x.view(x.size(0), -1)`` as torch.onnx writes it:
    Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) on a symbolic batch size."""
    b = GraphBuilder(11, opset=13)
    x = b.node("Div", [b.node("Sub", ["x", b.const(np.array(0.5, np.float32))]), b.const(np.array(0.25, np.float32))])
    r1 = b.relu(b.conv(x, 3, 4, pads=[1, 1, 1, 1]))
    r2 = b.relu(b.node("Add", [b.conv(r1, 4, 4, pads=[1, 1, 1, 1]), r1]))
    batch = b.node("Gather", [b.node("Shape", [r2]), b.const(np.array(0, np.int64))], axis=0)
    shape = b.node("Concat", [b.node("Unsqueeze", [batch, b.const(np.array([0], np.int64))]), b.const(np.array([-1], np.int64))], axis=0)
    y = b.gemm(b.node("Reshape", [r2, shape]), 4 * 6 * 6, 5)
    return b.model([("x", ["N", 3, 6, 6])], [y])


@pytest.mark.parametrize("threshold", ["max", "optimal"])
def test_shape_arithmetic_on_the_batch_size_folds_into_a_reshape_target(threshold):
    """The batch-size subgraph becomes the Reshape target [0, -1] (the same for every batch size); the SNN has
    no integer tensors left, runs at any batch size, and the calibration of 'optimal' never sees int64 values."""
    feeds = {"x": images(16, 3, 6, 6)}
    snn = check(dynamo_flatten_model(), feeds) if threshold == "max" else \
        converter.convert(dynamo_flatten_model(), feeds, timesteps=4, threshold=threshold, progress=False)
    ops = [n.op_type for n in snn.model.graph.node]
    assert "Shape" not in ops and "Gather" not in ops and "Concat" not in ops
    reshape = next(n for n in snn.model.graph.node if n.op_type == "Reshape")
    target = next(i for i in snn.model.graph.initializer if i.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, -1]
    assert all("folded: shape arithmetic" in e.action for e in snn.report.nodes if e.op in ("Shape", "Gather", "Unsqueeze", "Concat"))
    for n in (1, 5):
        assert InferenceSession(snn.model).run(None, {"x": images(n, 3, 6, 6)})[0].shape == (n, 5)


def test_shape_arithmetic_that_varies_otherwise_is_left_to_the_runtime():
    """A Reshape target that depends on the batch size in two places ([N, 2, -1] from Shape, then N*2 in the
    middle by a Mul) cannot become a constant: it stays, and both engines evaluate it at every step."""
    b = GraphBuilder(12)
    r = b.relu(b.conv("x", 2, 4, pads=[1, 1, 1, 1]))
    n = b.node("Unsqueeze", [b.node("Gather", [b.node("Shape", [r]), b.const(np.array(0, np.int64))], axis=0), b.const(np.array([0], np.int64))])
    shape = b.node("Concat", [b.node("Mul", [n, b.const(np.array([2], np.int64))]), b.const(np.array([-1], np.int64))], axis=0)
    halves = b.node("Reshape", [r, shape])   # (2N, 4*5*5/2): each sample split in two rows
    y = b.node("Reshape", [b.gemm(halves, 50, 3), b.const(np.array([-1, 6], np.int64))])
    snn = check(b.model([("x", ["N", 2, 5, 5])], [y]), {"x": images(16, 2, 5, 5)})
    assert "Shape" in [n.op_type for n in snn.model.graph.node]


def test_per_channel_ann_keeps_no_unused_initializers(capfd):
    """The threshold-ReLU ANN with per-channel clips drops the replaced Clips' bounds: onnxruntime loads it
    without its 'Removing initializer' warnings."""
    snn = converter.convert(dynamo_flatten_model(), images(32, 3, 6, 6), timesteps=4, threshold="optimal", progress=False)
    used = {name for node in snn.ann_model.graph.node for name in node.input}
    assert {i.name for i in snn.ann_model.graph.initializer} <= used
    options = ort.SessionOptions()
    options.log_severity_level = 2  # warnings on: none may come
    ort.InferenceSession(snn.ann_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert "[W:onnxruntime" not in capfd.readouterr().err


def test_conversion_refuses_an_snn_the_runtime_cannot_run(monkeypatch):
    """The dry run at the end of convert: if the runtime cannot evaluate the SNN (here its Gemm handler is made
    to fail as the bias-less Gemm did), convert raises a ConversionError naming the node; nothing is returned."""
    import runtime.engine as engine

    def broken(step, args, cache, timesteps):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setitem(engine.STATIC, "Gemm", broken)
    monkeypatch.setitem(engine.DYNAMIC, "Gemm", broken)
    with pytest.raises(converter.ConversionError, match=r"does not run in the runtime.*node 'Gemm_\d+' \(Gemm\): operands could not"):
        converter.convert(dynamo_flatten_model(), images(8, 3, 6, 6), timesteps=4, threshold="max", progress=False)


def test_a_fixed_batch_model_runs_at_its_batch_size():
    """A model exported for batch 3 (its Reshapes name the 3) is never cut into smaller chunks, nor probed on
    one sample."""
    x = images(3, 3, 32, 32)
    snn = converter.convert(shufflenet_model(batch=3), x, timesteps=4, threshold="max", progress=False)
    fast, ref = (InferenceSession(snn.model, engine=e, chunk_bytes=1).run(None, {"x": x})[0] for e in ("auto", "reference"))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5)


def test_shape_arithmetic_over_symbolic_spatial_dims_runs():
    """Reshape(x, [N, C, H*W]) with H and W symbolic: a Mul of two integer dims is shape arithmetic, not a
    product of activations; it is not a constant for every size, so it stays and the runtime evaluates it."""
    b = GraphBuilder(13, opset=13)
    r = b.relu(b.conv("x", 2, 4, pads=[1, 1, 1, 1]))
    shape = b.node("Shape", [r])
    dim = lambda i: b.node("Unsqueeze", [b.node("Gather", [shape, b.const(np.array(i, np.int64))], axis=0), b.const(np.array([0], np.int64))])
    target = b.node("Concat", [dim(0), dim(1), b.node("Mul", [dim(2), dim(3)])], axis=0)
    y = b.node("ReduceMean", [b.node("Reshape", [r, target])], axes=[2], keepdims=0)
    graph = h.make_graph(b.nodes, "spatial", [h.make_tensor_value_info("x", TP.FLOAT, ["N", 2, "H", "W"])],
                         [h.make_tensor_value_info(y, TP.FLOAT, ["N", 4])], b.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    snn = check(model, {"x": images(8, 2, 5, 5)})
    assert "Mul" in [n.op_type for n in snn.model.graph.node]
    assert InferenceSession(snn.model).run(None, {"x": images(2, 2, 7, 3)})[0].shape == (2, 4)
