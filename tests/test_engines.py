"""The Numba engine equals the NumPy reference engine; trace, chunking and threads change nothing."""
import numpy as np
import pytest
from conftest import cnn, mlp

import converter
from runtime import InferenceSession, InputError


def converted(model, shape, seed=0, timesteps=8, **kw):
    x = np.random.default_rng(seed).random((48,) + shape).astype(np.float32)
    return converter.convert(model, x, timesteps=timesteps, progress=False, **kw).model, x[:6]


MODELS = {
    "mlp": lambda seed: (mlp(seed), (12,)),
    "cnn": lambda seed: (cnn(seed), (2, 12, 12)),
    "cnn-no-bn": lambda seed: (cnn(seed, batchnorm=False), (2, 12, 12)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("settings", [dict(threshold="max"), dict(threshold="p99.9", reset="zero", shift="none", v_init="half"),
                                      dict(threshold="optimal", signed_spikes=True), dict(threshold="optimal", burst=3)],
                         ids=["max-subtract", "p99.9-zero", "optimal-signed", "optimal-burst"])
def test_numba_equals_reference(name, seed, settings):
    model, shape = MODELS[name](seed)
    snn, x = converted(model, shape, seed, **settings)
    fast = InferenceSession(snn)
    ref = InferenceSession(snn, engine="reference")
    out_fast = fast.run(None, {"x": x}, timesteps=8)[0]
    out_ref = ref.run(None, {"x": x}, timesteps=8)[0]
    np.testing.assert_allclose(out_fast, out_ref, rtol=0, atol=1e-5)
    assert [l["spikes"] for l in fast.stats["layers"]] == [l["spikes"] for l in ref.stats["layers"]]
    assert fast.stats["total_spikes"] > 0
    if settings.get("signed_spikes") or settings.get("burst"):  # each precision against its own oracle, bit for bit
        out32 = InferenceSession(snn, engine="reference", precision="float32").run(None, {"x": x}, timesteps=8)[0]
        np.testing.assert_array_equal(out_fast, out32)
        out64 = InferenceSession(snn, precision="float64").run(None, {"x": x}, timesteps=8)[0]
        np.testing.assert_array_equal(out64, out_ref)


def test_trace_ends_at_run_and_has_one_row_per_step():
    snn, x = converted(cnn(), (2, 12, 12))
    sess = InferenceSession(snn)
    (trace,) = sess.run_trace(None, {"x": x}, timesteps=12)
    (out,) = sess.run(None, {"x": x}, timesteps=12)
    assert trace.shape == (12,) + out.shape
    np.testing.assert_array_equal(trace[-1], out)
    (ref_trace,) = InferenceSession(snn, engine="reference").run_trace(None, {"x": x}, timesteps=12)
    np.testing.assert_allclose(trace, ref_trace, rtol=0, atol=1e-5)


def test_chunking_and_threads_are_bit_identical():
    snn, _ = converted(cnn(), (2, 12, 12))
    x = np.random.default_rng(5).random((37, 2, 12, 12)).astype(np.float32)
    whole = InferenceSession(snn, threads=2).run(None, {"x": x}, timesteps=10)[0]
    chunked_session = InferenceSession(snn, threads=1, chunk_bytes=4096)
    chunked = chunked_session.run(None, {"x": x}, timesteps=10)[0]
    np.testing.assert_array_equal(whole, chunked)
    assert chunked_session.stats["batch"] == 37


def test_a_session_reused_across_batch_sizes_equals_fresh_sessions():
    """What a session keeps between runs (weights laid out per layer, stats layouts per shape) changes nothing:
    each run equals a fresh session's, outputs and stats, whatever batch sizes came before."""
    snn, _ = converted(cnn(), (2, 12, 12), signed_spikes=True)
    x = np.random.default_rng(7).random((9, 2, 12, 12)).astype(np.float32)
    reused = InferenceSession(snn)
    for batch in (1, 9, 4, 1, 9):
        out = reused.run(None, {"x": x[:batch]}, timesteps=6)[0]
        fresh = InferenceSession(snn)
        np.testing.assert_array_equal(out, fresh.run(None, {"x": x[:batch]}, timesteps=6)[0])
        keep = lambda stats: {k: v for k, v in stats.items() if k not in ("time_s", "node_time_s")} | \
            {"layers": [{k: v for k, v in layer.items() if k != "time_s"} for layer in stats["layers"]]}
        assert keep(reused.stats) == keep(fresh.stats)
        assert reused.stats["batch"] == batch


def test_stats_count_spikes_and_synops():
    snn, x = converted(mlp(), (12,))
    sess = InferenceSession(snn)
    sess.run(None, {"x": x}, timesteps=10)
    first, second = sess.stats["layers"]
    assert first["neurons"] == 32 and second["neurons"] == 24
    # fan-out of a hidden neuron of the 12-32-24-5 MLP is the next layer's width
    assert first["synops"] == pytest.approx(first["spikes"] * 24)
    assert second["synops"] == pytest.approx(second["spikes"] * 5)
    assert 0 < first["firing_rate"] <= 1
    assert sess.stats["energy_estimate_uj"]["note"].startswith("estimate")


def test_bad_feeds_are_refused_with_names():
    snn, x = converted(mlp(), (12,))
    sess = InferenceSession(snn)
    with pytest.raises(InputError, match="unknown input 'y'"):
        sess.run(None, {"y": x})
    with pytest.raises(InputError, match="expected shape"):
        sess.run(None, {"x": x[:, :5]})
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match=r"1 NaN/Inf values \(first at index \(1, 2\)\)"):
        sess.run(None, {"x": bad})
    with pytest.raises(InputError, match="timesteps must be a positive integer"):
        sess.run(None, {"x": x}, timesteps=0)
    with pytest.raises(InputError, match="threads must be a positive integer"):
        InferenceSession(snn, threads=0)
    with pytest.raises(InputError, match="unknown output"):
        sess.run(["nope"], {"x": x})


def test_session_mirrors_onnxruntime_api():
    snn, x = converted(mlp(), (12,))
    sess = InferenceSession(snn)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "x" and inp.shape == ["N", 12] and inp.type == "tensor(float)"
    assert sess.run([out.name], {"x": x})[0].shape == (6, 5)
    assert sess.default_timesteps == 8


@pytest.mark.parametrize("kind", [{}, {"signed_spikes": True}, {"burst": 3}], ids=["if", "signed", "burst"])
def test_a_run_continued_block_by_block_equals_one_run(kind):
    """Early stop runs blocks of steps from a carried state (membranes; for signed neurons also net counts, kept
    channels-last inside the fused Conv kernel): two blocks give one run's trace bit for bit."""
    from runtime.engine import RunState, run_numba
    snn, x = converted(cnn(), (2, 12, 12), threshold="optimal", **kind)
    sess = InferenceSession(snn)
    feeds = {"x": x}
    whole = run_numba(sess._plan, feeds, 8, sess._cache, True).trace[0]
    state = RunState()
    first = run_numba(sess._plan, feeds, 3, sess._cache, True, state).trace[0]
    second = run_numba(sess._plan, feeds, 5, sess._cache, True, state).trace[0]
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    assert sess._cache.paths["Conv_4"] == "event"  # a Conv on spikes feeding a neuron: the fused kernel ran
