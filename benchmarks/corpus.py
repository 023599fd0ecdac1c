"""Convert every model of the corpus and measure it: converted or refused (with the op), time to convert, and the
SNN-vs-threshold-ANN output error at each T (it must shrink as T grows).

Corpus: the structure-only ImageNet models and the single-op models with real weights that ship in the onnx
wheel (onnx/backend/test/data/{light,pytorch-converted}), the exporter fixtures in tests/fixtures, and the
bundled models. Run from the repository root:

    python benchmarks/corpus.py --timesteps 64,256 --json corpus.json

Prints a markdown table (paste it into docs/results.md). The ImageNet-size models take minutes each at T=256.
``--threshold`` picks the V_th method (default max); ``--layers`` also prints, for each model, every neuron
layer's SNN output (firing rate x V_th) against the threshold-ANN activation at each T: the first layer whose
error stops shrinking is where to look.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import converter
from converter.convert import model_inputs
from converter.load import load_model
from runtime import InferenceSession

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def corpus(groups: list[str]) -> list[tuple[str, str, dict]]:
    """(group, name, feeds builder) for every model: feeds are the model's own test inputs where it has them."""
    items = []
    if "light" in groups:
        for path in sorted(glob.glob(str(DATA / "light" / "*.onnx"))):
            items.append(("light", path, None))
    if "single-op" in groups:
        for folder in sorted(glob.glob(str(DATA / "pytorch-converted" / "test_*"))):
            data = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))[0]
            inputs = [numpy_helper.to_array(onnx.load_tensor(p)) for p in sorted(glob.glob(os.path.join(data, "input_*.pb")))]
            items.append(("single-op", os.path.join(folder, "model.onnx"), inputs))
    if "fixtures" in groups:
        calib = np.load(ROOT / "tests" / "fixtures" / "calib.npz")
        for stem in sorted(calib.files):
            items.append(("fixtures", str(ROOT / "tests" / "fixtures" / f"{stem}.onnx"), [calib[stem]]))
    if "bundled" in groups:
        for name, data in (("mnist_vgg", "mnist"), ("mnist_resnet", "mnist"), ("digits_cnn", "digits")):
            items.append(("bundled", str(ROOT / "models" / f"{name}.onnx"), [np.load(ROOT / "models" / f"{data}_calib.npz")["image"][:64]]))
    return items


def feeds_for(path: str, inputs) -> dict[str, np.ndarray]:
    names = [i.name for i in model_inputs(load_model(path).model)]
    if inputs is None:  # structure-only model: one random image per input
        model = load_model(path).model
        return {i.name: np.random.default_rng(0).random([d if isinstance(d, int) and d > 0 else 1 for d in i.shape]).astype(np.float32)
                for i in model_inputs(model)}
    return dict(zip(names, inputs))


def with_outputs(model: onnx.ModelProto, names: list[str], shapes: list[tuple] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the named values (shapes: none for onnxruntime, needed for an SNN)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s) if shapes else None)
                             for n, s in zip(names, shapes or [None] * len(names)))
    return copy


