"""The command line: a full round trip, and bad input giving exit code 2, one 'error:' line, no output file."""
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import GraphBuilder, cnn

from converter.cli import main


@pytest.fixture
def files(tmp_path):
    model = cnn()
    onnx.save(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    x = rng.random((40, 2, 12, 12)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    np.savez(tmp_path / "eval.npz", x=x[:20], y=rng.integers(0, 4, 20))
    return tmp_path


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip(files, capsys):
    d = files
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "m.snn.onnx", "--timesteps", 16,
                             "--threshold", "p99.9", "--ann-out", d / "m.clipped.onnx", "--report", d / "report.json")
    assert code == 0, err
    assert "threshold ReLU -> IFNeuron" in out and "wrote" in out
    report = json.loads((d / "report.json").read_text())
    assert len(report["layers"]) == 4 and report["settings"]["timesteps"] == 16
    onnx.checker.check_model(onnx.load(d / "m.clipped.onnx"))

    code, out, err = run_cli(capsys, "run", d / "m.snn.onnx", "--input", d / "calib.npy", "--output", d / "y.npy",
                             "--stats", d / "stats.json", "--threads", 1)
    assert code == 0, err
    assert np.load(d / "y.npy").shape == (40, 4)
    stats = json.loads((d / "stats.json").read_text())
    assert stats["timesteps"] == 16 and len(stats["layers"]) == 4 and "SynOps" in out

    code, out, err = run_cli(capsys, "inspect", d / "m.snn.onnx")
    assert code == 0 and "IFNeuron" in out and "threshold_method=p99.9" in out
    code, out, err = run_cli(capsys, "inspect", d / "model.onnx", "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "ann" and info["policies"]["BatchNormalization"]["policy"] == "fold"

    code, out, err = run_cli(capsys, "evaluate", d / "model.onnx", "--calib", d / "calib.npy", "--data", d / "eval.npz",
                             "--timesteps", "4,16", "--json", d / "results.json", "--plot", d / "acc.png", "--quiet")
    assert code == 0, err
    results = json.loads((d / "results.json").read_text())
    assert [r["timesteps"] for r in results["rows"]] == [4, 16]
    assert (d / "acc.png").read_bytes()[:4] == b"\x89PNG"
    assert out == ""  # --quiet


def _bad_model(path):
    b = GraphBuilder(0)
    y = b.gemm(b.relu(b.node("Sigmoid", [b.gemm("x", 24, 8)])), 8, 3)
    onnx.save(b.model([("x", ["N", 24])], [y]), path)


BAD = {
    "missing model": (lambda d: ["convert", d / "nope.onnx", "--calib", d / "calib.npy", "-o", d / "out.onnx"], "nope.onnx: no such file"),
    "not onnx": (lambda d: (d.joinpath("junk.onnx").write_bytes(b"not a model"),
                            ["convert", d / "junk.onnx", "--calib", d / "calib.npy", "-o", d / "out.onnx"])[1], "junk.onnx: not an ONNX model"),
    "empty file": (lambda d: (d.joinpath("empty.onnx").write_bytes(b""),
                              ["convert", d / "empty.onnx", "--calib", d / "calib.npy", "-o", d / "out.onnx"])[1], "file is empty"),
    "calibration shape": (lambda d: (np.save(d / "wrong.npy", np.zeros((5, 3, 12, 12), np.float32)),
                                     ["convert", d / "model.onnx", "--calib", d / "wrong.npy", "-o", d / "out.onnx"])[1], "expected shape"),
    "unsupported op": (lambda d: (_bad_model(d / "sig.onnx"), np.save(d / "c24.npy", np.zeros((4, 24), np.float32)),
                                  ["convert", d / "sig.onnx", "--calib", d / "c24.npy", "-o", d / "out.onnx"])[2], "op Sigmoid"),
    "pickled calibration": (lambda d: (np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
                                       ["convert", d / "model.onnx", "--calib", d / "obj.npy", "-o", d / "out.onnx"])[1], "pickled"),
    "bad timesteps": (lambda d: ["convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "out.onnx", "--timesteps", "0"],
                      "expected a positive integer"),
    "bad threshold": (lambda d: ["convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "out.onnx", "--threshold", "p200"],
                      "threshold method 'p200'"),
    "run a plain ANN": (lambda d: ["run", d / "model.onnx", "--input", d / "calib.npy", "--output", d / "out.onnx"],
                        "not an onnx2snn SNN file"),
    "labels out of range": (lambda d: (np.savez(d / "bad.npz", x=np.zeros((3, 2, 12, 12), np.float32), y=np.array([0, 1, 9])),
                                       ["evaluate", d / "model.onnx", "--calib", d / "calib.npy", "--data", d / "bad.npz", "--json", d / "out.onnx"])[1],
                            "labels must lie in [0, 4)"),
}


def test_readout_by_spikes_from_the_command_line(files, capsys):
    d = files
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "s.snn.onnx", "--timesteps", 8,
                             "--threshold", "max", "--readout", "spikes", "--report", d / "report.json")
    assert code == 0, err
    model = onnx.load(d / "s.snn.onnx")
    assert model.graph.node[-1].op_type == "IFNeuron"
    report = json.loads((d / "report.json").read_text())
    assert len(report["layers"]) == 5 and any(n.startswith("readout by output spikes") for n in report["notes"])
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "t.snn.onnx", "--readout", "count")
    assert code == 2 and "--readout" in err and not (d / "t.snn.onnx").exists()


def test_burst_spikes_from_the_command_line(files, capsys):
    """--burst 3 writes burst neurons that run and are inspected as such; a burst with a threshold method that does
    not search V_th for it is refused before anything is written."""
    d = files
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "b.snn.onnx", "--timesteps", 2,
                             "--burst", 3)
    assert code == 0, err
    neurons = [n for n in onnx.load(d / "b.snn.onnx").graph.node if n.op_type == "IFNeuron"]
    assert neurons and all(any(a.name == "burst" and a.i == 3 for a in n.attribute) for n in neurons)
    np.save(d / "x.npy", np.load(d / "calib.npy")[:5])
    code, out, err = run_cli(capsys, "run", d / "b.snn.onnx", "--input", d / "x.npy", "--output", d / "y.npy")
    assert code == 0, err
    code, out, err = run_cli(capsys, "inspect", d / "b.snn.onnx")
    assert code == 0 and ", burst 3" in out
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "m.snn.onnx",
                             "--burst", 3, "--threshold", "max")
    assert code == 2 and err.startswith("error: burst 3 needs threshold 'optimal'") and not (d / "m.snn.onnx").exists()
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "m.snn.onnx", "--burst", 0)
    assert code == 2 and "--burst" in err and not (d / "m.snn.onnx").exists()


