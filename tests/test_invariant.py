"""The converter's invariant on graphs in real exporters' idioms (tests/graph_gen.py, checked by tests/invariant.py):
whatever ``convert`` accepts runs in the runtime on inputs of the declared shape and approaches the
threshold-ReLU ANN as T grows; everything else is refused naming the node. Seeds 0..GRAPHS-1 here, thousands
more in benchmarks/fuzz.py. The two graph families of issue #16 go through the CLI as a user would run them."""
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
from graph_gen import FAMILIES, generate
from invariant import check
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

GRAPHS = 200


@pytest.mark.parametrize("seed", range(GRAPHS))
def test_generated_graph_converts_and_runs_or_is_refused(seed):
    optimal, signed = seed % 4 == 0, seed // 4 % 2 == 1  # half with signed spikes; a quarter also optimal
    check(generate(seed), seed, optimal=optimal, signed=signed, burst=3 if optimal and not signed and seed % 16 == 0 else 1)


def test_the_generator_covers_every_family_idiom_and_refusal():
    """What the default run covers: every family, the exporters' idioms, and graphs that must be refused."""
    cases = [generate(seed) for seed in range(GRAPHS)]
    assert Counter(c.family for c in cases) == {f: GRAPHS // len(FAMILIES) for f in FAMILIES}
    idioms = Counter(i for c in cases for i in c.idioms)
    for idiom in ("Gemm without bias", "MatMul + Add", "view(size(0), -1) shape subgraph", "Sub/Div normalisation",
                  "Conv without bias + BatchNormalization", "NHWC input + Transpose", "Pad node", "auto_pad SAME_UPPER",
                  "ReduceMean as global pooling", "ZipMap output", "label output (ArgMax -> ArrayFeatureExtractor)",
                  "Concat of branches", "residual Add", "residual Add with projection", "depthwise Conv", "grouped Conv",
                  "dilated Conv", "ReLU6 as Clip", "MaxPool", "AveragePool", "Softmax output", "batch-1 Reshape"):
        assert idioms[idiom] >= 2, idiom
    assert sum(c.refuse is not None for c in cases) >= 15
    assert {c.opset for c in cases} >= set(range(9, 22))


def _issue_16_models(tmp_path):
    """The two graph families issue #16 found, built independently of graph_gen."""
    rng = np.random.default_rng(0)
    w = lambda name, *shape: nh.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    ints = lambda name, v: nh.from_array(np.array(v, np.int64), name)

    def save(name, nodes, inits):
        graph = h.make_graph(nodes, name, [h.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 8, 8])],
                             [h.make_tensor_value_info("y", TP.FLOAT, ["N", 10])], inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, tmp_path / f"{name}.onnx")
        return tmp_path / f"{name}.onnx"

    bias_less = save("biasless_head", [
        h.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["a"], ["ar"]),
        h.make_node("Pad", ["x", "pads"], ["xp"]), h.make_node("Conv", ["xp", "wb", "bb"], ["b"], dilations=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["b"], ["br"]), h.make_node("Concat", ["ar", "br"], ["cc"], axis=1),
        h.make_node("ReduceMean", ["cc"], ["rm"], axes=[2, 3], keepdims=0), h.make_node("Gemm", ["rm", "w2"], ["y"], transB=1)],
        [w("wa", 4, 3, 3, 3), w("ba", 4), w("wb", 4, 3, 3, 3), w("bb", 4),
         ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]), w("w2", 10, 8)])
    dynamo = save("dynamo_residual", [
        h.make_node("Sub", ["x", "mean"], ["s"]), h.make_node("Div", ["s", "std"], ["d"]),
        h.make_node("Conv", ["d", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), h.make_node("Add", ["c2", "r1"], ["a"]),
        h.make_node("Relu", ["a"], ["r2"]), h.make_node("Shape", ["r2"], ["sh"]), h.make_node("Gather", ["sh", "idx"], ["n"], axis=0),
        h.make_node("Unsqueeze", ["n", "zero"], ["nu"]), h.make_node("Concat", ["nu", "m1"], ["shape"], axis=0),
        h.make_node("Reshape", ["r2", "shape"], ["fl"]), h.make_node("Gemm", ["fl", "w3", "b3"], ["y"], transB=1)],
        [nh.from_array(np.array(0.5, np.float32), "mean"), nh.from_array(np.array(0.25, np.float32), "std"),
         w("w1", 4, 3, 3, 3), w("b1", 4), w("w2", 4, 4, 3, 3), w("b2", 4),
         ints("zero", [0]), ints("m1", [-1]), ints("idx", 0),
         w("w3", 10, 256), w("b3", 10)])
    return bias_less, dynamo


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "converter", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("family", ["biasless_head", "dynamo_residual"])
def test_issue_16_graphs_convert_and_run_through_the_cli_without_warnings(tmp_path, family):
    models = dict(zip(["biasless_head", "dynamo_residual"], _issue_16_models(tmp_path)))
    x = np.random.default_rng(1).random((64, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    snn, ann = tmp_path / "m.snn.onnx", tmp_path / "m.clipped.onnx"
    done = _cli("convert", models[family], "--calib", tmp_path / "x.npy", "-o", snn, "--ann-out", ann, "--timesteps", 8, "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr   # no onnxruntime warnings, nothing at all
    done = _cli("run", snn, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--timesteps", 64, "--quiet")
    assert done.returncode == 0, done.stderr
    import onnxruntime as ort
    want = ort.InferenceSession(str(ann), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = np.load(tmp_path / "y.npy")
    assert got.shape == want.shape == (64, 10)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9


def test_a_refused_generated_graph_exits_2_naming_the_node(tmp_path):
    case = next(c for c in map(generate, range(GRAPHS)) if c.refuse and c.family != "skl2onnx")
    onnx.save(case.model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **case.feeds)
    done = _cli("convert", tmp_path / "m.onnx", "--calib", tmp_path / "calib.npz", "-o", tmp_path / "m.snn.onnx", "--quiet")
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and f"node '{case.refuse}'" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "m.snn.onnx").exists()
