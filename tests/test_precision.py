"""The float32 engine against the float64 one (design.md 5a): on the bundled digits models, over the whole
held-out split at the quick demo's T values, the accuracy is equal within 0.1 point (with 300 images: equal) and
almost no spike differs; the comparison itself counts a flipped spike. benchmarks/precision_agreement.py does
the same for every demo model at every T of demo --full."""
import numpy as np
import pytest

import converter
from converter.assets import bundled_path
from converter.cli import DEMO_CALIB_IMAGES, DEMO_TIMESTEPS
from runtime import InferenceSession, InputError
from runtime.compare import precision_agreement


@pytest.mark.parametrize("name", ["digits_cnn", "digits_maxpool"])
def test_float32_agrees_with_float64_on_the_digits_models(name):
    calib = np.load(bundled_path("digits_calib.npz"))["image"][:DEMO_CALIB_IMAGES]
    data = np.load(bundled_path("digits_eval.npz"))
    steps = [int(t) for t in DEMO_TIMESTEPS.split(",")]
    snn = converter.convert(str(bundled_path(f"{name}.onnx")), calib, timesteps=max(steps), progress=False)
    for t in steps:
        model = (snn if t == max(steps) else snn.with_settings(timesteps=t)).model
        cell = precision_agreement(model, {"image": data["image"]}, data["y"], t)
        assert cell["samples"] == len(data["y"]) == 300 and cell["spikes_float64"] > 0
        assert abs(cell["accuracy_difference_points"]) <= 0.1, cell
        assert cell["flip_fraction"] < 1e-4, cell


def test_a_flipped_spike_is_counted(monkeypatch):
    """precision_agreement sees a difference in one precision's spikes: a float32 run whose first layer's
    thresholds are 1% higher fires differently somewhere, and the count says so."""
    from runtime import compare
    calib = np.load(bundled_path("digits_calib.npz"))["image"][:64]
    data = np.load(bundled_path("digits_eval.npz"))
    model = converter.convert(str(bundled_path("digits_cnn.onnx")), calib, timesteps=8, threshold="max", progress=False).model
    real = compare.InferenceSession

    def nudged(m, threads=None, precision=None):
        session = real(m, threads=threads, precision=precision)
        if precision == "float32":
            step = session._plan.neurons[0]
            step.neuron.v_th[...] *= np.float32(1.01)  # this session's plan only
        return session

    monkeypatch.setattr(compare, "InferenceSession", nudged)
    cell = precision_agreement(model, {"image": data["image"][:100]}, data["y"][:100], 8)
    assert cell["spike_flips"] > 0 and 0 < cell["flip_fraction"] < 1


def test_bad_precision_is_refused():
    model = converter.convert(str(bundled_path("digits_cnn.onnx")), np.load(bundled_path("digits_calib.npz"))["image"][:32],
                              timesteps=4, threshold="max", progress=False).model
    with pytest.raises(InputError, match="precision must be one of float32, float64"):
        InferenceSession(model, precision="float16")
    assert InferenceSession(model).precision == "float32"
    assert InferenceSession(model, engine="reference").precision == "float64"
