"""Bad input of every class gets a clean refusal; interrupted runs leave nothing half-written; sessions are
safe to share between threads and give the same bits every time."""
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest
from conftest import cnn, mlp
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

import converter
from converter import ModelLoadError, Onnx2SnnError, UnsupportedOpError
from converter.cli import main
from runtime import InferenceSession


def _edit(model, fn):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    fn(m)
    return m.SerializeToString()


def _external(m):
    t = m.graph.initializer[0]
    t.data_location = TP.EXTERNAL
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.external_data.add(key="location", value="../../etc/passwd")


def _dims(m, dims):
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend(dims)


GOOD = mlp()
BAD_MODELS = {
    "empty": (lambda: b"", "file is empty"),
    "truncated": (lambda: GOOD.SerializeToString()[:200], "not an ONNX model"),
    "random bytes": (lambda: np.random.default_rng(0).bytes(3000), "not an ONNX model"),
    "a tensor, not a model": (lambda: nh.from_array(np.zeros(3, np.float32)).SerializeToString(), "no graph nodes"),
    "cycle": (lambda: _edit(GOOD, lambda m: m.graph.node[0].input.__setitem__(0, m.graph.node[-1].output[0])), "topologically sorted"),
    "dangling input": (lambda: _edit(GOOD, lambda m: m.graph.node[2].input.__setitem__(0, "nowhere")), "input 'nowhere'"),
    "missing initializer": (lambda: _edit(GOOD, lambda m: m.graph.initializer.remove(m.graph.initializer[0])), "fails onnx.checker"),
    "mismatched shapes": (lambda: _edit(GOOD, lambda m: m.graph.initializer[0].CopyFrom(
        nh.from_array(np.zeros((32, 7), np.float32), m.graph.initializer[0].name))), "inconsistent shapes"),
    "unknown op domain": (lambda: _edit(GOOD, lambda m: (setattr(m.graph.node[1], "domain", "com.example"),
                                                         m.opset_import.append(h.make_opsetid("com.example", 1)))), "op com.example.Relu"),
    "undeclared domain": (lambda: _edit(GOOD, lambda m: setattr(m.graph.node[1], "domain", "com.nowhere")), "No opset import"),
    "huge declared dims": (lambda: _edit(GOOD, lambda m: _dims(m, [10**6, 10**6])), "too small for the declared shape"),
    "huge input dim": (lambda: _edit(GOOD, lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[1], "dim_value", 10**12)),
                       "inconsistent shapes"),
    "external data escaping": (lambda: _edit(GOOD, _external), "points outside the model's folder"),
    "future opset": (lambda: _edit(GOOD, lambda m: setattr(m.opset_import[0], "version", 99)), "opset 99 is newer"),
    "future IR": (lambda: _edit(GOOD, lambda m: setattr(m, "ir_version", 99)), "ir_version 99"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_files_are_refused_by_api_and_cli(case, tmp_path, capsys):
    make, message = BAD_MODELS[case]
    path = tmp_path / "model.onnx"
    path.write_bytes(make())
    x = np.random.default_rng(0).random((4, 12)).astype(np.float32)
    with pytest.raises(Onnx2SnnError, match=message):
        converter.convert(str(path), x, progress=False)
    np.save(tmp_path / "x.npy", x)
    code = main(["convert", str(path), "--calib", str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.snn.onnx"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "out.snn.onnx").exists()


def test_unknown_domain_error_type():
    with pytest.raises(UnsupportedOpError):
        converter.convert(BAD_MODELS["unknown op domain"][0](), np.zeros((2, 12), np.float32), progress=False)
    with pytest.raises(ModelLoadError):
        converter.convert(b"", np.zeros((2, 12), np.float32), progress=False)


def test_sigterm_leaves_the_previous_output_intact(tmp_path):
    model = converter.convert(cnn(), np.random.default_rng(0).random((16, 2, 12, 12)).astype(np.float32), progress=False)
    model.save(tmp_path / "m.snn.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((3000, 2, 12, 12)).astype(np.float32))
    (tmp_path / "y.npy").write_bytes(b"previous")
    proc = subprocess.Popen([sys.executable, "-m", "converter", "run", str(tmp_path / "m.snn.onnx"), "--input", str(tmp_path / "x.npy"),
                             "--timesteps", "2000", "--output", str(tmp_path / "y.npy"), "-q"], stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    assert (tmp_path / "y.npy").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_one_session_shared_by_threads_gives_identical_results():
    x = np.random.default_rng(0).random((24, 2, 12, 12)).astype(np.float32)
    sess = InferenceSession(converter.convert(cnn(), x, timesteps=8, progress=False).model)
    expected = sess.run(None, {"x": x})[0]
    results, errors = [None] * 4, []

    def worker(i):
        try:
            results[i] = sess.run(None, {"x": x})[0]
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_repeated_runs_are_bit_identical():
    x = np.random.default_rng(0).random((10, 2, 12, 12)).astype(np.float32)
    model = converter.convert(cnn(), x, timesteps=8, progress=False).model
    first = InferenceSession(model).run(None, {"x": x})[0]
    again = InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(first, again)


def _bn_model(var):
    from conftest import GraphBuilder
    b = GraphBuilder(0)
    x = b.conv("x", 2, 3, pads=[1, 1, 1, 1])
    names = [b.const(np.ones(3, np.float32)), b.const(np.zeros(3, np.float32)), b.const(np.zeros(3, np.float32)), b.const(var)]
    y = b.gemm(b.node("Flatten", [b.relu(b.node("BatchNormalization", [x] + names))]), 3 * 4 * 4, 2)
    return b.model([("x", ["N", 2, 4, 4])], [y])


def test_fuzz_findings_stay_fixed(tmp_path):
    """Found by benchmarks/fuzz.py --fields (seeds 206, 339, 1569 and a BatchNorm with negative variance)."""
    x = np.random.default_rng(0).random((4, 2, 4, 4)).astype(np.float32)
    with pytest.raises(converter.ConversionError, match="negative variance"):
        converter.convert(_bn_model(np.array([1.0, -2.0, 1.0], np.float32)), x, progress=False)
    bad = _bn_model(np.ones(3, np.float32))
    init = bad.graph.initializer[0]
    del init.dims[:]
    init.dims.extend([1])  # holds more values than its dims declare
    with pytest.raises(ModelLoadError, match="initializer 'c0' cannot be read"):
        converter.convert(bad.SerializeToString(), x, progress=False)
    snn = converter.convert(cnn(), np.random.default_rng(0).random((8, 2, 12, 12)).astype(np.float32), progress=False).model
    edited = onnx.ModelProto()
    edited.CopyFrom(snn)
    edited.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 8  # the first Conv's weights expect 2 channels
    from runtime import SNNFormatError
    with pytest.raises(SNNFormatError, match="node .Conv_1.: Conv of 8 input channels with weights \\[6, 2, 3, 3\\]"):
        InferenceSession(edited).run(None, {"x": np.zeros((1, 8, 12, 12), np.float32)})
