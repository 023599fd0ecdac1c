"""examples/ run as documented: on the bundled digits model, in a temporary folder."""
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

import runtime

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def load_example(name: str):
    """Import an example script by path (examples/ is not a package: users copy the files)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    pipeline = load_example("export_pipeline")
    code = pipeline.main([str(MODELS / "digits_cnn.onnx"), "--calib", str(MODELS / "digits_calib.npz"),
                          "-o", str(out / "digits.snn.onnx"), "--report", str(out / "report.json"), "--timesteps", "4", "--batch-size", "50"])
    assert code == 0
    return out


def test_export_pipeline_writes_snn_and_report(exported):
    import json
    report = json.loads((exported / "report.json").read_text())
    assert len(report["layers"]) == 3 and report["settings"]["timesteps"] == 4
    assert runtime.InferenceSession(str(exported / "digits.snn.onnx")).default_timesteps == 4
    assert sorted(p.name for p in exported.iterdir()) == ["digits.snn.onnx", "report.json"]   # no temporary files left


def test_export_pipeline_takes_bytes_and_batches(tmp_path):
    pipeline = load_example("export_pipeline")
    snn = pipeline.export((MODELS / "digits_cnn.onnx").read_bytes(), pipeline.npz_batches(str(MODELS / "digits_calib.npz"), 64),
                          str(tmp_path / "m.snn.onnx"), timesteps=2, threshold="max")
    assert len(snn.thresholds) == 3 and (tmp_path / "m.snn.onnx").is_file()


def test_export_pipeline_fails_on_conversion_error(tmp_path, capsys):
    """An op without a spiking equivalent stops the pipeline with exit status 2 and writes nothing."""
    model = onnx.load(str(MODELS / "digits_cnn.onnx"))
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "Sigmoid"
            break
    onnx.save(model, str(tmp_path / "sigmoid.onnx"))
    pipeline = load_example("export_pipeline")
    code = pipeline.main([str(tmp_path / "sigmoid.onnx"), "--calib", str(MODELS / "digits_calib.npz"),
                          "-o", str(tmp_path / "out.snn.onnx"), "--report", str(tmp_path / "r.json")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sigmoid.onnx"]


def test_batch_inference_one_output_per_input(exported, tmp_path):
    images = np.load(MODELS / "digits_eval.npz")["image"]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    np.save(inputs / "a.npy", images[:5])
    np.save(inputs / "b.npy", images[5])          # one sample, no batch axis
    batch = load_example("batch_inference")
    assert batch.main([str(exported / "digits.snn.onnx"), str(inputs), str(outputs), "--threads", "1"]) == 0
    assert sorted(p.name for p in outputs.iterdir()) == ["a.npy", "b.npy"]
    a, b = np.load(outputs / "a.npy"), np.load(outputs / "b.npy")
    (expected,) = runtime.InferenceSession(str(exported / "digits.snn.onnx")).run(None, {"image": images[:6]})
    assert a.shape == (5, 10) and b.shape == (10,)
    np.testing.assert_allclose(np.concatenate([a, b[None]]), expected, rtol=1e-5, atol=1e-6)
    before = (outputs / "a.npy").stat().st_mtime_ns
    assert batch.run_folder(str(exported / "digits.snn.onnx"), inputs, outputs, quiet=True) == []   # rerun: nothing to do
    assert (outputs / "a.npy").stat().st_mtime_ns == before
