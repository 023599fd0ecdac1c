"""Every Numba kernel against the plain NumPy reference ops, and bit-identical for any thread count."""
import numba
import numpy as np
import pytest

from runtime.engine import KernelCache, _avg_pool, _conv, _matmul
from runtime.plan import Step
from runtime.reference_ops import OPS

T = 3


def spikes(rng, shape, density=0.2, v_th=0.8):
    return ((rng.random(shape) < density) * v_th).astype(np.float32)


def run_dynamic(handler, step, x, *consts):
    """Run a kernel handler on a (T, N, ...) spike array; compare against the reference op per step."""
    args = [(x, True)] + [(c, False) if c is not None else None for c in consts]
    out, dynamic = handler(step, args, KernelCache(), x.shape[0])
    assert dynamic
    ref = np.stack([OPS[step.op]([x[t]] + list(consts), step.attrs)[0] for t in range(x.shape[0])])
    return out, ref


CONV_CASES = [
    dict(c_in=3, c_out=5, k=3, attrs=dict(pads=[1, 1, 1, 1])),
    dict(c_in=4, c_out=6, k=3, attrs=dict(strides=[2, 2], pads=[0, 1, 1, 0])),          # asymmetric pads
    dict(c_in=4, c_out=4, k=3, attrs=dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    dict(c_in=6, c_out=6, k=3, attrs=dict(group=6, pads=[1, 1, 1, 1])),                 # depthwise
    dict(c_in=4, c_out=6, k=1, attrs=dict(group=2, strides=[2, 1])),                    # grouped 1x1, mixed stride
    dict(c_in=2, c_out=3, k=5, attrs=dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    dict(c_in=2, c_out=3, k=2, attrs=dict(strides=[3, 3])),                             # stride > kernel
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: str(c["attrs"]))
def test_conv_events_equal_reference(rng, case):
    group = case["attrs"].get("group", 1)
    w = rng.standard_normal((case["c_out"], case["c_in"] // group, case["k"], case["k"])).astype(np.float32)
    b = rng.standard_normal(case["c_out"]).astype(np.float32)
    x = spikes(rng, (T, 2, case["c_in"], 9, 11))
    step = Step("conv", "Conv", ("x", "w", "b"), ("y",), dict(kernel_shape=[case["k"]] * 2, **case["attrs"]))
    out, ref = run_dynamic(_conv, step, x, w, b)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out, ref)  # float64 sums rounded once: the same float32 either way


def test_conv1d_events_equal_reference(rng):
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    x = spikes(rng, (T, 2, 3, 10))
    step = Step("conv", "Conv", ("x", "w"), ("y",), dict(kernel_shape=[3], pads=[1, 0], strides=[2]))
    out, ref = run_dynamic(_conv, step, x, w, None)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("attrs", [dict(transB=1), dict(transB=0, alpha=0.5, beta=2.0)])
def test_gemm_events_equal_reference(rng, attrs):
    w = rng.standard_normal((7, 13) if attrs.get("transB") else (13, 7)).astype(np.float32)
    c = rng.standard_normal(7).astype(np.float32)
    x = spikes(rng, (T, 5, 13))
    out, ref = run_dynamic(_matmul, Step("fc", "Gemm", ("x", "w", "c"), ("y",), attrs), x, w, c)
    np.testing.assert_array_equal(out, ref)


def test_matmul_events_equal_reference(rng):
    w = rng.standard_normal((6, 4)).astype(np.float32)
    x = spikes(rng, (T, 2, 3, 6))
    out, ref = run_dynamic(_matmul, Step("mm", "MatMul", ("x", "w"), ("y",), {}), x, w)
    np.testing.assert_array_equal(out, ref)


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


def test_kernels_bit_identical_for_any_thread_count(rng):
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    x = spikes(rng, (4, 6, 4, 12, 12))
    step = Step("conv", "Conv", ("x", "w"), ("y",), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        results.append(_conv(step, [(x, True), (w, False)], KernelCache(), 4)[0])
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(results[0], results[1])


def canonical_float32_conv(x, w, b, attrs):
    """Conv as float32 products added one by one from the bias, in (input channel, kernel row, kernel column)
    order for every output (plain NumPy, one tap at a time)."""
    from runtime.reference_ops import _spatial_pads
    n_out, cg, kh, kw = w.shape
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    pads = _spatial_pads(attrs, x.shape[2:], (kh, kw), [sh, sw], [dh, dw])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    groups = attrs.get("group", 1)
    og = n_out // groups
    acc = np.broadcast_to(b.reshape(1, -1, 1, 1), (x.shape[0], n_out, ho, wo)).copy()
    for g in range(groups):
        for ci in range(cg):
            for ky in range(kh):
                for kx in range(kw):
                    tap = xp[:, g * cg + ci, ky * dh:ky * dh + sh * (ho - 1) + 1:sh, kx * dw:kx * dw + sw * (wo - 1) + 1:sw]
                    acc[:, g * og:(g + 1) * og] += tap[:, None] * w[g * og:(g + 1) * og, ci, ky, kx].reshape(1, -1, 1, 1)
    return acc


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: str(c["attrs"]))
def test_conv_event_kernel_sums_float32_in_canonical_order(rng, case):
    """Given float32 weights, the event kernel adds float32 products in (channel, row, column) order, skipping
    zero inputs, which a float32 sum does not notice: the claim behind the float32 lever measured by
    benchmarks/scatter_floor.py (the engine itself passes float64 weights)."""
    from runtime.engine import _conv_weights
    from runtime.kernels.conv import conv2d_events
    group = case["attrs"].get("group", 1)
    w = rng.standard_normal((case["c_out"], case["c_in"] // group, case["k"], case["k"])).astype(np.float32)
    b = rng.standard_normal(case["c_out"]).astype(np.float32)
    x = spikes(rng, (5, case["c_in"], 9, 11), density=0.5)
    step = Step("conv", "Conv", ("x", "w", "b"), ("y",), dict(kernel_shape=[case["k"]] * 2, **case["attrs"]))
    cw = _conv_weights(step, w, b, x.shape)
    out = np.empty((x.shape[0], case["c_out"]) + cw.out_hw, np.float32)
    f32 = (lambda a: np.ascontiguousarray(a, np.float32))
    conv2d_events(x, f32(cw.wt), f32(cw.wflip), f32(cw.bias), cw.rows, cw.cols, cw.pad_w, cw.groups, out, 2)
    want = canonical_float32_conv(x, w, b, case["attrs"])
    np.testing.assert_array_equal(out, want)
    assert not np.array_equal(out, run_dynamic(_conv, step, x[None], w, b)[1][0])  # float32 sums differ from float64's


def test_fused_conv_if_kernel_float32_sums_are_canonical(rng):
    """The fused Conv+IF kernel shares the scatter: with float32 weights its spikes are those of IF neurons
    driven by the canonical float32 current (what benchmarks/scatter_floor.py times as the float32 lever)."""
    from runtime.engine import _conv_weights
    from runtime.kernels.conv import conv2d_events_if
    steps, n, c_in, c_out = 4, 3, 4, 6
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    x = spikes(rng, (steps, n, c_in, 8, 9), density=0.4)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    cw = _conv_weights(Step("conv", "Conv", ("x", "w", "b"), ("y",), attrs), w, b, x.shape[1:])
    ho, wo = cw.out_hw
    v_th, shift = np.full(c_out, 1.5, np.float32), np.full(c_out, 0.125, np.float32)
    v = np.full(n * ho * wo * c_out, 0.75, np.float32)
    out = np.empty((steps, n, c_out, ho, wo), np.float32)
    f32 = (lambda a: np.ascontiguousarray(a, np.float32))
    conv2d_events_if(x, f32(cw.wt), f32(cw.wflip), f32(cw.bias), cw.rows, cw.cols, cw.pad_w, cw.groups,
                     np.array([ho, wo], np.int64), np.empty((0,) * 5, np.float32), v_th, shift, True, v,
                     np.empty(0, np.int64), 1.0, out, np.zeros((1, steps), np.int64), np.zeros((1, 1), np.int64))
    membrane = np.full((n, c_out, ho, wo), 0.75, np.float32)
    th, sh = v_th[0], shift[0]
    for t in range(steps):
        membrane = membrane + (canonical_float32_conv(x[t], w, b, attrs) + sh)
        fired = membrane >= th
        np.testing.assert_array_equal(out[t], np.where(fired, th, np.float32(0)))
        membrane = np.where(fired, membrane - th, membrane)
    assert out.any() and not out.all()
    np.testing.assert_array_equal(v.reshape(n, ho, wo, c_out), membrane.transpose(0, 2, 3, 1))  # the last bits too
