"""The model corpus that ships inside the onnx wheel: every model converts and runs, or is refused cleanly.

- pytorch-converted/: single-op models with real weights and reference outputs: the SNN (T=64) reproduces
  them (exactly without neurons; within the V_th/(2T) quantisation step with them);
- light/: structure-only ImageNet models (IR 3, opset 9): they convert and run, or the refusal names the op.
  The three largest run only with `-m slow` (they take a minute or more each on 2 cores).
"""
import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import converter
from runtime import InferenceSession

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
SINGLE_OP = sorted(glob.glob(os.path.join(DATA, "pytorch-converted", "test_*")))
LIGHT = sorted(glob.glob(os.path.join(DATA, "light", "*.onnx")))
SLOW_LIGHT = ("light_densenet121.onnx", "light_inception_v2.onnx", "light_vgg19.onnx")
REFUSED_OPS = {"light_bvlc_alexnet.onnx": "LRN", "light_zfnet512.onnx": "LRN", "light_inception_v1.onnx": "LRN"}


def _tensors(folder, prefix):
    return [numpy_helper.to_array(onnx.load_tensor(p)) for p in sorted(glob.glob(os.path.join(folder, f"{prefix}_*.pb")))]


def _inputs(model):
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


@pytest.mark.parametrize("folder", SINGLE_OP, ids=os.path.basename)
def test_single_op_models_match_their_reference_outputs_or_are_refused(folder):
    model = onnx.load(os.path.join(folder, "model.onnx"))
    data = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))[0]
    feeds = dict(zip([i.name for i in _inputs(model)], _tensors(data, "input")))
    expected = _tensors(data, "output")
    op = model.graph.node[-1].op_type
    try:
        snn = converter.convert(model, feeds, timesteps=64, threshold="max", progress=False)
    except converter.UnsupportedOpError as exc:
        assert "node '" in str(exc) and any(n.op_type in str(exc) for n in model.graph.node), str(exc)
        return
    outputs = InferenceSession(snn.model).run(None, feeds)
    step = max((v / 64 for v in snn.thresholds.values()), default=0.0)
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 + step / 2 + 1e-6, err_msg=op)


LIGHT_PARAMS = [pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW_LIGHT else p for p in LIGHT]


@pytest.mark.parametrize("path", LIGHT_PARAMS, ids=os.path.basename)
def test_structure_only_models_convert_and_run_or_name_the_refused_op(path):
    name = os.path.basename(path)
    model = onnx.load(path)
    x = {i.name: np.random.default_rng(0).random([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
         for i in _inputs(model)}
    if name in REFUSED_OPS:
        with pytest.raises(converter.UnsupportedOpError, match=f"node '.*': op {REFUSED_OPS[name]} has no rate-coded equivalent"):
            converter.convert(path, x, timesteps=2, progress=False)
        return
    snn = converter.convert(path, x, timesteps=2, threshold="max", progress=False)
    (out,) = InferenceSession(snn.model).run(None, x, timesteps=2)
    assert out.shape[:2] == (1, 1000) and np.all(np.isfinite(out))
