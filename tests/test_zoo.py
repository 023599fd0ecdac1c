"""The model zoo of training recipes (models/zoo, issue 17): listed with recipe and split, small, and each of
the exporters' graph forms converts (threshold-ReLU ANN = source ANN where max V_th never clips, the SNN runs).
Kept fast and without torch: 32 calibration images, 4 images at T=4."""
from __future__ import annotations

import collections
import json
import os

import numpy as np
import onnxruntime as ort
import pytest

import converter
from runtime import InferenceSession

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
ZOO = {name: m for name, m in json.load(open(os.path.join(MODELS, "models.json")))["models"].items() if "zoo" in m}


def test_zoo_has_four_recipes_of_three_kinds_split_once_by_recipe():
    recipes = collections.defaultdict(set)
    for name, m in ZOO.items():
        z = m["zoo"]
        assert z["split"] in ("development", "held-out") and name == f"zoo_{z['kind']}_{z['recipe']}"
        assert os.path.getsize(os.path.join(MODELS, m["file"])) < 1_000_000
        assert m["regenerate"] == f"python models/train_zoo.py --only {name}"
        recipes[z["recipe"]].add((z["kind"], z["split"]))
    assert len(recipes) >= 4
    for recipe, cells in recipes.items():
        assert {kind for kind, _ in cells} == {"vgg", "resnet", "maxpool"}, recipe
        assert len({split for _, split in cells}) == 1, f"{recipe}: one split per recipe"
    assert {split for cells in recipes.values() for _, split in cells} == {"development", "held-out"}


# one model per recipe (each recipe is one exporter, opset and graph form), the ResNet where it is trained
PER_RECIPE = sorted({m["zoo"]["recipe"]: name for name, m in sorted(ZOO.items(), key=lambda item: item[1]["zoo"]["kind"] != "resnet")
                     if os.path.exists(os.path.join(MODELS, m["file"]))}.values())


@pytest.mark.parametrize("name", PER_RECIPE)
def test_zoo_graph_forms_convert(name):
    """F.relu + Add + GlobalAveragePool (legacy exporter, opsets 11 and 13); the dynamo exporter's Reshape and the
    input normalisation as Sub/Div in the graph (opset 18)."""
    path = os.path.join(MODELS, ZOO[name]["file"])
    calib = np.load(os.path.join(MODELS, "mnist_calib.npz"))["image"][:32]
    snn = converter.convert(path, calib, timesteps=4, threshold="max", progress=False)
    source = ort.InferenceSession(path).run(None, {"image": calib})[0]
    ann = ort.InferenceSession(snn.ann_model.SerializeToString()).run(None, {"image": calib})[0]
    np.testing.assert_allclose(ann, source, rtol=1e-4, atol=1e-4)
    (out,) = InferenceSession(snn.model).run(None, {"image": calib[:4]}, timesteps=4)
    assert out.shape == (4, 10) and np.isfinite(out).all()


def _benchmark():
    import importlib.util
    spec = importlib.util.spec_from_file_location("accuracy_vs_T", os.path.join(MODELS, "..", "benchmarks", "accuracy_vs_T.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mcnemar_exact_test_and_the_trailing_cell_check():
    bench = _benchmark()
    assert bench.mcnemar_exact(0, 0) == 1.0
    assert bench.mcnemar_exact(0, 6) == pytest.approx(2 / 64)            # 6 images, all one way: just below 5%
    assert bench.mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)     # binomial tail P(X <= 1), X ~ B(10, 1/2), twice
    assert bench.mcnemar_exact(5, 5) == 1.0
    rng = np.random.default_rng(0)
    mine = rng.random(100) < 0.9
    theirs = mine.copy()
    theirs[np.flatnonzero(~mine)[:8]] = True                             # the other row also gets 8 of our misses right
    r = {"samples": 100, "rows": {bench.OPTIMAL: {"4": mine.mean()}, "other": {"4": theirs.mean()}},
         "hits": {bench.OPTIMAL: {"4": bench.packed(mine)}, "other": {"4": bench.packed(theirs)}}}
    assert np.array_equal(bench.unpacked(bench.packed(mine), 100), mine)
    line = bench.behind(r)
    assert "by 8 image(s) (McNemar exact p = 0.0078)" in line and line.endswith(": 1")
