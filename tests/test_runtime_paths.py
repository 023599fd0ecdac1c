"""Event, dense and auto paths against their oracles (float64: the NumPy reference, both paths bit for bit;
float32: the event path against the canonical float32 ops bit for bit, the dense path within float32's error
bound); the auto rule on both sides of its crossover; early stop; dense MAC equivalent in the stats."""
from pathlib import Path

import numba
import numpy as np
import pytest
from conftest import cnn, mlp

import converter
from test_engines import converted
from test_kernels import CONV_CASES, PRECISIONS, T, float32_error_bound, run_dynamic, spikes

from runtime import InferenceSession, InputError
from runtime.engine import EVENT_MAX_DENSITY, KernelCache, _conv, _matmul
from runtime.plan import Step, compile_plan
from runtime.reference_ops import FLOAT32_OPS, OPS

CASES = CONV_CASES + [dict(c_in=3, c_out=4, k=3, attrs=dict(strides=[2, 1], pads=[1, 2, 0, 1]))]  # unit-width kernel, row stride 2


def conv_case(rng, case):
    group = case["attrs"].get("group", 1)
    w = rng.standard_normal((case["c_out"], case["c_in"] // group, case["k"], case["k"])).astype(np.float32)
    b = rng.standard_normal(case["c_out"]).astype(np.float32)
    return Step("conv", "Conv", ("x", "w", "b"), ("y",), dict(kernel_shape=[case["k"]] * 2, **case["attrs"])), w, b


def assert_path_result(out, step, x, consts, path, precision):
    """float64: both paths equal the float64 reference; float32: the event path equals the float32 oracle, the
    dense path (onnxruntime) is within float32's error bound of the exact sum."""
    if precision == "float32" and path == "dense":
        exact = np.stack([OPS[step.op]([x[t]] + consts, step.attrs)[0] for t in range(x.shape[0])])
        assert np.all(np.abs(out.astype(np.float64) - exact) <= float32_error_bound(step, x, *consts))
    else:
        ops = FLOAT32_OPS if precision == "float32" else OPS
        np.testing.assert_array_equal(out, np.stack([ops[step.op]([x[t]] + consts, step.attrs)[0] for t in range(x.shape[0])]))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode", ["event", "dense"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["attrs"]))
def test_conv_paths_equal_their_oracle(rng, case, mode, precision):
    step, w, b = conv_case(rng, case)
    x = spikes(rng, (T, 2, case["c_in"], 9, 11))
    cache = KernelCache(mode, precision)
    out, _ = _conv(step, [(x, True), (w, False), (b, False)], cache, T)
    assert cache.paths == {"conv": mode}
    assert_path_result(out, step, x, [w, b], mode, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_static_conv_and_gemm_use_the_kernels(rng, precision):
    """The analog (static) part runs through the same kernels, once (a dense input: the dense path)."""
    step, w, b = conv_case(rng, CONV_CASES[0])
    x = rng.random((3, 3, 9, 11)).astype(np.float32)
    cache = KernelCache("auto", precision)
    out, dynamic = _conv(step, [(x, False), (w, False), (b, False)], cache, T)
    assert not dynamic and cache.paths == {"conv": "dense"}
    assert_path_result(out[None], step, x[None], [w, b], "dense", precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("side", ["below", "above"])
def test_auto_rule_on_both_sides_of_the_crossover(rng, side, precision):
    """float64 chooses by the input's density (event up to EVENT_MAX_DENSITY); float32 takes the event path for
    spiking inputs at any density (its two paths sum in different orders, so the choice must not depend on the batch)."""
    cache = KernelCache("auto", precision)
    step, w, b = conv_case(rng, dict(c_in=16, c_out=6, k=3, attrs=dict(strides=[2, 2], pads=[0, 1, 1, 0])))
    path = "event" if side == "below" or precision == "float32" else "dense"
    density = EVENT_MAX_DENSITY / 4 if side == "below" else (1 + EVENT_MAX_DENSITY) / 2
    x = spikes(rng, (T, 4, 16, 9, 11), density=density)
    out, _ = _conv(step, [(x, True), (w, False), (b, False)], cache, T)
    assert cache.paths["conv"] == path
    assert_path_result(out, step, x, [w, b], path, precision)
    fc = Step("fc", "Gemm", ("x", "w", "c"), ("y",), dict(transB=1))
    wf, c = rng.standard_normal((7, 300)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    xf = spikes(rng, (T, 5, 300), density=density)
    out, _ = _matmul(fc, [(xf, True), (wf, False), (c, False)], cache, T)
    assert cache.paths["fc"] == path
    assert_path_result(out, fc, xf, [wf, c], path, precision)


@pytest.mark.parametrize("model", ["cnn", "mnist_vgg"])
def test_float32_auto_gives_a_sample_the_same_bits_in_any_batch(model):
    """A sample's output does not depend on the other samples it is run with: alone, in a batch, or cut into
    chunks (what lets a server batch requests and answer each exactly as a direct run would)."""
    if model == "cnn":
        snn, _ = converted(cnn(), (2, 12, 12))
        x = np.random.default_rng(5).random((24, 2, 12, 12)).astype(np.float32)
    else:
        root = Path(__file__).resolve().parent.parent / "models"
        snn = converter.convert(root / "mnist_vgg.onnx", np.load(root / "mnist_calib.npz")["image"][:64], timesteps=8, progress=False).model
        x = np.load(root / "mnist_eval.npz")["image"][:24]
    session = InferenceSession(snn)
    batched = session.run(None, {"x" if model == "cnn" else "image": x})[0]
    alone = np.concatenate([session.run(None, {"x" if model == "cnn" else "image": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_array_equal(batched, alone)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("engine", ["event", "dense", "auto"])
def test_engines_equal_reference_and_bit_identical_across_threads(engine, precision):
    """Bit-identical for 1 and 2 threads (and chunked); float64 equals the reference, float32's event engine
    equals the float32 oracle engine bit for bit, and every float32 engine is within 1e-5 of the reference here."""
    snn, _ = converted(cnn(), (2, 12, 12))
    x = np.random.default_rng(4).random((40, 2, 12, 12)).astype(np.float32)
    ref = InferenceSession(snn, engine="reference").run(None, {"x": x}, timesteps=8)[0]
    outs = []
    for threads, chunk in ((1, 1 << 30), (min(2, numba.config.NUMBA_NUM_THREADS), 1 << 30), (2, 20000)):
        sess = InferenceSession(snn, engine=engine, threads=threads, precision=precision, chunk_bytes=chunk)
        outs.append(sess.run(None, {"x": x}, timesteps=8)[0])
        assert set(sess.stats["node_path"].values()) <= {"event", "dense"} and sess.stats["precision"] == precision
    for out in outs[1:]:
        np.testing.assert_array_equal(outs[0], out)
    np.testing.assert_allclose(outs[0], ref, rtol=0, atol=1e-5)
    if precision == "float64":
        np.testing.assert_array_equal(outs[0], ref)
    if engine == "event":
        oracle = InferenceSession(snn, engine="reference", precision=precision).run(None, {"x": x}, timesteps=8)[0]
        np.testing.assert_array_equal(outs[0], oracle)


def test_early_stop_reports_steps_and_matches_the_full_trace():
    snn, x = converted(cnn(), (2, 12, 12))
    sess = InferenceSession(snn)
    (full,) = sess.run_trace(None, {"x": x}, timesteps=40)
    (early,) = sess.run_trace(None, {"x": x}, timesteps=40, early_stop=4)
    used = sess.stats["steps_used"]
    assert sess.stats["timesteps_requested"] == 40 and used == early.shape[0] <= 40 and used % 4 == 0
    np.testing.assert_allclose(early, full[:used], rtol=0, atol=1e-6)
    top = full[:used].argmax(-1)
    if used < 40:  # stopped: every sample's top-1 was the same over the last 4 steps
        assert (top[-4:] == top[-1]).all()
    (out,) = sess.run(None, {"x": x}, timesteps=40, early_stop=4)
    np.testing.assert_array_equal(out, early[-1])
    spikes_used = sum(layer["spikes"] for layer in sess.stats["layers"])
    sess.run(None, {"x": x}, timesteps=used)
    assert spikes_used == sess.stats["total_spikes"]  # stats add up over the blocks


def test_early_stop_with_chunks_pads_the_trace():
    snn, _ = converted(cnn(), (2, 12, 12))
    x = np.random.default_rng(3).random((9, 2, 12, 12)).astype(np.float32)
    sess = InferenceSession(snn, chunk_bytes=4096)
    (trace,) = sess.run_trace(None, {"x": x}, timesteps=24, early_stop=3)
    (whole,) = InferenceSession(snn).run_trace(None, {"x": x}, timesteps=24)
    assert trace.shape[0] == sess.stats["steps_used"] and trace.shape[1] == 9
    np.testing.assert_allclose(trace[-1], whole[trace.shape[0] - 1], rtol=0, atol=0.5)  # same class readouts, maybe fewer steps


def test_bad_engine_and_early_stop_are_refused():
    snn, x = converted(mlp(), (12,))
    with pytest.raises(InputError, match="engine must be one of auto, event, dense, reference"):
        InferenceSession(snn, engine="fast")
    with pytest.raises(InputError, match="early_stop must be a positive integer"):
        InferenceSession(snn).run(None, {"x": x}, early_stop=0)
    with pytest.raises(InputError, match="early_stop needs a Numba engine"):
        InferenceSession(snn, engine="reference").run(None, {"x": x}, early_stop=2)


def test_stats_dense_mac_equivalent():
    snn, x = converted(mlp(), (12,))
    sess = InferenceSession(snn)
    sess.run(None, {"x": x}, timesteps=10)
    first, second = sess.stats["layers"]
    assert first["dense_macs"] == 32 * 6 * 10 * 24 and second["dense_macs"] == 24 * 6 * 10 * 5
    assert sess.stats["total_dense_macs"] == first["dense_macs"] + second["dense_macs"]
    assert first["synops"] <= first["dense_macs"]


POOLS = [None, dict(kernel_shape=[2, 2], strides=[2, 2]), dict(kernel_shape=[2, 3], strides=[2, 3])]


@pytest.mark.parametrize("pool", POOLS, ids=["no-pool", "pool2x2", "pool2x3"])
@pytest.mark.parametrize("residual", [False, True], ids=["conv-if", "conv-add-if"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]], ids=["unit-width", "strided", "depthwise"])
def test_fused_conv_neuron_equals_conv_then_neuron(rng, case, residual, pool):
    """The fused Conv(+Add)+IF(+AveragePool) kernel gives the same spikes (or pooled spikes), counts, membranes
    as the kernels one after the other, for 1 and 2 threads, and the density of what it returns. The maps
    (9 x 11 or 4 x 5) do not divide by the pools: the last row / columns are dropped, as the pool drops them."""
    from runtime.engine import _avg_pool, _conv_neuron, _neuron, density
    from runtime.format import NeuronParams
    step, w, b = conv_case(rng, case)
    x = spikes(rng, (5, 3, case["c_in"], 9, 11), density=0.3)
    params = NeuronParams(np.abs(rng.standard_normal(case["c_out"])).astype(np.float32) + 0.5,
                          np.full(1, 0.05, np.float32), np.full(1, 0.25, np.float32), "subtract")
    neuron = Step("if", "IFNeuron", ("y",), ("s",), {}, params)
    pool_step = Step("pool", "AveragePool", ("s",), ("p",), pool) if pool else None
    args = [(x, True), (w, False), (b, False)]
    current, _ = _conv(step, args, KernelCache("event"), 5)
    res = spikes(rng, current.shape, density=0.3, v_th=0.6) if residual else None
    want, want_counts, want_v = _neuron(neuron, (current + res if residual else current, True), 5, None)
    if pool:
        ref = np.stack([OPS["AveragePool"]([s], pool)[0] for s in want[0]])
        want = _avg_pool(pool_step, [want], KernelCache(), 5)
        np.testing.assert_array_equal(want[0], ref)
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        fused = _conv_neuron(step, neuron, args, res, KernelCache("event"), 5, None, pool_step)
        assert fused.pooled == bool(pool) and fused.spike_shape == current.shape[1:]
        np.testing.assert_array_equal(fused.value[0], want[0])
        np.testing.assert_array_equal(fused.counts, want_counts)
        np.testing.assert_array_equal(fused.membranes, want_v)
        assert fused.density == density(want[0])
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[2, 2], strides=[1, 1]), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
                                   dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], ids=["overlapping", "padded", "ceil"])
def test_pool_that_does_not_tile_is_not_fused(rng, attrs):
    """Overlapping, padded or partial (ceil_mode on an odd map) windows: the Conv+IF is fused, the pool runs after it."""
    from runtime.engine import _conv_neuron
    from runtime.format import NeuronParams
    step, w, b = conv_case(rng, CASES[0])
    x = spikes(rng, (5, 3, 3, 9, 11), density=0.3)
    params = NeuronParams(np.full(5, 0.7, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32), "subtract")
    fused = _conv_neuron(step, Step("if", "IFNeuron", ("y",), ("s",), {}, params), [(x, True), (w, False), (b, False)], None,
                         KernelCache("event"), 5, None, Step("pool", "AveragePool", ("s",), ("p",), attrs))
    assert not fused.pooled and fused.value[0].shape == (5, 3, 5, 9, 11)


def test_neuron_after_a_shortcut_conv_is_fused_and_equals_reference():
    """In a strided residual block (Conv1, shortcut Conv, IF(Conv1), Conv2, Add, IF) Conv1 is fused with its
    neuron although the shortcut Conv comes between them; results equal the reference, for 1 and 2 threads."""
    from conftest import GraphBuilder
    b = GraphBuilder(3)
    x = b.relu(b.conv("x", 2, 6, pads=[1, 1, 1, 1]))
    main = b.conv(x, 6, 8, strides=[2, 2], pads=[1, 1, 1, 1])
    shortcut = b.conv(x, 6, 8, k=1, strides=[2, 2])
    main = b.conv(b.relu(main), 8, 8, pads=[1, 1, 1, 1])
    y = b.relu(b.node("Add", [main, shortcut]))
    y = b.gemm(b.node("Flatten", [b.node("GlobalAveragePool", [y])], axis=1), 8, 4)
    snn, x = converted(b.model([("x", ["N", 2, 12, 12])], [y]), (2, 12, 12))
    steps = compile_plan(snn).steps
    conv1 = next(s for s in steps if s.op == "Conv" and s.attrs.get("kernel_shape") == [3, 3] and s.attrs.get("strides") == [2, 2])
    assert steps[steps.index(conv1) + 1].op == "Conv"  # the shortcut sits between Conv1 and its neuron
    want = InferenceSession(snn, engine="reference").run(None, {"x": x}, timesteps=8)[0]
    outs = []
    for threads in (1, 2):
        sess = InferenceSession(snn, threads=threads, engine="event")
        outs.append(sess.run(None, {"x": x}, timesteps=8)[0])
        assert conv1.name not in sess.stats["node_time_s"]  # computed inside the fused kernel of its neuron
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], want, rtol=0, atol=1e-5)


def _bundled(name):
    from converter.assets import bundled_path
    calib = np.load(bundled_path("mnist_calib.npz"))["image"][:32]
    snn = converter.convert(str(bundled_path(f"{name}.onnx")), calib, timesteps=4, threshold="max", progress=False).model
    return snn, np.load(bundled_path("mnist_eval.npz"))["image"][:8]


@pytest.mark.parametrize("name", ["mnist_vgg", "mnist_resnet", "cnn"])
def test_known_densities_equal_counted_ones(name, monkeypatch):
    """The auto rule reads a spiking input's density from the spike counts of the layer that made it (or the
    pooled outputs of a fused pool) instead of counting: those numbers equal the counts, so the paths are the
    ones counting gives, on the bundled models too."""
    from runtime import engine
    snn, x = converted(cnn(), (2, 12, 12)) if name == "cnn" else _bundled(name)
    seen = []
    choose = engine.KernelCache.choose

    def checked(self, step, x, fan_in):
        known = self.densities.get(step.inputs[0])
        if known is not None:
            seen.append(step.name)
            assert known == engine.density(x), step.name
        return choose(self, step, x, fan_in)

    monkeypatch.setattr(engine.KernelCache, "choose", checked)
    sess = InferenceSession(snn)
    sess.run(None, {sess.get_inputs()[0].name: x}, timesteps=4)
    assert len(seen) >= 2, seen


@pytest.mark.parametrize("name", ["mnist_vgg", "cnn"])
def test_fused_and_unfused_runs_are_bit_identical(name, monkeypatch):
    """Conv+IF+AveragePool fused, Conv+IF fused with the pool after it, and every node on its own give the same
    bits, spike counts and membranes (a block of steps, then the rest: early stop carries them)."""
    from runtime import engine
    snn, x = _bundled(name) if name == "mnist_vgg" else converted(cnn(), (2, 12, 12))
    feeds = {InferenceSession(snn).get_inputs()[0].name: x}
    runs = []
    for variant in ("pool", "no-pool", "unfused"):
        if variant == "no-pool":
            monkeypatch.setattr(engine, "_tiling_pool", lambda *a: None)
        if variant == "unfused":
            monkeypatch.setattr(engine, "_fusable", lambda *a: None)
        sess = InferenceSession(snn, engine="event")
        trace = sess.run_trace(None, feeds, timesteps=6, early_stop=2)[0]
        runs.append((sess.run(None, feeds, timesteps=6)[0], trace, [layer["spikes"] for layer in sess.stats["layers"]],
                     sess.stats["node_time_s"].keys()))
    for out, trace, spikes_, _ in runs[1:]:
        np.testing.assert_array_equal(out, runs[0][0])
        np.testing.assert_array_equal(trace, runs[0][1])
        assert spikes_ == runs[0][2]
    pools = {s.name for s in compile_plan(snn).steps if s.op == "AveragePool"}
    assert pools and not pools & set(runs[0][3]) and pools <= set(runs[1][3])  # the pools ran inside the fused kernels
