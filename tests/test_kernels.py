"""Every Numba kernel against its plain NumPy oracle, bit for bit, and bit-identical for any thread count: the
float32 kernels against ``FLOAT32_OPS`` (float32 sums in the canonical order), the float64 ones against ``OPS``;
the float32 dense path (onnxruntime) against the float64 reference within float32's error bound."""
import numba
import numpy as np
import pytest

from runtime.engine import KernelCache, _avg_pool, _conv, _matmul
from runtime.format import NeuronParams
from runtime.plan import Step
from runtime.reference import if_step
from runtime.reference_ops import FLOAT32_OPS, OPS

T = 3
PRECISIONS = ["float32", "float64"]


def spikes(rng, shape, density=0.2, v_th=0.8):
    return ((rng.random(shape) < density) * v_th).astype(np.float32)


def run_dynamic(handler, step, x, *consts, precision="float32", mode="auto"):
    """Run a kernel handler on a (T, N, ...) spike array; return it and the precision's oracle op, per step."""
    args = [(x, True)] + [(c, False) if c is not None else None for c in consts]
    out, dynamic = handler(step, args, KernelCache(mode, precision), x.shape[0])
    assert dynamic
    ops = FLOAT32_OPS if precision == "float32" else OPS
    ref = np.stack([ops[step.op]([x[t]] + list(consts), step.attrs)[0] for t in range(x.shape[0])])
    return out, ref


def float32_error_bound(step, x, *consts):
    """A bound on |float32 sum - exact sum| for each output of a linear op on x: (terms + 1) * 2^-24 * sum of the
    terms' magnitudes (the classic bound n u / (1 - n u), with room to spare), from the float64 op on |x|, |w|, |b|."""
    magnitudes = np.stack([OPS[step.op]([np.abs(x[t])] + [np.abs(c) if c is not None else None for c in consts], step.attrs)[0]
                           for t in range(x.shape[0])]).astype(np.float64)
    terms = consts[0].size // (consts[0].shape[0] if step.op == "Conv" else 1) + 1
    return 2 * (terms + 1) * 2.0 ** -24 * magnitudes


