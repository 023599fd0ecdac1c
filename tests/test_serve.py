"""`onnx2snn serve`: the Open Inference Protocol v2 driven by the real Triton client and by plain HTTP, dynamic
batching bit-identical to direct session runs, 4xx for every kind of bad request, 500 for an internal fault, and
the server answering the next request after each.

Needs the [serve] extra (fastapi, uvicorn, prometheus_client) and the clients tritonclient[http] and httpx;
skipped without them. One server on a free loopback port serves the module.
"""
import gzip
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from conftest import cnn

import converter
from converter.cli import main
from runtime import InferenceSession

for _module in ("fastapi", "uvicorn", "prometheus_client", "httpx"):
    pytest.importorskip(_module)
th = pytest.importorskip("tritonclient.http")
import httpx  # noqa: E402

from runtime.serving import Limits, Server  # noqa: E402

T = 8
LIMITS = Limits(max_batch=32, max_delay_ms=20, max_timesteps=64, max_body_bytes=1 << 20)


@pytest.fixture(scope="module")
def snn_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve")
    x = np.random.default_rng(0).random((96, 2, 12, 12)).astype(np.float32)
    converter.convert(cnn(), x[:48], timesteps=T, threshold="max", progress=False).save(path / "model.snn.onnx")
    return path / "model.snn.onnx", x[48:]


@pytest.fixture(scope="module")
def server(snn_file):
    with Server([snn_file[0]], port=0, limits=LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def direct(snn_file):
    return InferenceSession(str(snn_file[0]))


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def triton(server, concurrency=1):
    return th.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=concurrency, network_timeout=60)


def json_request(x, **parameters):
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]}
    if parameters:
        body["parameters"] = parameters
    return body


def logits(response) -> np.ndarray:
    out = response.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def test_tritonclient_reads_metadata_and_runs_inference(server, snn_file, direct):
    _, x = snn_file
    client = triton(server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("model")
    meta = client.get_model_metadata("model")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2, 12, 12]}]
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"] == [-1, 4]
    assert meta["parameters"]["timesteps"] == T and meta["parameters"]["threshold_method"] == "max"
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    for binary in (True, False):
        tensor = th.InferInput("x", [5, 2, 12, 12], "FP32")
        tensor.set_data_from_numpy(x[:5], binary_data=binary)
        result = client.infer("model", [tensor], outputs=[th.InferRequestedOutput(meta["outputs"][0]["name"], binary_data=binary)])
        assert np.array_equal(result.as_numpy(meta["outputs"][0]["name"]), direct.run(None, {"x": x[:5]})[0])
    compressed = client.infer("model", [tensor], request_compression_algorithm="gzip")
    assert np.array_equal(compressed.as_numpy(meta["outputs"][0]["name"]), direct.run(None, {"x": x[:5]})[0])


def test_per_request_timesteps_early_stop_and_spike_counts(server, snn_file, direct):
    _, x = snn_file
    client = triton(server)
    tensor = th.InferInput("x", [6, 2, 12, 12], "FP32")
    tensor.set_data_from_numpy(x[:6])
    name = direct.get_outputs()[0].name
    result = client.infer("model", [tensor], parameters={"timesteps": 16, "early_stop": 2},
                          outputs=[th.InferRequestedOutput(name), th.InferRequestedOutput("spike_counts")])
    expected = direct.run(None, {"x": x[:6]}, timesteps=16, early_stop=2)[0]
    assert np.array_equal(result.as_numpy(name), expected)
    assert result.as_numpy("spike_counts").tolist() == [layer["spikes"] for layer in direct.stats["layers"]]
    params = result.get_response()["parameters"]
    assert params["steps_used"] == direct.stats["steps_used"] and params["batch_size"] == 6
    assert params["synops"] == pytest.approx(direct.stats["total_synops"])
    assert len(client.get_model_metadata("model")["parameters"]["spike_layers"]) == len(direct.stats["layers"])


def test_plain_http_json_and_binary_output(server, snn_file, direct, client):
    _, x = snn_file
    assert client.get("/v2/health/live").status_code == 200 and client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/model/ready").json() == {"name": "model", "ready": True}
    assert client.get("/v2/models/model/versions/1").json()["name"] == "model"
    response = client.post("/v2/models/model/infer", json=json_request(x[:3], timesteps=4) | {"id": "r1"})
    assert response.status_code == 200 and response.json()["id"] == "r1"
    assert np.array_equal(logits(response), direct.run(None, {"x": x[:3]}, timesteps=4)[0])
    response = client.post("/v2/models/model/versions/1/infer", json=json_request(x[:3], binary_data_output=True))
    header = int(response.headers["Inference-Header-Content-Length"])
    out = json.loads(response.content[:header])["outputs"][0]
    assert out["parameters"]["binary_data_size"] == len(response.content) - header
    got = np.frombuffer(response.content[header:], dtype="<f4").reshape(out["shape"])
    assert np.array_equal(got, direct.run(None, {"x": x[:3]})[0])


