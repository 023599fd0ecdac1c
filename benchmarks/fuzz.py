"""Fuzz the readers and the converter for a bounded time; every outcome must be a clean refusal or a success.

1. Byte-level: mutate valid ANN and SNN files (bit flips, truncation, insertions, deletions, spliced chunks)
   and feed them to the model loader (converter.load.load_model) and the SNN reader (runtime.load_snn plus
   plan compilation).
2. Field-level: edit parsed models (op types, attributes, inputs, shapes, initializer dims, neuron
   parameters, metadata) so they still decode, then convert the ANNs end to end and run the SNNs.
3. Graph-level: random graphs in the idioms of real exporters (torch legacy and dynamo, tf2onnx, skl2onnx;
   tests/graph_gen.py) against the converter's invariant (tests/invariant.py): converted, the SNN runs on
   inputs of the declared shape, matches the NumPy reference and approaches the threshold-ReLU ANN as T grows;
   or refused, naming the node that has no rate-coded equivalent.
Anything else (an exception that is not an Onnx2SnnError) is a finding: the script prints its seed, so
`--replay-bytes SEED` or `--replay-graph SEED` reproduces it; fixed findings become regression tests.

    python benchmarks/fuzz.py --files 10000 --fields 3000 --graphs 5000 --seed 1000 --json fuzz.json
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import converter  # noqa: E402
from converter.load import load_model  # noqa: E402
import invariant  # noqa: E402
from converter.progress import progress  # noqa: E402
from graph_gen import generate  # noqa: E402
from runtime import InferenceSession, Onnx2SnnError  # noqa: E402
from runtime.format import load_snn  # noqa: E402
from runtime.plan import compile_plan  # noqa: E402


def seeds() -> list[tuple[str, bytes]]:
    from conftest import cnn, mlp
    out = []
    for name, model, shape in (("mlp", mlp(), (8, 12)), ("cnn", cnn(), (8, 2, 12, 12))):
        x = np.random.default_rng(0).random(shape).astype(np.float32)
        snn = converter.convert(model, x, timesteps=4, progress=False)
        out += [(f"{name}.onnx", model.SerializeToString()), (f"{name}.snn.onnx", snn.model.SerializeToString())]
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.integers(0, 5)
        pos = int(rng.integers(0, max(1, len(buf))))
        if kind == 0 and buf:                       # flip bits
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:                             # truncate
            del buf[pos:]
        elif kind == 2:                             # insert random bytes
            buf[pos:pos] = rng.bytes(int(rng.integers(1, 16)))
        elif kind == 3:                             # delete a run
            del buf[pos:pos + int(rng.integers(1, 32))]
        else:                                       # splice a chunk from elsewhere
            start = int(rng.integers(0, max(1, len(buf))))
            buf[pos:pos] = buf[start:start + int(rng.integers(1, 64))]
    return bytes(buf)


def read_as_ann(blob: bytes) -> None:
    load_model(blob)


def read_as_snn(blob: bytes) -> None:
    compile_plan(load_snn(blob))


def fuzz_bytes(n: int, seed: int, replay: int | None = None) -> tuple[collections.Counter, list]:
    outcomes, findings = collections.Counter(), []
    originals = seeds()
    cases = [replay] if replay is not None else range(seed, seed + n)
    for case in cases:
        rng = np.random.default_rng(case)
        name, data = originals[case % len(originals)]
        blob = mutate(data, rng)
        for reader in (read_as_ann, read_as_snn):
            try:
                reader(blob)
                outcomes[f"{reader.__name__}: accepted"] += 1
            except Onnx2SnnError:
                outcomes[f"{reader.__name__}: refused cleanly"] += 1
            except Exception as exc:  # a finding
                outcomes[f"{reader.__name__}: UNHANDLED"] += 1
                findings.append({"kind": "bytes", "seed": case, "source": name, "reader": reader.__name__,
                                 "error": f"{type(exc).__name__}: {exc}"[:300], "trace": traceback.format_exc(limit=3)})
    return outcomes, findings


OPS = ["Relu", "Conv", "Gemm", "Add", "MaxPool", "Sigmoid", "Softmax", "Reshape", "Concat", "Identity", "Clip", "Mul",
       "IFNeuron", "SpikeMaxPool", "BatchNormalization", "Flatten", "Transpose", "Bogus"]


def edit(model_bytes: bytes, rng: np.random.Generator) -> bytes:
    """One to three random field edits that keep the protobuf decodable."""
    import onnx
    from onnx import helper
    model = onnx.load_from_string(model_bytes)
    nodes = model.graph.node
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 9))
        node = nodes[int(rng.integers(0, len(nodes)))]
        if kind == 0:
            node.op_type = str(rng.choice(OPS))
        elif kind == 1 and node.attribute:
            attr = node.attribute[int(rng.integers(0, len(node.attribute)))]
            if attr.type == onnx.AttributeProto.INTS and attr.ints:
                attr.ints[int(rng.integers(0, len(attr.ints)))] = int(rng.integers(-3, 9))
            elif attr.type == onnx.AttributeProto.FLOAT:
                attr.f = float(rng.choice([0.0, -1.0, np.nan, np.inf, 1e30, rng.normal()]))
            elif attr.type == onnx.AttributeProto.INT:
                attr.i = int(rng.integers(-2, 5))
            elif attr.type == onnx.AttributeProto.STRING:
                attr.s = bytes(rng.choice([b"zero", b"subtract", b"", b"SAME_UPPER", b"bogus"]))
        elif kind == 2 and node.input:
            node.input[int(rng.integers(0, len(node.input)))] = str(rng.choice([o for n in nodes for o in n.output] + ["", "x", "nope"]))
        elif kind == 3 and model.graph.initializer:
            init = model.graph.initializer[int(rng.integers(0, len(model.graph.initializer)))]
            if init.dims:
                init.dims[int(rng.integers(0, len(init.dims)))] = int(rng.integers(0, 40))
        elif kind == 4:
            dims = model.graph.input[0].type.tensor_type.shape.dim
            if dims:
                dims[int(rng.integers(0, len(dims)))].dim_value = int(rng.integers(0, 30))
        elif kind == 5:
            node.attribute.append(helper.make_attribute(str(rng.choice(["v_th", "shift", "leak", "pads", "axis"])),
                                                        float(rng.normal()) if rng.random() < 0.5 else [int(v) for v in rng.integers(-1, 4, 4)]))
        elif kind == 6:
            del nodes[int(rng.integers(0, len(nodes)))]
        elif kind == 7:
            for prop in model.metadata_props:
                prop.value = str(rng.choice(["", "0", "-4", "2", "poisson", "1"]))
        else:
            node.domain = str(rng.choice(["", "onnx2snn", "com.example"]))
    return model.SerializeToString()


def fuzz_fields(n: int, seed: int, replay: int | None = None) -> tuple[collections.Counter, list]:
    outcomes, findings = collections.Counter(), []
    originals = seeds()
    for case in ([replay] if replay is not None else range(seed, seed + n)):
        rng = np.random.default_rng(case)
        name, data = originals[case % len(originals)]
        try:
            blob = edit(data, rng)
            if name.endswith(".snn.onnx"):
                session = InferenceSession(blob)
                shape = [d if isinstance(d, int) and d > 0 else 2 for d in session.get_inputs()[0].shape]
                session.run(None, {session.get_inputs()[0].name: rng.random(shape).astype(np.float32)}, timesteps=3)
            else:
                source = load_model(blob)
                info = source.model.graph.input[0].type.tensor_type.shape.dim
                shape = [d.dim_value if d.dim_value > 0 else 4 for d in info]
                converter.convert(blob, rng.random(shape).astype(np.float32), timesteps=3, threshold="max", progress=False)
            outcomes[f"{name}: accepted"] += 1
        except Onnx2SnnError:
            outcomes[f"{name}: refused cleanly"] += 1
        except Exception as exc:  # a finding
            outcomes[f"{name}: UNHANDLED"] += 1
            findings.append({"kind": "fields", "seed": case, "source": name, "error": f"{type(exc).__name__}: {exc}"[:300],
                             "trace": traceback.format_exc(limit=4)})
    return outcomes, findings


def fuzz_graphs(n: int, seed: int, replay: int | None = None) -> tuple[collections.Counter, list]:
    """Generated graphs in exporters' idioms (tests/graph_gen.py) against the converter's invariant
    (tests/invariant.py); every fourth is also converted with 'optimal'; those with seeds 4-7 mod 8 (half) are
    converted with signed spikes, in both conversions. Outcomes are counted per family."""
    outcomes, findings = collections.Counter(), []
    for case in ([replay] if replay is not None else progress(range(seed, seed + n), desc="graphs", unit="graph")):
        family = "?"
        try:
            graph = generate(case)
            family = graph.family
            outcomes[f"{family}: {invariant.check(graph, case, optimal=case % 4 == 0, signed=case // 4 % 2 == 1)}"] += 1
        except Exception as exc:  # a finding: a violated invariant or an unhandled error
            outcomes[f"{family}: VIOLATION"] += 1
            findings.append({"kind": "graph", "seed": case, "family": family, "error": f"{type(exc).__name__}: {exc}"[:300],
                             "trace": traceback.format_exc(limit=3)})
    return outcomes, findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="mutated files (each read as ANN and as SNN)")
    parser.add_argument("--fields", type=int, default=2000, help="field-edited models converted or run end to end")
    parser.add_argument("--graphs", type=int, default=5000, help="generated exporter-style graphs checked against the invariant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay-bytes", type=int, help="rerun one byte-level case by its seed")
    parser.add_argument("--replay-fields", type=int, help="rerun one field-level case by its seed")
    parser.add_argument("--replay-graph", type=int, help="rerun one graph case by its seed")
    parser.add_argument("--json", help="write outcomes and findings as JSON")
    args = parser.parse_args()
    results = {}
    replays = [(fuzz_bytes, args.replay_bytes), (fuzz_fields, args.replay_fields), (fuzz_graphs, args.replay_graph)]
    for fn, seed in replays:
        if seed is None:
            continue
        outcome, findings = fn(1, 0, seed)
        print(dict(outcome))
        for f in findings:
            print(f["trace"])
        return
    for label, fn, n in (("files", fuzz_bytes, args.files), ("fields", fuzz_fields, args.fields), ("graphs", fuzz_graphs, args.graphs)):
        start = time.perf_counter()
        outcome, findings = fn(n, args.seed)
        results[label] = {"cases": n, "seconds": time.perf_counter() - start, "outcomes": dict(outcome), "findings": findings}
        print(f"{label}: {n} cases in {results[label]['seconds']:.0f} s: {dict(outcome)}")
        for f in findings[:20]:
            print(f"  finding (seed {f['seed']}): {f['error']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    sys.exit(1 if any(r["findings"] for r in results.values()) else 0)


if __name__ == "__main__":
    main()
