"""The committed paper-shaped models (CIFAR-Net, VGG-16 width/4, ResNet-20; 3x32x32 MNIST) convert, their
threshold-ReLU ANN equals the source model on the calibration images (max V_th never clips them), and the SNN
runs. Kept fast: 32 calibration images, max thresholds, 4 images at T=8."""
from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest

import converter
from runtime import InferenceSession

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
NAMES = [n for n in ("cifarnet", "cifarnet_clip", "vgg16_w4", "vgg16_w4_clip", "vgg16_w4_maxpool", "resnet20", "resnet20_clip")
         if os.path.exists(os.path.join(MODELS, f"{n}.onnx"))]


def to32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1), dtype=np.float32)


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return to32(np.load(os.path.join(MODELS, "mnist_calib.npz"))["image"][:32])


def test_paper_models_present_and_listed():
    meta = json.load(open(os.path.join(MODELS, "models.json")))["models"]
    for name in ("cifarnet", "vgg16_w4", "resnet20"):
        assert name in NAMES, f"models/{name}.onnx missing"
    for name in NAMES:
        assert meta[name]["input_shape"] == ["N", 3, 32, 32]
        assert os.path.getsize(os.path.join(MODELS, f"{name}.onnx")) < 6e6


@pytest.mark.parametrize("name", NAMES)
def test_paper_model_converts_and_matches_source(name, calib):
    path = os.path.join(MODELS, f"{name}.onnx")
    snn = converter.convert(path, calib, timesteps=8, threshold="max", progress=False)
    source = ort.InferenceSession(path).run(None, {"image": calib})[0]
    ann = ort.InferenceSession(snn.ann_model.SerializeToString()).run(None, {"image": calib})[0]
    np.testing.assert_allclose(ann, source, rtol=1e-4, atol=1e-4)
    (out,) = InferenceSession(snn.model).run(None, {"image": calib[:4]}, timesteps=8)
    assert out.shape == (4, 10) and np.isfinite(out).all()