def test_dynamic_batching_is_bit_identical_to_direct_runs(server, snn_file, direct):
    """16 clients at once, with different batch sizes and two values of T: every response equals a direct run of
    that request alone, and requests did share runs."""
    _, x = snn_file
    client = triton(server, concurrency=16)
    name = direct.get_outputs()[0].name
    requests = []
    for k in range(48):
        rows = x[k % 40: k % 40 + 1 + k % 3]
        tensor = th.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        steps = 4 if k % 4 == 3 else T
        requests.append((rows, steps, client.async_infer("model", [tensor], parameters={"timesteps": steps})))
    shared = 0
    for rows, steps, pending in requests:
        result = pending.get_result()
        assert np.array_equal(result.as_numpy(name), direct.run(None, {"x": rows}, timesteps=steps)[0])
        shared += result.get_response()["parameters"]["batch_size"] > len(rows)
    assert shared > 0, "no two requests were batched together"


BAD_REQUESTS = {
    # name: (request body or callable(body) -> (bytes, headers), expected status, a word the error must contain)
    "wrong shape": (lambda x: json_request(x[:, :1]), 400, "expected shape"),
    "wrong datatype": (lambda x: {"inputs": [dict(json_request(x)["inputs"][0], datatype="INT64")]}, 400, "datatype 'INT64'"),
    "unknown datatype": (lambda x: {"inputs": [dict(json_request(x)["inputs"][0], datatype="FLOAT")]}, 400, "datatypes:"),
    "wrong input name": (lambda x: {"inputs": [dict(json_request(x)["inputs"][0], name="image")]}, 400, "unknown input 'image'"),
    "data not numbers": (lambda x: {"inputs": [dict(json_request(x)["inputs"][0], data=["a"] * x.size)]}, 400, "numbers"),
    "data size mismatch": (lambda x: {"inputs": [dict(json_request(x)["inputs"][0], shape=[3, 2, 12, 12])]}, 400, "holds 576 values, shape [3, 2, 12, 12] needs 864"),
    "NaN input": (lambda x: (json.dumps(json_request(np.where(x > 0.5, np.nan, x))).encode(), {}), 400, "NaN"),
    "no inputs": (lambda x: {"outputs": []}, 400, "'inputs'"),
    "malformed JSON": (lambda x: (b'{"inputs": [', {}), 400, "malformed JSON"),
    "not an object": (lambda x: (b"[1, 2]", {}), 400, "JSON object"),
    "T of 0": (lambda x: json_request(x, timesteps=0), 400, "timesteps"),
    "T of 10^9": (lambda x: json_request(x, timesteps=10**9), 400, "limit"),
    "T not an integer": (lambda x: json_request(x, timesteps="8"), 400, "integer"),
    "early_stop of 0": (lambda x: json_request(x, early_stop=0), 400, "early_stop"),
    "unknown parameter": (lambda x: json_request(x, timestep=8), 400, "unknown parameter 'timestep'"),
    "unknown output": (lambda x: dict(json_request(x), outputs=[{"name": "probs"}]), 400, "unknown output 'probs'"),
    "body too large": (lambda x: json_request(np.full((500, 2, 12, 12), 0.123456, np.float32)), 413, "limit"),
    "gzip bomb": (lambda x: (gzip.compress(b" " * (2 << 20)), {"Content-Encoding": "gzip"}), 413, "decompressed"),
    "bad binary size": (lambda x: binary_request(x, size=7), 400, "binary_data_size"),
    "binary past the end": (lambda x: binary_request(x, cut=16), 400, "past the end"),
    "bad header length": (lambda x: binary_request(x, header="12345678"), 400, "Inference-Header-Content-Length"),
}


def binary_request(x, size=None, cut=0, header=None):
    blob = x.astype("<f4").tobytes()
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": size or len(blob)}}
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + blob[:len(blob) - cut], {"Inference-Header-Content-Length": header or str(len(head))}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_4xx_and_the_next_is_served(server, snn_file, direct, client, case):
    _, x = snn_file
    make, status, words = BAD_REQUESTS[case]
    body = make(x[:2])
    if isinstance(body, tuple):
        response = client.post("/v2/models/model/infer", content=body[0], headers=body[1])
    else:
        response = client.post("/v2/models/model/infer", json=body)
    assert response.status_code == status, response.text[:300]
    assert words in response.json()["error"], response.json()
    good = client.post("/v2/models/model/infer", json=json_request(x[:2]))
    assert good.status_code == 200 and np.array_equal(logits(good), direct.run(None, {"x": x[:2]})[0])


