"""Delayed readout (metadata onnx2snn.readout_start): both engines, traces, early stop, the file, the selection."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import cnn

import converter
from converter import InputError
from converter.cli import main
from runtime import InferenceSession, SNNFormatError
from runtime.format import META_READOUT_START, readout_start_of

T = 8


@pytest.fixture(scope="module")
def snn():
    x = np.random.default_rng(5).random((48, 2, 12, 12)).astype(np.float32)
    return converter.convert(cnn(), x, timesteps=T, threshold="max", progress=False), x[:6]


def _with_start(model: onnx.ModelProto, start: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    entry = out.metadata_props.add()
    entry.key, entry.value = META_READOUT_START, str(start)
    return out


def _sums(trace: np.ndarray) -> np.ndarray:
    """Running sums of the per-step outputs from an undelayed trace (readout after t steps = mean of 1..t)."""
    return trace.astype(np.float64) * np.arange(1, len(trace) + 1).reshape((-1,) + (1,) * (trace.ndim - 1))


@pytest.mark.parametrize("engine", ["reference", "auto"])
@pytest.mark.parametrize("start", [1, 3, 7])
def test_the_readout_averages_the_steps_after_start(snn, engine, start):
    conv, x = snn
    plain = _sums(InferenceSession(conv.model, engine="reference").run_trace(None, {"x": x}, timesteps=T)[0])
    sess = InferenceSession(_with_start(conv.model, start), engine=engine)
    want = (plain[-1] - plain[start - 1]) / (T - start)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=0, atol=1e-5)
    trace = sess.run_trace(None, {"x": x})[0]
    for t in range(1, T + 1):  # the readout after t steps: plain mean until step ``start``, then the delayed one
        row = plain[t - 1] / t if t <= start else (plain[t - 1] - plain[start - 1]) / (t - start)
        np.testing.assert_allclose(trace[t - 1], row, rtol=0, atol=1e-5)


@pytest.mark.parametrize("engine, precision", [("auto", "float64"), ("event", "float32")])
def test_engines_agree_and_a_run_shorter_than_the_delay_reads_out_every_step(snn, engine, precision):
    conv, x = snn
    delayed = _with_start(conv.model, 3)
    fast = InferenceSession(delayed, engine=engine, precision=precision)
    ref = InferenceSession(delayed, engine="reference", precision=precision)
    for steps in (2, 3, 4, T):
        np.testing.assert_array_equal(fast.run(None, {"x": x}, timesteps=steps)[0], ref.run(None, {"x": x}, timesteps=steps)[0])
    np.testing.assert_array_equal(fast.run(None, {"x": x}, timesteps=3)[0], InferenceSession(conv.model, engine=engine, precision=precision).run(None, {"x": x}, timesteps=3)[0])


def test_blocks_of_steps_cross_the_start_like_one_run(snn):
    """Early stop runs the engine block by block with a RunState; blocks of 2 steps cross a start of 3."""
    from runtime.engine import RunState, run_numba
    conv, x = snn
    sess = InferenceSession(_with_start(conv.model, 3))
    whole = sess.run_trace(None, {"x": x}, timesteps=T)[0]
    state = RunState()
    parts = [run_numba(sess._plan, {"x": x}, 2, sess._cache, True, state) for _ in range(T // 2)]
    assert state.steps_done == T
    np.testing.assert_allclose(np.concatenate([p.trace[0] for p in parts]), whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(parts[-1].outputs[0], sess.run(None, {"x": x}, timesteps=T)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "\u00b2"])
def test_a_bad_readout_start_is_refused(snn, value):
    conv, _ = snn
    bad = onnx.ModelProto()
    bad.CopyFrom(conv.model)
    entry = bad.metadata_props.add()
    entry.key, entry.value = META_READOUT_START, value
    with pytest.raises(SNNFormatError, match="readout_start' must be a non-negative integer"):
        InferenceSession(bad)


def test_a_readout_start_is_recorded_and_the_selection_scores_with_it():
    calib = np.random.default_rng(6).random((64, 2, 12, 12)).astype(np.float32)
    snn = converter.convert(cnn(), calib, timesteps=16, progress=False)
    assert snn.report.settings["readout_start"] == 0 and META_READOUT_START not in {p.key for p in snn.model.metadata_props}
    delayed = snn.with_settings(readout_start=8)
    assert readout_start_of(delayed.model) == 8 and delayed.report.settings["readout_start"] == 8
    scores = {}
    for bias in (True, False):  # each candidate fixed, read out from step 9 by the runtime
        fixed = snn.with_settings(readout_start=8, bias_correction=bias)
        out = InferenceSession(fixed.model).run(None, {"x": calib})[0]
        want = ort.InferenceSession(cnn().SerializeToString()).run(None, {"x": calib})[0].argmax(1)
        z = out.astype(np.float64) - out.max(axis=1, keepdims=True)
        scores[bias] = float(-np.mean(z[np.arange(len(want)), want] - np.log(np.exp(z).sum(axis=1))))
    assert scores[delayed.report.settings["bias_correction"]] <= min(scores.values()) + 1e-4
    with pytest.raises(InputError, match="readout_start must be a non-negative integer"):
        snn.with_settings(readout_start=-1)
    late = snn.with_settings(readout_start=16)
    assert any(n.startswith("readout_start 16 >= T=16") for n in late.report.notes)
    assert not any(n.startswith("readout_start") for n in late.with_settings(readout_start=0).report.notes)


def test_the_selection_scores_the_delayed_readout(monkeypatch):
    """Two candidates whose outputs rank one way over all steps and the other way after step 2."""
    import converter.layerwise as lw
    labels = np.eye(3, dtype=np.float32)  # the ANN's top-1: class i for sample i
    early_good = np.stack([labels * 5, labels * 5, -labels, -labels])  # right only in the first two steps
    late_good = np.stack([-labels * 9, -labels * 9, labels * 2, labels * 2])  # right only after them
    outputs = {True: early_good, False: late_good}
    monkeypatch.setattr(lw, "calibrate_snn", lambda *a, bias, **k: ({"n": bias}, {"y": outputs[bias]}))
    cands = lambda: [lw.Candidate("half", True), lw.Candidate("half", False)]
    assert lw.select(None, {}, {}, {"y": labels}, 4, cands(), 0)[0].bias is True
    assert lw.select(None, {}, {}, {"y": labels}, 4, cands(), 2)[0].bias is False


def test_readout_start_from_the_command_line(tmp_path, capsys):
    onnx.save(cnn(), tmp_path / "m.onnx")
    np.save(tmp_path / "c.npy", np.random.default_rng(7).random((40, 2, 12, 12)).astype(np.float32))
    code = main(["convert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "c.npy"), "-o", str(tmp_path / "m.snn.onnx"),
                 "--timesteps", "8", "--threshold", "max", "--readout-start", "2", "--report", str(tmp_path / "r.json"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert readout_start_of(onnx.load(tmp_path / "m.snn.onnx")) == 2
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["readout_start"] == 2
    assert main(["convert", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "c.npy"), "-o", str(tmp_path / "n.snn.onnx"),
                 "--readout-start", "-1"]) == 2
    assert not (tmp_path / "n.snn.onnx").exists()
