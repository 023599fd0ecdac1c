"""The converter's invariant, checked on one generated graph (tests/graph_gen.py): whatever ``convert`` accepts,
the written SNN runs on inputs of the declared shape and approaches the threshold-ReLU ANN as T grows; anything
else is refused with an Onnx2SnnError that names the node. Used by tests/test_invariant.py and benchmarks/fuzz.py.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from graph_gen import Case

import converter
from converter.evaluate import as_scores
from runtime import InferenceSession, Onnx2SnnError

SHORT_T, LONG_T, LONGER_T = 16, 256, 4096
# "Approaches the ANN": the SNN's error against the threshold-ReLU ANN (mean |difference| / mean |ANN output|,
# worst output) at LONG_T is at most LONG_T_ERROR, and at most SHRINK x the error at SHORT_T unless it is below
# CONVERGED; where it is not, the same must hold from LONG_T to LONGER_T (a graph whose outputs are small
# against its thresholds converges as 1/T from a large error). Chosen on seeds 0-199 of tests/graph_gen.py
# (there: error at LONG_T at most 0.04, ratio at most 0.25, and at most 0.13 where the error exceeds 0.02); the
# step to LONGER_T after 5 of 5,000 fuzz graphs (seeds 1000-5999) converged more slowly (docs/reliability.md).
LONG_T_ERROR, SHRINK, CONVERGED = 0.15, 0.3, 0.02
ENGINE_ATOL = 1e-5


def _ort(model, feeds: dict[str, np.ndarray], names: list[str] | None = None) -> list:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, feeds)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def declared_feeds(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs of the declared shape, with a batch size other than the calibration's where the batch is free."""
    feeds = {}
    for vi in case.model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else 3 for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.random(dims).astype(np.float32)
    return feeds


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    return max(float(np.abs(g - w).mean() / max(np.abs(w).mean(), 1e-6)) for g, w in zip(got, want))


def check_source_equivalence(case: Case, snn) -> None:
    """With max thresholds nothing is clipped on the calibration samples: the threshold-ReLU ANN computes the
    source model's outputs (through a softmax where the converter dropped one; a ZipMap as its score tensor;
    a dropped label output as the arg-max of the scores)."""
    source_names = [o.name for o in case.model.graph.output]
    source = dict(zip(source_names, _ort(case.model, case.feeds)))
    ann_names = [o.name for o in snn.ann_model.graph.output]
    ann = dict(zip(ann_names, _ort(snn.ann_model, case.feeds)))
    softmax_dropped = any("Softmax" in note and "dropped" in note for note in snn.report.notes)
    for name in ann_names:
        want = as_scores(source[name])
        got = _softmax(ann[name]) if softmax_dropped else ann[name]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"ANN output {name} differs from the source model")
    for name in set(source_names) - set(ann_names):  # label outputs: the arg-max of the scores
        assert any(f"'{name}'" in note for note in snn.report.notes), f"output {name} dropped without a note"
        scores = ann[ann_names[0]]
        np.testing.assert_array_equal(source[name].reshape(-1), scores.argmax(-1).reshape(-1))


def _approaches(before: float, after: float) -> bool:
    return after <= min(LONG_T_ERROR, max(CONVERGED, SHRINK * before))


def check(case: Case, seed: int, optimal: bool = False, signed: bool = False, burst: int = 1) -> str:
    """Check the invariant on ``case``; return the outcome ("converted" or "refused"), raise AssertionError on
    a violation. ``optimal``: also convert with the default threshold method and run that SNN. ``signed``: both
    conversions write signed neurons (``--spikes signed``), which must approach the ANN just the same.
    ``burst``: the optimal conversion writes burst neurons (``--burst``), run bit for bit as the float32 oracle."""
    rng = np.random.default_rng(seed)
    try:
        snn = converter.convert(case.model, case.feeds, timesteps=SHORT_T, threshold="max", progress=False, signed_spikes=signed)
    except Onnx2SnnError as exc:
        assert case.refuse is not None, f"refused a graph of supported ops: {exc}"
        assert f"node '{case.refuse}'" in str(exc), f"the refusal does not name node {case.refuse!r}: {exc}"
        return "refused"
    assert case.refuse is None, f"accepted a graph with {case.refuse!r}, which has no rate-coded equivalent"
    check_source_equivalence(case, snn)
    feeds = declared_feeds(case, rng)
    ann_names = [o.name for o in snn.ann_model.graph.output]
    ann = _ort(snn.ann_model, feeds, ann_names)
    errors = {}
    for steps in (SHORT_T, LONG_T, LONGER_T):
        emitted = snn if steps == SHORT_T else snn.with_settings(timesteps=steps)
        written = InferenceSession(emitted.model.SerializeToString())   # the file as `onnx2snn run` reads it
        got = written.run(None, feeds, timesteps=steps)
        assert [o.name for o in written.get_outputs()] == ann_names
        for g, a in zip(got, ann):
            assert g.shape == a.shape, f"SNN output shape {g.shape} != ANN {a.shape}"
            assert np.all(np.isfinite(g))
        errors[steps] = relative_error(got, ann)
        if steps == SHORT_T:  # each precision against its own oracle: float32 bit for bit, float64 to ENGINE_ATOL
            ref32 = InferenceSession(emitted.model, engine="reference", precision="float32").run(None, feeds, timesteps=steps)
            for g, r in zip(got, ref32):
                np.testing.assert_array_equal(g, r, err_msg="float32 Numba engine != float32 NumPy oracle")
            got64 = InferenceSession(emitted.model, precision="float64").run(None, feeds, timesteps=steps)
            ref64 = InferenceSession(emitted.model, engine="reference").run(None, feeds, timesteps=steps)
            for g, r in zip(got64, ref64):
                np.testing.assert_allclose(g, r, rtol=0, atol=ENGINE_ATOL, err_msg="float64 Numba engine != float64 NumPy reference")
        elif _approaches(errors[SHORT_T if steps == LONG_T else LONG_T], errors[steps]):
            break
    else:
        raise AssertionError("SNN does not approach the ANN: relative error " + ", ".join(f"{e:.3g} at T={t}" for t, e in errors.items()))
    if optimal:
        tuned = converter.convert(case.model, case.feeds, timesteps=4, progress=False, signed_spikes=signed, burst=burst)
        got = InferenceSession(tuned.model.SerializeToString()).run(None, feeds)
        assert all(g.shape == a.shape and np.all(np.isfinite(g)) for g, a in zip(got, ann))
        if burst > 1:
            ref32 = InferenceSession(tuned.model, engine="reference", precision="float32").run(None, feeds)
            for g, r in zip(got, ref32):
                np.testing.assert_array_equal(g, r, err_msg="float32 Numba engine != float32 NumPy oracle (burst neurons)")
    return "converted"
