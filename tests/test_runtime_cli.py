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
