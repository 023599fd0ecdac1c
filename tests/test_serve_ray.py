"""The Ray Serve deployment speaks the same protocol: metadata and inference through tritonclient, outputs equal to
a direct session run. Needs the [serve] and [ray] extras (ray[serve]); skipped without them."""
import socket

import numpy as np
import pytest
from conftest import cnn

import converter
from runtime import InferenceSession

for _module in ("fastapi", "uvicorn", "prometheus_client"):
    pytest.importorskip(_module)
th = pytest.importorskip("tritonclient.http")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from runtime.serving import Limits, ray_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # about 35 s: starting Ray and Serve dominates
def test_ray_serve_deployment_answers_like_a_local_session(tmp_path):
    x = np.random.default_rng(0).random((40, 2, 12, 12)).astype(np.float32)
    converter.convert(cnn(), x[:32], timesteps=8, threshold="max", progress=False).save(tmp_path / "model.snn.onnx")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_app([tmp_path / "model.snn.onnx"], names=["cnn"], limits=Limits(max_batch=16), replicas=2),
                  name="onnx2snn", route_prefix="/")
        client = th.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
        assert client.is_server_ready() and client.is_model_ready("cnn")
        meta = client.get_model_metadata("cnn")
        assert meta["parameters"]["timesteps"] == 8
        tensor = th.InferInput("x", [8, 2, 12, 12], "FP32")
        tensor.set_data_from_numpy(x[32:])
        result = client.infer("cnn", [tensor], parameters={"timesteps": 4})
        expected = InferenceSession(str(tmp_path / "model.snn.onnx")).run(None, {"x": x[32:]}, timesteps=4)[0]
        assert np.array_equal(result.as_numpy(meta["outputs"][0]["name"]), expected)
        with pytest.raises(th.InferenceServerException, match="timesteps must be from 1 to 1024"):
            client.infer("cnn", [tensor], parameters={"timesteps": 0})
    finally:
        serve.shutdown()
        ray.shutdown()
