"""`onnx2snn run` with the runtime's options: --engine, --early-stop, and the stats it prints and writes."""
import json

import numpy as np
import pytest
from conftest import cnn
from test_engines import converted

from converter.cli import main


@pytest.fixture
def snn_file(tmp_path):
    snn, x = converted(cnn(), (2, 12, 12))
    import onnx
    onnx.save(snn, tmp_path / "m.snn.onnx")
    np.save(tmp_path / "x.npy", x)
    return tmp_path


@pytest.mark.parametrize("engine", ["auto", "event", "dense"])
def test_run_engine_early_stop_and_stats(snn_file, capsys, engine):
    stats = snn_file / "stats.json"
    code = main(["run", str(snn_file / "m.snn.onnx"), "--input", str(snn_file / "x.npy"), "--timesteps", "16",
                 "--engine", engine, "--early-stop", "4", "--stats", str(stats)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "dense MACs" in out and "steps used" in out and "estimate" in out
    written = json.loads(stats.read_text())
    assert written["steps_used"] <= 16 and written["total_dense_macs"] >= written["total_synops"]


def test_run_refuses_a_bad_early_stop(snn_file, capsys):
    code = main(["run", str(snn_file / "m.snn.onnx"), "--input", str(snn_file / "x.npy"), "--early-stop", "0"])
    assert code == 2 and "early-stop" in capsys.readouterr().err


@pytest.mark.parametrize("engine, precision", [("auto", "float64"), ("event", "float32")])
def test_run_precision_matches_the_reference_of_that_precision(snn_file, capsys, engine, precision):
    """--precision float64 is the exact engine (equals the float64 reference); float32's event path equals the
    float32 oracle (the reference engine with --precision float32); the stats say which ran."""
    outputs = {}
    for name, eng in (("fast", engine), ("reference", "reference")):
        y, stats = snn_file / f"{name}.npy", snn_file / f"{name}.json"
        code = main(["run", str(snn_file / "m.snn.onnx"), "--input", str(snn_file / "x.npy"), "--timesteps", "8", "--engine", eng,
                     "--precision", precision, "--output", str(y), "--stats", str(stats), "-q"])
        assert code == 0, capsys.readouterr().err
        outputs[name] = np.load(y)
        if eng != "reference":
            assert json.loads(stats.read_text())["precision"] == precision
    np.testing.assert_array_equal(outputs["fast"], outputs["reference"])
    assert main(["run", str(snn_file / "m.snn.onnx"), "--input", str(snn_file / "x.npy"), "--precision", "float16"]) == 2
    assert "--precision" in capsys.readouterr().err
