"""Models over protobuf's 2 GB limit, with external data. The default suite cannot build 2 GB, so the limit
(runtime.external.EXTERNAL_DATA_BYTES) is lowered: a 3 MB model then takes exactly the large-model code path
end to end (benchmarks/large_model.py runs the real thing, 2.4 GB)."""
import os
import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import GraphBuilder

import converter
from converter.calibrate import ort_session
from converter.load import load_model
from converter.cli import main
from runtime import InferenceSession, SNNFormatError, external, load_snn

LIMIT = 1 << 16   # bytes: the test model (~3 MB) is "large", its skeleton (< 10 kB) is not


def big_model(opset: int = 17) -> onnx.ModelProto:
    """Conv-BN-Relu, Flatten, then Gemm 1024->512->512->10 with Relu: 3.1 MB of weights."""
    b = GraphBuilder(seed=3, opset=opset)
    x = b.relu(b.batchnorm(b.conv("x", 2, 16, pads=[1, 1, 1, 1]), 16))
    x = b.node("Flatten", [b.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    x = b.relu(b.gemm(x, 16 * 8 * 8, 512))
    x = b.relu(b.gemm(x, 512, 512))
    return b.model([("x", ["N", 2, 16, 16])], [b.gemm(x, 512, 10)])


@pytest.fixture
def files(tmp_path):
    model = big_model()
    onnx.save_model(model, tmp_path / "src.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="src.onnx.data", size_threshold=1024)
    assert os.path.getsize(tmp_path / "src.onnx") < 10_000   # the weights really are external
    x = np.random.default_rng(0).random((48, 2, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    return tmp_path, x


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr(external, "EXTERNAL_DATA_BYTES", LIMIT)


def _run_ort(model, x):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_cli_converts_and_runs_a_large_model_with_external_data(files, large, capsys):
    d, x = files
    out, ann = d / "out" / "m.snn.onnx", d / "out" / "m.ann.onnx"
    out.parent.mkdir()
    code = main(["convert", str(d / "src.onnx"), "--calib", str(d / "calib.npy"), "-o", str(out), "--ann-out", str(ann),
                 "--timesteps", "32", "--threshold", "max", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(out.parent)) == ["m.ann.onnx", "m.ann.onnx.data", "m.snn.onnx", "m.snn.onnx.data"]  # no temp files left
    assert os.path.getsize(out) < 20_000 and os.path.getsize(external.data_file(out)) > 3_000_000
    refs = {e.value for t in onnx.load(out, load_external_data=False).graph.initializer for e in t.external_data if e.key == "location"}
    assert refs == {"m.snn.onnx.data"}   # relative to the file's folder: the pair can be moved together

    source = _run_ort(str(d / "src.onnx"), x)
    np.testing.assert_allclose(_run_ort(str(ann), x), source, rtol=1e-5, atol=1e-5)   # 'max' clips nothing seen
    snn = InferenceSession(str(out)).run(None, {"x": x})[0]
    err = np.abs(snn - source).mean() / np.abs(source).mean()
    assert err < 0.1, err

    code = main(["run", str(out), "--input", str(d / "calib.npy"), "--output", str(d / "y.npy"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.load(d / "y.npy"), snn)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0 and "IFNeuron" in capsys.readouterr().out


def test_large_path_gives_the_same_conversion_as_the_single_file_path(files, monkeypatch):
    d, x = files
    small = converter.convert(str(d / "src.onnx"), x, timesteps=8, threshold="p99.9", progress=False)
    monkeypatch.setattr(external, "EXTERNAL_DATA_BYTES", LIMIT)
    large = converter.convert(str(d / "src.onnx"), x, timesteps=8, threshold="p99.9", progress=False)
    assert external.is_large(large.model)
    monkeypatch.setattr(external, "EXTERNAL_DATA_BYTES", 2**31)   # now serialisable, to compare bytes
    assert large.model.SerializeToString() == small.model.SerializeToString()
    assert large.ann_model.SerializeToString() == small.ann_model.SerializeToString()


def test_source_hash_covers_the_external_data(files):
    d, x = files
    first = load_model(str(d / "src.onnx")).sha256
    data = bytearray((d / "src.onnx.data").read_bytes())
    data[-1] ^= 1
    (d / "src.onnx.data").write_bytes(bytes(data))
    assert load_model(str(d / "src.onnx")).sha256 != first


def test_large_in_memory_models_run_in_onnxruntime_and_survive_pickling(large):
    model = big_model()
    x = np.random.default_rng(1).random((4, 2, 16, 16)).astype(np.float32)
    want = _run_ort(model.SerializeToString(), x)
    assert external.is_large(model)
    np.testing.assert_array_equal(ort_session(model).run(None, {"x": x})[0], want)
    source = load_model(model)   # checked, shape-inferred with its weights set aside
    assert [t.name for t in source.model.graph.initializer] == [t.name for t in model.graph.initializer]
    snn = converter.convert(model, x, timesteps=4, threshold="max", progress=False).model
    packed = pickle.loads(pickle.dumps(external.pack(snn)))   # what a Ray worker receives
    assert isinstance(packed, tuple)
    np.testing.assert_array_equal(InferenceSession(external.unpack(packed)).run(None, {"x": x})[0],
                                  InferenceSession(snn).run(None, {"x": x})[0])


def test_snn_external_data_is_confined_to_its_folder(files, large, tmp_path):
    d, x = files
    out = d / "m.snn.onnx"
    converter.convert(str(d / "src.onnx"), x, timesteps=4, threshold="max", progress=False).save(out)
    model = onnx.load(out, load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../m.snn.onnx.data"
    (d / "escape.snn.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(SNNFormatError, match="points outside the model's folder"):
        load_snn(str(d / "escape.snn.onnx"))
    with pytest.raises(SNNFormatError, match="give the file's path"):
        load_snn(out.read_bytes())
    os.remove(external.data_file(out))
    with pytest.raises(SNNFormatError, match="not found next to the model"):
        load_snn(str(out))


def test_a_failed_large_write_leaves_the_previous_output_and_no_temporary_file(files, large):
    d, x = files
    snn = converter.convert(str(d / "src.onnx"), x, timesteps=4, threshold="max", progress=False)
    out = d / "out" / "m.snn.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    os.mkdir(external.data_file(out))   # the data file cannot be renamed into place
    with pytest.raises(OSError):
        snn.save(out)
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(out.parent)) == ["m.snn.onnx", "m.snn.onnx.data"]


def test_a_small_model_written_over_a_large_one_removes_its_data_file(files, monkeypatch):
    d, x = files
    snn = converter.convert(str(d / "src.onnx"), x, timesteps=4, threshold="max", progress=False)
    out = d / "m.snn.onnx"
    monkeypatch.setattr(external, "EXTERNAL_DATA_BYTES", LIMIT)
    snn.save(out)
    assert os.path.isfile(external.data_file(out))
    monkeypatch.setattr(external, "EXTERNAL_DATA_BYTES", 2**31)
    snn.save(out)
    assert not os.path.exists(external.data_file(out))
    np.testing.assert_array_equal(InferenceSession(str(out)).run(None, {"x": x[:4]})[0], InferenceSession(snn.model).run(None, {"x": x[:4]})[0])


def test_an_old_opset_large_model_is_upgraded_with_its_weights_put_back(large):
    model = big_model(opset=11)
    x = np.random.default_rng(2).random((4, 2, 16, 16)).astype(np.float32)
    source = load_model(model)
    assert source.opset == 13 and external.is_large(source.model)
    assert sorted(t.name for t in source.model.graph.initializer) == sorted(t.name for t in model.graph.initializer)
    assert [i.name for i in source.model.graph.input] == ["x"]
    np.testing.assert_array_equal(ort_session(source.model).run(None, {"x": x})[0], _run_ort(model.SerializeToString(), x))
