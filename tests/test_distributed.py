"""Distributed runs on a local Ray instance (2 workers) give the local path's outputs bit for bit.

Skipped where Ray is not installed (the default CI has no [ray] extra); one Ray instance serves the module.
"""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import cnn

import converter
from converter.cli import main
from converter.evaluate import evaluate
from converter.sweep import sweep
from runtime import InferenceSession, InputError

SMALL_CHUNKS = 1 << 16   # a few samples per chunk, so a batch spans several chunks and shards


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_cluster(ray_instance):
    """Two actors on the shared instance, closed after the test so that the CLI's own actors find free CPUs."""
    from runtime.distributed import RayCluster
    with RayCluster(workers=2, chunk_bytes=SMALL_CHUNKS, progress=False) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    x = rng.random((64, 2, 12, 12)).astype(np.float32)
    onnx.save(cnn(), path / "model.onnx")
    np.save(path / "calib.npy", x[:32])
    np.save(path / "x.npy", x)
    np.savez(path / "eval.npz", x=x, y=rng.integers(0, 4, len(x)))
    snn = converter.convert(str(path / "model.onnx"), x[:32], timesteps=8, threshold="max", progress=False)
    snn.save(path / "model.snn.onnx")
    return path, snn, x


@pytest.mark.parametrize("early_stop", [None, 2])
def test_session_matches_local(ray_cluster, files, early_stop):
    path, _, x = files
    local = InferenceSession(str(path / "model.snn.onnx"), threads=1, chunk_bytes=SMALL_CHUNKS)
    expected = local.run(None, {"x": x}, timesteps=8, early_stop=early_stop)
    remote = ray_cluster.session(str(path / "model.snn.onnx"))
    got = remote.run(None, {"x": x}, timesteps=8, early_stop=early_stop)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    for key in ("batch", "total_spikes", "total_synops", "steps_used"):
        assert remote.stats[key] == local.stats[key]


def test_worker_errors_come_back_as_the_runtimes_own(ray_cluster, files):
    path, _, x = files
    with pytest.raises(InputError, match="expected shape"):
        ray_cluster.session(str(path / "model.snn.onnx")).run(None, {"x": x[:, :, :5]})


def test_cli_run_and_evaluate_match_local(ray_instance, files, capsys):
    path, _, _ = files
    args = ["run", path / "model.snn.onnx", "--input", path / "x.npy", "-q"]
    assert main([str(a) for a in args + ["--output", path / "local.npy"]]) == 0
    assert main([str(a) for a in args + ["--output", path / "ray.npy", "--ray", "--workers", "2"]]) == 0
    assert (path / "local.npy").read_bytes() == (path / "ray.npy").read_bytes()
    common = ["evaluate", path / "model.onnx", "--calib", path / "calib.npy", "--data", path / "eval.npz",
              "--timesteps", "4,8", "--threshold", "max", "-q"]
    assert main([str(a) for a in common + ["--json", path / "local.json"]]) == 0
    assert main([str(a) for a in common + ["--json", path / "ray.json", "--ray"]]) == 0
    import json
    local, remote = (json.loads((path / f"{n}.json").read_text()) for n in ("local", "ray"))
    for rows in (local["rows"], remote["rows"]):
        for row in rows:
            row.pop("seconds")
    assert local == remote


def test_sweep_equals_local_evaluate_per_method(ray_cluster, files):
    path, snn, x = files
    y = np.arange(len(x)) % 4
    results = sweep(snn, str(path / "model.onnx"), {"x": x}, y, [4, 8], ["max", "p99.9"], ray_cluster)
    for method, got in zip(["max", "p99.9"], results["results"]):
        expected = evaluate(snn.with_settings(threshold=method), str(path / "model.onnx"), {"x": x}, y, [4, 8], show_progress=False)
        strip = [{k: v for k, v in row.items() if k != "seconds"} for row in expected["rows"]]
        assert [{k: v for k, v in row.items() if k != "seconds"} for row in got["rows"]] == strip
        assert got["settings"] == expected["settings"]


def test_bad_cluster_requests_exit_2(ray_instance, files, capsys):
    path, _, _ = files
    base = ["run", str(path / "model.snn.onnx"), "--input", str(path / "x.npy")]
    for extra, message in ((["--ray", "not-an-address"], "Ray address must be HOST:PORT"),
                           (["--ray", "--workers", "3"], "the Ray cluster has 2"),
                           (["--workers", "2"], "need --ray"),
                           (["--ray", "--threads", "2"], "--threads-per-worker")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and message in err[-1]


def test_runtime_never_imports_ray():
    code = "import sys, runtime, runtime.session; assert 'ray' not in sys.modules and 'converter' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_is_one_line_error(monkeypatch):
    from runtime.distributed import RayCluster
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"pip install 'onnx2snn\[ray\]'"):
        RayCluster()
