"""A source model over protobuf's 2 GB limit, end to end through the CLI: build it with external data, convert it
with ``onnx2snn convert`` and run it with ``onnx2snn run`` (each a subprocess, timed, its peak RSS measured),
compare the SNN with onnxruntime on the source, then delete every file.

The model is a Gemm-Relu stack on a flat input: ``--layers`` square Gemms of ``--width`` (float32 weights, written
straight to the data file one layer at a time, so building it needs one layer's memory), then a Gemm to 10
classes. The default, 9 x 8192^2, holds 2.42 GB of weights. Usage (about 10 min on 2 cores):

    python benchmarks/large_model.py [--layers 9] [--width 8192] [--threshold p99.9] [--timesteps 16] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

CLASSES = 10


def build(folder: str, layers: int, width: int, seed: int = 0) -> str:
    """Write model.onnx + model.onnx.data (every Gemm weight external) and return the model's path."""
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "model.onnx")
    nodes, inits, x = [], [], "x"
    with open(path + ".data", "wb") as data:
        for i in range(layers + 1):
            n_out = width if i < layers else CLASSES
            w = (rng.standard_normal((n_out, width), np.float32) * np.float32(np.sqrt(2.0 / width)))
            ref = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=w.shape, data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "model.onnx.data"), ("offset", str(data.tell())), ("length", str(w.nbytes))):
                ref.external_data.add(key=key, value=value)
            data.write(w.tobytes())
            del w
            inits += [ref, numpy_helper.from_array((rng.standard_normal(n_out) * 0.01).astype(np.float32), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}", transB=1))
            x = f"g{i}"
            if i < layers:
                nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
                x = f"r{i}"
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def timed(cmd: list[str]) -> dict:
    """Run a command; its wall time and peak resident memory (from wait4, this child only)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {code}")
    return {"command": " ".join(cmd), "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2)}


def sizes(folder: str) -> dict:
    return {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--threshold", default="p99.9", help="threshold method passed to onnx2snn convert (default %(default)s)")
    parser.add_argument("--timesteps", type=int, default=16)
    parser.add_argument("--samples", type=int, default=64, help="calibration samples; the first 8 are run")
    parser.add_argument("--dir", default=None, help="where the temporary folder goes (default: the system's); it is always deleted")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="onnx2snn-large-", dir=args.dir) as folder:
        start = time.perf_counter()
        model = build(folder, args.layers, args.width)
        build_s = time.perf_counter() - start
        x = np.random.default_rng(1).random((args.samples, args.width), np.float32)
        np.save(os.path.join(folder, "calib.npy"), x)
        np.save(os.path.join(folder, "input.npy"), x[:8])
        snn = os.path.join(folder, "model.snn.onnx")
        cli = [os.path.join(os.path.dirname(sys.executable), "onnx2snn")]
        convert = timed(cli + ["convert", model, "--calib", os.path.join(folder, "calib.npy"), "-o", snn, "--timesteps", str(args.timesteps),
                               "--threshold", args.threshold, "--ann-out", os.path.join(folder, "model.ann.onnx"), "--quiet"])
        run = timed(cli + ["run", snn, "--input", os.path.join(folder, "input.npy"), "--output", os.path.join(folder, "y.npy"), "--quiet"])
        files = sizes(folder)
        got = np.load(os.path.join(folder, "y.npy"))
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x[:8]})[0]
        ann = ort.InferenceSession(os.path.join(folder, "model.ann.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x[:8]})[0]
        weights = sum(v for k, v in files.items() if k == "model.onnx.data")
        result = {
            "layers": args.layers, "width": args.width, "weights_gb": round(weights / 1e9, 3), "over_2gib": weights > 2**31,
            "build_s": round(build_s, 1), "threshold": args.threshold, "timesteps": args.timesteps,
            "files": files, "convert": convert, "run": run,
            "snn_vs_source_rel_err": float(np.abs(got - want).mean() / np.abs(want).mean()),
            "threshold_ann_vs_source_rel_err": float(np.abs(ann - want).mean() / np.abs(want).mean()),
            "top1_agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
        }
        print(json.dumps(result, indent=2))
        if not files.get("model.snn.onnx.data"):
            raise SystemExit("error: the SNN was not written with external data")


if __name__ == "__main__":
    main()
