"""The SNN file format: written files pass onnx's checker and our reader; broken ones are refused clearly."""
import numpy as np
import onnx
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

import converter
from runtime import InferenceSession, SNNFormatError
from runtime import format as fmt


@pytest.fixture(scope="module")
def snn_model():
    from conftest import mlp
    x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    return converter.convert(mlp(), x, timesteps=16, threshold="max", progress=False).model


def test_written_file_is_valid_onnx_with_our_domain(snn_model, tmp_path):
    onnx.checker.check_model(snn_model, full_check=True, check_custom_domain=True)
    assert {o.domain: o.version for o in snn_model.opset_import}[fmt.DOMAIN] == fmt.DOMAIN_VERSION
    meta = fmt.metadata(snn_model)
    assert meta[fmt.META_FORMAT_VERSION] == "1" and meta[fmt.META_TIMESTEPS] == "16"
    assert meta[fmt.META_INPUT_ENCODING] == "analog" and meta[fmt.META_THRESHOLD_METHOD] == "max"
    assert len(meta[fmt.META_SOURCE_SHA256]) == 64
    neurons = [n for n in snn_model.graph.node if n.domain == fmt.DOMAIN]
    assert len(neurons) == 2 and all(n.op_type == "IFNeuron" for n in neurons)
    for n in neurons:
        p = fmt.neuron_params(n)
        assert p.reset == "subtract" and p.v_th[0] > 0 and p.shift[0] == pytest.approx(p.v_th[0] / 32)
    path = tmp_path / "m.snn.onnx"
    onnx.save(snn_model, path)
    assert fmt.load_snn(path).graph == snn_model.graph


def test_reader_fills_defaults_for_absent_optional_attributes(snn_model):
    model = onnx.ModelProto()
    model.CopyFrom(snn_model)
    node = next(n for n in model.graph.node if n.domain == fmt.DOMAIN)
    keep = [a for a in node.attribute if a.name == "v_th"]
    del node.attribute[:]
    node.attribute.extend(keep)
    p = fmt.neuron_params(node)
    assert (p.shift[0], p.v_init[0], p.reset) == (0.0, 0.0, "subtract")
    InferenceSession(model)  # still valid


def test_per_channel_tensor_attributes_are_read_and_run(snn_model):
    model = _edited(snn_model, lambda m: None)
    node = next(n for n in model.graph.node if n.domain == fmt.DOMAIN)
    channels = 32  # the first hidden layer's width
    v_th = fmt.neuron_params(node).v_th[0] * np.linspace(0.5, 1.5, channels).astype(np.float32)
    for a in list(node.attribute):
        if a.name == "v_th":
            node.attribute.remove(a)
    node.attribute.append(h.make_attribute("v_th", nh.from_array(v_th.astype(np.float32))))
    p = fmt.neuron_params(node)
    assert p.v_th.tolist() == pytest.approx(v_th.tolist()) and p.channels == channels
    x = np.random.default_rng(1).random((8, 12)).astype(np.float32)
    for engine, precision in (("auto", "float64"), ("event", "float32")):  # each equals its reference bit for bit
        fast = InferenceSession(model, engine=engine, precision=precision).run(None, {"x": x}, timesteps=8)[0]
        ref = InferenceSession(model, engine="reference", precision=precision).run(None, {"x": x}, timesteps=8)[0]
        np.testing.assert_array_equal(fast, ref)


def _edited(model, mutate):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    mutate(m)
    return m


def _set_attr(name, value):
    def mutate(m):
        node = next(n for n in m.graph.node if n.domain == fmt.DOMAIN)
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(h.make_attribute(name, value))
    return mutate


def _set_meta(key, value):
    def mutate(m):
        for p in list(m.metadata_props):
            if p.key == key:
                m.metadata_props.remove(p)
        if value is not None:
            m.metadata_props.add(key=key, value=value)
    return mutate


BROKEN = {
    "v_th zero": (_set_attr("v_th", 0.0), "v_th must be > 0"),
    "v_th negative": (_set_attr("v_th", -1.0), "v_th must be > 0"),
    "v_th NaN": (_set_attr("v_th", float("nan")), "NaN"),
    "shift inf": (_set_attr("shift", float("inf")), "NaN or Inf"),
    "unknown reset": (_set_attr("reset", "sometimes"), "reset must be one of"),
    "unknown attribute": (_set_attr("leak", 0.5), "unknown attribute 'leak'"),
    "string threshold": (_set_attr("v_th", "high"), "must be a float"),
    "integer threshold": (_set_attr("v_th", 2), "must be a float"),
    "signed not a flag": (_set_attr("signed", 2), "signed must be the integer 0 or 1"),
    "signed as a float": (_set_attr("signed", 1.0), "signed must be the integer 0 or 1"),
    "signed with zero reset": (lambda m: (_set_attr("reset", "zero")(m), _set_attr("signed", 1)(m)), "signed spikes need reset 'subtract'"),
    "burst zero": (_set_attr("burst", 0), "burst must be an integer from 1 to 64"),
    "burst too large": (_set_attr("burst", 65), "burst must be an integer from 1 to 64"),
    "burst as a float": (_set_attr("burst", 2.0), "burst must be an integer from 1 to 64"),
    "burst with zero reset": (lambda m: (_set_attr("reset", "zero")(m), _set_attr("burst", 2)(m)), "burst spikes need reset 'subtract'"),
    "burst with signed": (lambda m: (_set_attr("signed", 1)(m), _set_attr("burst", 2)(m)), "burst spikes need reset 'subtract' and signed 0"),
    "no version": (_set_meta(fmt.META_FORMAT_VERSION, None), "not an onnx2snn SNN file"),
    "future version": (_set_meta(fmt.META_FORMAT_VERSION, "99"), "version '99' is not supported"),
    "bad timesteps": (_set_meta(fmt.META_TIMESTEPS, "-3"), "positive integer"),
    "unknown encoding": (_set_meta(fmt.META_INPUT_ENCODING, "poisson"), "input encoding 'poisson'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_reader_refuses_broken_files(snn_model, case):
    mutate, message = BROKEN[case]
    with pytest.raises(SNNFormatError, match=message.replace("(", r"\(")):
        InferenceSession(_edited(snn_model, mutate))


def test_reader_refuses_corrupt_tensor_attributes(snn_model):
    """Found by benchmarks/fuzz.py (byte seed 6767): a tensor attribute with an unknown data type."""
    def corrupt(m):
        node = next(n for n in m.graph.node if n.domain == fmt.DOMAIN)
        tensor = nh.from_array(np.ones(3, np.float32), "v")
        tensor.data_type = 33
        node.attribute.append(h.make_attribute("v_init", tensor))
    with pytest.raises(SNNFormatError, match="attribute v_init is not a readable tensor"):
        InferenceSession(_edited(snn_model, corrupt))
    with pytest.raises(SNNFormatError, match="must hold floats"):
        InferenceSession(_edited(snn_model, _set_attr("v_th", nh.from_array(np.ones(2, np.int64)))))


def test_reader_refuses_non_onnx_bytes(tmp_path):
    path = tmp_path / "junk.snn.onnx"
    path.write_bytes(b"\x00\x01 definitely not protobuf")
    with pytest.raises(SNNFormatError, match="junk.snn.onnx"):
        InferenceSession(str(path))
    with pytest.raises(SNNFormatError, match="no such file"):
        InferenceSession(str(tmp_path / "missing.snn.onnx"))