def test_unknown_model_version_and_route_get_404(snn_file, client):
    x = snn_file[1][:2]
    for method, path, words in [("post", "/v2/models/nope/infer", "unknown model 'nope'; models: model"),
                                ("post", "/v2/models/model/versions/2/infer", "no version '2'"),
                                ("get", "/v2/models/nope", "unknown model"), ("get", "/v2/models/nope/ready", "unknown model"),
                                ("get", "/v2/models/model/versions/2", "no version '2'"), ("get", "/v3/x", "no route")]:
        response = client.post(path, json=json_request(x)) if method == "post" else client.get(path)
        assert response.status_code == 404 and words in response.json()["error"], (path, response.text)
        assert client.post("/v2/models/model/infer", json=json_request(x)).status_code == 200
    assert client.get("/v2/models/model/infer").status_code == 405


def test_internal_fault_is_500_and_the_server_stays_up(server, snn_file, client, monkeypatch):
    _, x = snn_file
    session = server.models["model"].session
    real_run = session.run
    calls = []

    def faulty(*args, **kwargs):   # an injected fault: nothing a client sends makes the engine fail
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real_run(*args, **kwargs)
    monkeypatch.setattr(session, "run", faulty)
    response = client.post("/v2/models/model/infer", json=json_request(x[:2]))
    assert response.status_code == 500 and "internal fault (RuntimeError: injected fault)" in response.json()["error"]
    assert client.post("/v2/models/model/infer", json=json_request(x[:2])).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_metrics(server, snn_file, client):
    _, x = snn_file
    assert client.post("/v2/models/model/infer", json=json_request(x[:3])).status_code == 200
    client.post("/v2/models/model/infer", json=json_request(x[:3], timesteps=0))
    text = client.get("/metrics").text
    for line in ['onnx2snn_requests_total{code="200",model="model"}', 'onnx2snn_requests_total{code="400",model="model"}',
                 "onnx2snn_request_duration_seconds_bucket", "onnx2snn_batch_size_bucket", "onnx2snn_queue_seconds_bucket",
                 'onnx2snn_spikes_total{model="model"}', 'onnx2snn_synops_total{model="model"}',
                 'onnx2snn_energy_microjoules_total{model="model"}', 'onnx2snn_spikes_per_inference{model="model"}',
                 'onnx2snn_queue_depth{model="model"}']:
        assert line in text, line
    value = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and not l.startswith("#")}
    assert value['onnx2snn_inferences_total{model="model"}'] >= 3 and value['onnx2snn_spikes_total{model="model"}'] > 0


def test_cli_serves_until_sigterm(snn_file, tmp_path):
    path, x = snn_file
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "converter", "serve", str(path), "--port", "0", "--name", "digits"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving digits at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200
        response = httpx.post(f"{url}/v2/models/digits/infer", json=json_request(x[:2]), timeout=30)
        assert response.status_code == 200 and np.array_equal(logits(response), InferenceSession(str(path)).run(None, {"x": x[:2]})[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out


def test_cli_refuses_bad_setups(snn_file, capsys):
    path = str(snn_file[0])
    for args, words in [(["--replicas", "2"], "--replicas needs --ray"), (["--name", "a", "--name", "b"], "2 names for 1 models"),
                        (["--name", "a b"], "model name 'a b'"), (["--timesteps", "2000"], "--max-timesteps"),
                        ([path], "two models are named 'model'")]:
        assert main(["serve", path, *args, "--port", "0"]) == 2, args
        assert words in capsys.readouterr().err, args


def test_a_request_in_a_batch_that_fails_alone_does_not_fail_the_others(server, snn_file, direct, monkeypatch):
    """When a batched run fails, its requests are run one by one: only the one that fails gets the error."""
    _, x = snn_file
    session = server.models["model"].session
    real_run = session.run
    poison = x[7, 0, 0, 0]

    def run(names, feeds, **kwargs):   # injected: a run fails when it holds the poisoned sample
        if (feeds["x"][:, 0, 0, 0] == poison).any():
            raise RuntimeError("poisoned sample")
        return real_run(names, feeds, **kwargs)
    monkeypatch.setattr(session, "run", run)
    client = triton(server, concurrency=8)
    pending = []
    for k in range(8):
        tensor = th.InferInput("x", [1, 2, 12, 12], "FP32")
        tensor.set_data_from_numpy(x[k + 4:k + 5])
        pending.append((k + 4, client.async_infer("model", [tensor])))
    failed = []
    for k, p in pending:
        try:
            p.get_result()
        except th.InferenceServerException as exc:
            failed.append((k, exc.status()))
    assert failed == [(7, "500")]


def test_threads_share_nothing_but_the_session(snn_file):
    """Two models in one server, requests to both at once: each gets its own model's result."""
    path, x = snn_file
    with Server([path, path], names=["a", "b"], port=0, timesteps=4, limits=LIMITS) as both:
        results = {}

        def call(name):
            with httpx.Client(base_url=both.url, timeout=60) as http:
                results[name] = logits(http.post(f"/v2/models/{name}/infer", json=json_request(x[:4])))
        threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    expected = InferenceSession(str(path)).run(None, {"x": x[:4]}, timesteps=4)[0]
    assert np.array_equal(results["a"], expected) and np.array_equal(results["b"], expected)