def test_signed_spikes_from_the_command_line(files, capsys):
    """--spikes signed writes signed neurons that run; auto lets the selection choose (its note says which);
    signed with the zero reset is refused before anything is written."""
    d = files
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "s.snn.onnx", "--timesteps", 4,
                             "--spikes", "signed")
    assert code == 0, err
    neurons = [n for n in onnx.load(d / "s.snn.onnx").graph.node if n.op_type == "IFNeuron"]
    assert neurons and all(any(a.name == "signed" and a.i == 1 for a in n.attribute) for n in neurons)
    np.save(d / "x.npy", np.load(d / "calib.npy")[:5])
    code, out, err = run_cli(capsys, "run", d / "s.snn.onnx", "--input", d / "x.npy", "--output", d / "y.npy")
    assert code == 0, err
    code, out, err = run_cli(capsys, "inspect", d / "s.snn.onnx")
    assert code == 0 and ", signed" in out
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "a.snn.onnx", "--timesteps", 4,
                             "--spikes", "auto", "--report", d / "report.json")
    assert code == 0, err
    notes = json.loads((d / "report.json").read_text())["notes"]
    assert any("signed, v_init half bias on" in n for n in notes)
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "z.snn.onnx",
                             "--spikes", "signed", "--reset", "zero")
    assert code == 2 and err.strip() == "error: signed spikes need reset 'subtract', got reset 'zero'" and not (d / "z.snn.onnx").exists()
    code, out, err = run_cli(capsys, "convert", d / "model.onnx", "--calib", d / "calib.npy", "-o", d / "z.snn.onnx",
                             "--spikes", "auto", "--threshold", "max")
    assert code == 2 and "--spikes auto" in err and "'max'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_error_line(files, capsys, case):
    make, message = BAD[case]
    code, out, err = run_cli(capsys, *make(files))
    last = err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith("error:") and message in last, last
    assert "Traceback" not in err
    assert not (files / "out.onnx").exists()


def test_installed_command_exit_codes(files):
    exe = shutil.which("onnx2snn") or pytest.skip("onnx2snn is not installed on PATH")
    p = subprocess.run([exe, "convert", str(files / "missing.onnx"), "--calib", str(files / "calib.npy"), "-o", str(files / "o.onnx")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:")
    p = subprocess.run([sys.executable, "-m", "converter", "inspect", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "inspect" in p.stdout


def test_existing_output_survives_a_failed_conversion(files, capsys):
    target = files / "keep.snn.onnx"
    target.write_bytes(b"previous")
    np.save(files / "nan.npy", np.full((4, 2, 12, 12), np.nan, np.float32))
    code, _, err = run_cli(capsys, "convert", files / "model.onnx", "--calib", files / "nan.npy", "-o", target)
    assert code == 2 and "NaN" in err
    assert target.read_bytes() == b"previous"
    assert [p.name for p in files.iterdir() if p.name.startswith(".keep")] == []


def test_serve_without_the_serve_extra_names_it(tmp_path, capsys, monkeypatch):
    """`onnx2snn serve` needs the [serve] extra; without it (here: fastapi made unimportable when it is installed)
    it exits 2 naming the extra, and `import runtime.serving` still works."""
    import importlib.util
    if importlib.util.find_spec("fastapi") is not None:
        monkeypatch.setitem(sys.modules, "fastapi", None)
    import runtime.serving  # noqa: F401 - lazy: imports none of the stack
    code, out, err = run_cli(capsys, "serve", tmp_path / "model.snn.onnx")
    assert code == 2 and err.startswith("error: serving needs fastapi") and err.strip().endswith('pip install "onnx2snn[serve]"'), err
    assert len(err.strip().splitlines()) == 1