def measure(group: str, path: str, inputs, timesteps: list[int], threshold: str = "max", layers: bool = False) -> dict:
    name = os.path.basename(os.path.dirname(path)) if group == "single-op" else Path(path).stem
    row = {"group": group, "model": name}
    feeds = feeds_for(path, inputs)
    start = time.perf_counter()
    try:
        snn = converter.convert(path, feeds, timesteps=max(timesteps), threshold=threshold, progress=False)
    except converter.Onnx2SnnError as exc:
        row.update(status="refused", reason=str(exc).split(": ", 1)[-1][:120], convert_s=time.perf_counter() - start)
        return row
    row.update(status="converted", convert_s=time.perf_counter() - start, neuron_layers=len(snn.thresholds))
    small = {k: v[:8] for k, v in feeds.items()}
    for steps in timesteps:
        converted = snn.with_settings(timesteps=steps)
        neurons = [n for n in converted.model.graph.node if n.op_type == "IFNeuron"] if layers else []
        ann_node = {n.name: n.output[0] for n in converted.ann_model.graph.node}  # the neuron's Clip (or Relu + Min)
        ann_names = [ann_node[n.name] for n in neurons]
        ann = with_outputs(converted.ann_model, ann_names)
        want, *acts = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            [converted.ann_model.graph.output[0].name] + ann_names, small)
        model = with_outputs(converted.model, [n.output[0] for n in neurons], [a.shape for a in acts])
        start = time.perf_counter()
        outputs = InferenceSession(model).run(None, small)
        row[f"run_s_T{steps}"] = time.perf_counter() - start
        got, rates = outputs[0], outputs[len(converted.model.graph.output):]
        scale = float(np.abs(want).max()) or 1.0
        row[f"rel_error_T{steps}"] = float(np.abs(got - want).max()) / scale
        for n, a, r in zip(neurons, acts, rates):
            v_th = float(np.max(converted.thresholds[n.name]))
            entry = row.setdefault("layers", {}).setdefault(n.name, {"v_th": v_th, "ann_mean": float(a.mean())})
            entry[f"max_error_over_vth_T{steps}"] = float(np.abs(r - a).max()) / v_th
            entry[f"mean_error_over_mean_T{steps}"] = float(r.mean() - a.mean()) / (float(a.mean()) or 1.0)
    return row


def layer_table(row: dict, timesteps: list[int]) -> str:
    """Per neuron layer: V_th (largest over channels), mean ANN activation, and at each T the largest error
    divided by V_th and the error of the layer's mean divided by that mean."""
    head = "| layer | V_th | ANN mean | " + " | ".join(f"max err / V_th, T={t} | mean err / mean, T={t}" for t in timesteps) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(timesteps))]
    for name, e in row.get("layers", {}).items():
        cells = " | ".join(f"{e[f'max_error_over_vth_T{t}']:.2e} | {e[f'mean_error_over_mean_T{t}']:+.2e}" for t in timesteps)
        lines.append(f"| {name} | {e['v_th']:.4g} | {e['ann_mean']:.4g} | {cells} |")
    return "\n".join(lines)


def markdown(rows: list[dict], timesteps: list[int]) -> str:
    head = "| group | model | result | convert (s) | " + " | ".join(f"max error / max output, T={t}" for t in timesteps) + " |"
    lines = [head, "|" + "---|" * (4 + len(timesteps))]
    for r in rows:
        if r["status"] == "refused":
            lines.append(f"| {r['group']} | {r['model']} | refused: {r['reason']} | {r['convert_s']:.2f} | " + " | ".join("" for _ in timesteps) + " |")
        else:
            errs = " | ".join(f"{r[f'rel_error_T{t}']:.2e}" for t in timesteps)
            lines.append(f"| {r['group']} | {r['model']} | converted ({r['neuron_layers']} neuron layers) | {r['convert_s']:.2f} | {errs} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", default="64,256", help="comma-separated T values (default %(default)s)")
    parser.add_argument("--groups", default="light,single-op,fixtures,bundled", help="which parts of the corpus (default: all)")
    parser.add_argument("--only", help="comma-separated model names (file stems or folder names) to keep")
    parser.add_argument("--threshold", default="max", help="V_th method, as for onnx2snn convert (default %(default)s)")
    parser.add_argument("--layers", action="store_true", help="also print the SNN-vs-ANN error of every neuron layer")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    timesteps = [int(t) for t in args.timesteps.split(",")]
    rows = []
    keep = set(args.only.split(",")) if args.only else None
    for group, path, inputs in corpus(args.groups.split(",")):
        name = os.path.basename(os.path.dirname(path)) if group == "single-op" else Path(path).stem
        if keep is not None and name not in keep:
            continue
        rows.append(measure(group, path, inputs, timesteps, args.threshold, args.layers))
        r = rows[-1]
        print(f"{r['group']:>9} {r['model']:<40} {r['status']:<9} {r['convert_s']:6.2f}s "
              + " ".join(f"T={t}: {r.get(f'rel_error_T{t}', float('nan')):.2e}" for t in timesteps), flush=True)
        if args.layers and r["status"] == "converted":
            print(layer_table(r, timesteps), flush=True)
    print()
    print(markdown(rows, timesteps))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