CONV_CASES = [
    dict(c_in=3, c_out=5, k=3, attrs=dict(pads=[1, 1, 1, 1])),
    dict(c_in=4, c_out=6, k=3, attrs=dict(strides=[2, 2], pads=[0, 1, 1, 0])),          # asymmetric pads
    dict(c_in=4, c_out=4, k=3, attrs=dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    dict(c_in=6, c_out=6, k=3, attrs=dict(group=6, pads=[1, 1, 1, 1])),                 # depthwise
    dict(c_in=4, c_out=6, k=1, attrs=dict(group=2, strides=[2, 1])),                    # grouped 1x1, mixed stride
    dict(c_in=2, c_out=3, k=5, attrs=dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    dict(c_in=2, c_out=3, k=2, attrs=dict(strides=[3, 3])),                             # stride > kernel
]


def conv_inputs(rng, case, x_shape, density=0.2):
    group = case["attrs"].get("group", 1)
    w = rng.standard_normal((case["c_out"], case["c_in"] // group, case["k"], case["k"])).astype(np.float32)
    b = rng.standard_normal(case["c_out"]).astype(np.float32)
    step = Step("conv", "Conv", ("x", "w", "b"), ("y",), dict(kernel_shape=[case["k"]] * 2, **case["attrs"]))
    return step, w, b, spikes(rng, x_shape, density)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: str(c["attrs"]))
def test_conv_events_equal_their_oracle(rng, case, precision):
    """float32: products added in float32 in (channel, row, column) order, skipping zero inputs, which such a
    sum does not notice; float64: float64 sums rounded once, the same float32 in any order."""
    step, w, b, x = conv_inputs(rng, case, (T, 2, case["c_in"], 9, 11), density=0.5)
    out, ref = run_dynamic(_conv, step, x, w, b, precision=precision, mode="event")
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)
    if precision == "float32":  # the oracle is a float32 sum: not the float64 reference's bits, within its error
        exact = np.stack([OPS["Conv"]([x[t], w, b], step.attrs)[0] for t in range(T)])
        assert not np.array_equal(out, exact)
        assert np.all(np.abs(out.astype(np.float64) - exact) <= float32_error_bound(step, x, w, b))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_conv1d_events_equal_their_oracle(rng, precision):
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    x = spikes(rng, (T, 2, 3, 10))
    step = Step("conv", "Conv", ("x", "w"), ("y",), dict(kernel_shape=[3], pads=[1, 0], strides=[2]))
    out, ref = run_dynamic(_conv, step, x, w, None, precision=precision, mode="event")
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("attrs", [dict(transB=1), dict(transB=0, alpha=0.5, beta=2.0), dict(transB=1, alpha=0.75)])
def test_gemm_events_equal_their_oracle(rng, attrs, precision):
    w = rng.standard_normal((7, 13) if attrs.get("transB") else (13, 7)).astype(np.float32)
    c = rng.standard_normal(7).astype(np.float32) if "beta" in attrs or "alpha" not in attrs else None
    x = spikes(rng, (T, 5, 13), density=0.5)
    step = Step("fc", "Gemm", ("x", "w", "c") if c is not None else ("x", "w"), ("y",), attrs)
    out, ref = run_dynamic(_matmul, step, x, w, *([c] if c is not None else []), precision=precision, mode="event")
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_matmul_events_equal_their_oracle(rng, precision):
    w = rng.standard_normal((6, 4)).astype(np.float32)
    x = spikes(rng, (T, 2, 3, 6), density=0.5)
    out, ref = run_dynamic(_matmul, Step("mm", "MatMul", ("x", "w"), ("y",), {}), x, w, precision=precision, mode="event")
    np.testing.assert_array_equal(out, ref)


def test_float32_oracle_is_the_literal_sum(rng):
    """The oracle itself: each Conv output is bias + its taps' products in (channel, row, column) order, one float32
    addition at a time (a plain loop over one output), and a Gemm output is bias + products in k order."""
    step, w, b, x = conv_inputs(rng, CONV_CASES[0], (2, 3, 6, 7), density=0.6)
    out = FLOAT32_OPS["Conv"]([x, w, b], step.attrs)[0]
    for (n, o, i, j) in [(0, 0, 0, 0), (1, 4, 3, 5), (0, 2, 5, 6)]:
        acc = b[o]
        for c in range(3):
            for ky in range(3):
                for kx in range(3):
                    y, xx = i + ky - 1, j + kx - 1
                    if 0 <= y < 6 and 0 <= xx < 7:
                        acc = np.float32(acc + np.float32(x[n, c, y, xx] * w[o, c, ky, kx]))
        assert out[n, o, i, j] == acc
    a, m, c = x.reshape(2, -1), rng.standard_normal((126, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    got = FLOAT32_OPS["Gemm"]([a, m, c], {})[0]
    acc = c[1]
    for k in range(126):
        acc = np.float32(acc + np.float32(a[1, k] * m[k, 1]))
    assert got[1, 1] == acc


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: str(c["attrs"]))
def test_float32_dense_conv_is_within_float32_error(rng, case):
    """The float32 dense path (onnxruntime's Conv, its own summation order) is within float32's error bound of the
    exact (float64) sum, and bit-identical for 1 and 2 threads."""
    step, w, b, x = conv_inputs(rng, case, (T, 20, case["c_in"], 9, 11), density=0.5)
    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        outs.append(run_dynamic(_conv, step, x, w, b, mode="dense")[0])
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(outs[0], outs[1])
    exact = np.stack([OPS["Conv"]([x[t], w, b], step.attrs)[0] for t in range(T)])
    assert np.all(np.abs(outs[0].astype(np.float64) - exact) <= float32_error_bound(step, x, w, b))


def test_float32_dense_gemm_is_within_float32_error(rng):
    w, c = rng.standard_normal((7, 300)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    x = spikes(rng, (T, 40, 300), density=0.5)
    step = Step("fc", "Gemm", ("x", "w", "c"), ("y",), dict(transB=1, alpha=0.5))
    out = run_dynamic(_matmul, step, x, w, c, mode="dense")[0]
    exact = np.stack([OPS["Gemm"]([x[t], w, c], step.attrs)[0] for t in range(T)])
    magnitudes = np.stack([OPS["Gemm"]([x[t], np.abs(w), np.abs(c)], step.attrs)[0] for t in range(T)])
    assert np.all(np.abs(out.astype(np.float64) - exact) <= 2 * 302 * 2.0 ** -24 * magnitudes)


POOL_CASES = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 2], strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1, count_include_pad=1),
]


@pytest.mark.parametrize("attrs", POOL_CASES, ids=str)
def test_avg_pool_equal_reference(rng, attrs):
    x = rng.random((T, 2, 3, 9, 10)).astype(np.float32)
    out, ref = run_dynamic(_avg_pool, Step("pool", "AveragePool", ("x",), ("y",), attrs), x)
    np.testing.assert_array_equal(out, ref)


def test_avg_pool_reference_matches_onnxruntime(rng):
    """The reference pool itself agrees with onnxruntime on ceil_mode / count_include_pad corner cases."""
    import onnxruntime as ort
    from onnx import TensorProto as TP
    from onnx import helper as h
    x = rng.random((2, 3, 9, 10)).astype(np.float32)
    for attrs in POOL_CASES:
        g = h.make_graph([h.make_node("AveragePool", ["x"], ["y"], **attrs)], "p", [h.make_tensor_value_info("x", TP.FLOAT, x.shape)],
                         [h.make_tensor_value_info("y", TP.FLOAT, None)])
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        m.ir_version = 8
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(OPS["AveragePool"]([x], attrs)[0], want, rtol=1e-6, atol=1e-6, err_msg=str(attrs))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode", ["event", "dense"])
def test_kernels_bit_identical_for_any_thread_count(rng, mode, precision):
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    x = spikes(rng, (4, 6, 4, 12, 12))
    step = Step("conv", "Conv", ("x", "w"), ("y",), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    fc = Step("fc", "Gemm", ("x", "w"), ("y",), dict(transB=1))
    wf, xf = rng.standard_normal((5, 64)).astype(np.float32), spikes(rng, (4, 30, 64))
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        results.append((_conv(step, [(x, True), (w, False)], KernelCache(mode, precision), 4)[0],
                        _matmul(fc, [(xf, True), (wf, False)], KernelCache(mode, precision), 4)[0]))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_fused_conv_if_kernel_float32_sums_are_canonical(rng):
    """The fused Conv+IF kernel shares the scatter: with float32 weights its spikes are those of IF neurons
    driven by the canonical float32 current of the oracle, to the membranes' last bit."""
    from runtime.engine import _conv_weights
    from runtime.kernels.conv import conv2d_events_if
    steps, n, c_in, c_out = 4, 3, 4, 6
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    x = spikes(rng, (steps, n, c_in, 8, 9), density=0.4)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    cw = _conv_weights(Step("conv", "Conv", ("x", "w", "b"), ("y",), attrs), w, b, x.shape[1:], np.float32)
    ho, wo = cw.out_hw
    v_th, shift = np.full(c_out, 1.5, np.float32), np.full(c_out, 0.125, np.float32)
    v = np.full(n * ho * wo * c_out, 0.75, np.float32)
    out = np.empty((steps, n, c_out, ho, wo), np.float32)
    conv2d_events_if(x, cw.wt, cw.wflip, cw.bias, cw.rows, cw.cols, cw.pad_w, cw.groups,
                     np.array([ho, wo], np.int64), np.empty((0,) * 5, np.float32), v_th, shift, True, 1, v, np.zeros(0, np.int32),
                     np.empty(0, np.int64), 1.0, out, np.zeros((1, steps), np.int64), np.zeros((1, 1), np.int64))
    membrane = np.full((n, c_out, ho, wo), 0.75, np.float32)
    th, sh = v_th[0], shift[0]
    for t in range(steps):
        membrane = membrane + (FLOAT32_OPS["Conv"]([x[t], w, b], attrs)[0] + sh)
        fired = membrane >= th
        np.testing.assert_array_equal(out[t], np.where(fired, th, np.float32(0)))
        membrane = np.where(fired, membrane - th, membrane)
    assert out.any() and not out.all()
    np.testing.assert_array_equal(v.reshape(n, ho, wo, c_out), membrane.transpose(0, 2, 3, 1))  # the last bits too


@pytest.mark.parametrize("kind", ["signed", "burst"])
def test_fused_conv_if_kernel_signed_and_burst_neurons_match_the_oracle(rng, kind):
    """Signed neurons in the fused kernel: spikes of -v_th where the oracle's membrane drops below 0 with a
    positive net count; burst neurons (up to 3 spikes a step): k * v_th. Membranes and net counts to the last bit."""
    signed, burst = kind == "signed", 3 if kind == "burst" else 1
    from runtime.engine import _conv_weights
    from runtime.kernels.conv import conv2d_events_if
    steps, n, c_in, c_out = 6, 3, 4, 5
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32) * 0.5
    x = np.where(rng.random((steps, n, c_in, 7, 8)) < 0.4, np.float32(1.25), np.float32(-1.25)) * (rng.random((steps, n, c_in, 7, 8)) < 0.6)
    x = x.astype(np.float32)  # signed spikes in: +-1.25 or 0
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    cw = _conv_weights(Step("conv", "Conv", ("x", "w", "b"), ("y",), attrs), w, b, x.shape[1:], np.float32)
    ho, wo = cw.out_hw
    v_th, shift = np.linspace(1.0, 2.0, c_out).astype(np.float32), np.full(c_out, 0.0625, np.float32)
    v = np.full(n * ho * wo * c_out, 0.5, np.float32)
    net = np.zeros(v.size if signed else 0, np.int32)
    out = np.empty((steps, n, c_out, ho, wo), np.float32)
    counts = np.zeros((1, steps), np.int64)
    conv2d_events_if(x, cw.wt, cw.wflip, cw.bias, cw.rows, cw.cols, cw.pad_w, cw.groups,
                     np.array([ho, wo], np.int64), np.empty((0,) * 5, np.float32), v_th, shift, True, burst, v, net,
                     np.empty(0, np.int64), 1.0, out, counts, np.zeros((1, 1), np.int64))
    p = NeuronParams(v_th, shift, np.full(c_out, 0.5, np.float32), "subtract", signed, burst)
    membrane, want_net = np.full((n, c_out, ho, wo), 0.5, np.float32), None
    for t in range(steps):
        s, membrane, want_net = if_step(FLOAT32_OPS["Conv"]([x[t], w, b], attrs)[0], membrane, p, want_net)
        np.testing.assert_array_equal(out[t], s)
        assert counts[0, t] == np.count_nonzero(s)
    np.testing.assert_array_equal(v.reshape(n, ho, wo, c_out), membrane.transpose(0, 2, 3, 1))
    if signed:
        assert (out < 0).any() and (out > 0).any()
        np.testing.assert_array_equal(net.reshape(n, ho, wo, c_out), want_net.transpose(0, 2, 3, 1))
    else:  # single, double and triple spikes all occur, and never more
        multiple = np.rint(out / v_th[None, None, :, None, None])
        assert {0, 1, 2, 3} <= set(np.unique(multiple).tolist()) <= {0, 1, 2, 3}
