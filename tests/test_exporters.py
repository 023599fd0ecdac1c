"""Graphs written by real exporters, committed as small fixtures: PyTorch legacy at opsets 9-17 and dynamo at
opset 18 (tests/fixtures/make_fixtures.py), and trained models from scikit-learn/skl2onnx, Keras/tf2onnx and
Flax/jax2onnx (tests/fixtures/make_third_party.py). Each converts, its threshold-ReLU ANN matches onnxruntime on
the source model, and the SNN runs (the Numba engine matches the NumPy reference; trained models keep their
accuracy)."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from graph_gen import Case
from invariant import check_source_equivalence
from test_ops import check

import converter
from runtime import InferenceSession

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CALIB = np.load(FIXTURES / "calib.npz")


@pytest.mark.parametrize("stem", sorted(CALIB.files))
def test_exported_fixture_converts_and_matches(stem):
    model = onnx.load(FIXTURES / f"{stem}.onnx")
    snn = check(model, {"x": CALIB[stem]})
    ops = Counter(n.op_type for n in model.graph.node)
    assert snn.report.layers, "every fixture has activations"
    if ops["BatchNormalization"]:
        assert all("folded" in n.action or "affine" in n.action for n in snn.report.nodes if n.op == "BatchNormalization")
    if ops["Softmax"]:
        assert any("Softmax" in note for note in snn.report.notes)


THIRD_PARTY = FIXTURES / "third_party"
EXPORTED = json.loads((THIRD_PARTY / "third_party.json").read_text())


def _data(entry: dict, split: str) -> np.ndarray:
    """The bundled split in the exported model's layout (flat for scikit-learn, NHWC for Keras and Flax)."""
    data = np.load(Path(__file__).resolve().parent.parent / "models" / f"{entry['dataset']}_{split}.npz")
    x = data["image"]
    x = x.reshape(len(x), -1) if entry["layout"] == "flat" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x, data["y"]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_third_party_exporter_model_converts_within_a_point_of_its_framework(name):
    """Models trained and exported by scikit-learn/skl2onnx, Keras/tf2onnx and Flax/jax2onnx
    (tests/fixtures/make_third_party.py): the threshold-ReLU ANN computes the exported model (label and ZipMap
    outputs handled), and the SNN (optimal, T = 8, 200 calibration images) is within one point of the
    framework's own accuracy on the evaluation split. docs/results.md has the whole T sweep."""
    entry = EXPORTED[name]
    model = onnx.load(THIRD_PARTY / f"{name}.onnx")
    calib, _ = _data(entry, "calib")
    x, y = _data(entry, "eval")
    feeds = {model.graph.input[0].name: calib[:200]}
    check_source_equivalence(Case(model, feeds, entry["exporter"], 0), converter.convert(model, feeds, timesteps=8, threshold="max", progress=False))
    snn = converter.convert(model, feeds, timesteps=8, progress=False)
    out = InferenceSession(snn.model).run(None, {model.graph.input[0].name: x})[0]
    assert np.mean(out.argmax(1) == y) >= entry["framework_accuracy"] - 0.01


def test_skl2onnx_export_of_a_fresh_mlp_converts():
    """The installed skl2onnx on a freshly trained MLPClassifier(activation='relu'): label and ZipMap outputs
    are handled (reported) and the SNN agrees with scikit-learn's predictions."""
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    clf = MLPClassifier((32,), activation="relu", max_iter=600, random_state=1).fit(x[:1200], y[:1200])
    model = skl2onnx.to_onnx(clf, x[:1])
    snn = converter.convert(model, x[1200:1400], timesteps=16, progress=False)
    assert [o.name for o in snn.model.graph.output] == ["output_probability"]
    assert any("label output 'output_label' dropped" in note for note in snn.report.notes)
    out = InferenceSession(snn.model).run(None, {"X": x[1400:]})[0]
    assert np.mean(out.argmax(1) == clf.predict(x[1400:])) >= 0.97
