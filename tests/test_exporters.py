"""Graphs written by real exporters (PyTorch legacy at opsets 9-17, PyTorch dynamo at opset 18), committed as
small fixtures by tests/fixtures/make_fixtures.py: each converts, its threshold-ReLU ANN matches onnxruntime on
the source model, and the Numba engine matches the NumPy reference on the SNN."""
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_ops import check

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
