"""Property tests: random graphs either convert or are refused cleanly, and converted ones agree across the
NumPy reference, the Numba engine and (threshold-ReLU ANN) onnxruntime on the source model."""
import numpy as np
import onnxruntime as ort
from graph_gen import random_graph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import converter
from runtime import InferenceSession


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), timesteps=st.sampled_from([1, 3, 8]))
def test_random_graphs_agree_across_engines_and_onnxruntime(seed, timesteps):
    model, feeds = random_graph(seed)
    try:
        snn = converter.convert(model, feeds, timesteps=timesteps, threshold="max", progress=False)
    except converter.Onnx2SnnError as exc:  # a clean refusal is an allowed outcome; it must name a node
        assert "node '" in str(exc) or "calibration" in str(exc)
        return
    source = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    ann = ort.InferenceSession(snn.ann_model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(ann, source, rtol=1e-4, atol=1e-4)
    small = {"x": feeds["x"][:3]}
    fast = InferenceSession(snn.model).run(None, small)[0]
    ref = InferenceSession(snn.model, engine="reference").run(None, small)[0]
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5)
