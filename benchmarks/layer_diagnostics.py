"""Layer by layer: where an SNN conversion loses accuracy (issue 17's diagnosis of ``optimal``).

Converts a model, runs the SNN with every neuron layer exposed, and compares each layer's SNN output (firing rate
x V_th, the mean over T) with the source ANN's activation on the same images:

- rel. RMSE: sqrt(mean (SNN - ANN)^2) / sqrt(mean ANN^2); mean err: (mean SNN - mean ANN) / mean ANN;
- rate: spikes per neuron per step; clipped: fraction of ANN values above the neuron's V_th;
- dead: fraction of the channels active in the ANN (mean > 1% of the layer's) that never fire in the SNN;
- skip / main (neurons fed by an Add, a residual sum): the RMS of each addend in the ANN, and the SNN-vs-ANN rel.
  RMSE of the sum's input current (the Add's output, averaged over T) before the neuron quantises it.

Then the top-1 agreement of the SNN readout with the ANN and the accuracy. ``--ideal`` instead splits the loss
into quantisation and unevenness: it calibrates ``optimal`` (no final selection) on the first 500 evaluation
images themselves, once with the IF neurons and once with each neuron replaced by an ideal quantiser of its
time-averaged current (count = clip(floor((T (mean current + shift) + v_init) / V_th), 0, T), the same count at
every step, so the next layer sees a constant current); what the ideal row loses is quantisation, the rest is the
uneven timing of spikes. Run on development models only::

    python benchmarks/layer_diagnostics.py --models zoo_resnet_adam_bn_e2 --timesteps 4,16 --calib-count 200
    python benchmarks/layer_diagnostics.py --models zoo_resnet_adam_bn_e2 --timesteps 4,8,16 --ideal
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

import converter
import converter.layerwise as layerwise
from converter.convert import prepare
from runtime import InferenceSession
from runtime.format import DOMAIN, NEURON_OP

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from accuracy_vs_T import CATALOGUE, data, model_path  # noqa: E402
from corpus import with_outputs  # noqa: E402


def ann_values(path: str, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The clean (unclipped) source ANN's named values on x: the converter's own graph, before any V_th."""
    _, _, clean = prepare(path)
    model = with_outputs(clean, [n for n in names if n not in {o.name for o in clean.graph.output}])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"image": x})))


def diagnose(snn: converter.convert, path: str, x: np.ndarray, y: np.ndarray, timesteps: int) -> dict:
    model = snn.model
    neurons = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == NEURON_OP]
    producer = {o: n for n in model.graph.node for o in n.output}
    adds = {n.name: producer[n.input[0]] for n in neurons if producer.get(n.input[0]) is not None and producer[n.input[0]].op_type in ("Add", "Sum")}
    # the clean ANN names a neuron's activation by the neuron's output name (same graph, same value names)
    act_names = [n.output[0] for n in neurons]
    add_inputs = sorted({i for a in adds.values() for i in list(a.input) + list(a.output)})
    out_name = model.graph.output[0].name
    want = ann_values(path, act_names + add_inputs + [out_name], x)
    shapes = [want[n].shape for n in act_names + [a.output[0] for a in adds.values()]]
    exposed = with_outputs(model, act_names + [a.output[0] for a in adds.values()], shapes)
    got = InferenceSession(exposed).run(None, {"image": x}, timesteps=timesteps)
    logits, got = got[0], dict(zip(act_names + [a.output[0] for a in adds.values()], got[len(model.graph.output):]))
    rows = []
    for n in neurons:
        a, s = want[n.output[0]].astype(np.float64), got[n.output[0]].astype(np.float64)
        v_th = np.broadcast_to(np.asarray(snn.thresholds[n.name], np.float64).reshape((-1,) + (1,) * (a.ndim - 2)), a.shape[1:])
        axes = (0,) + tuple(range(2, a.ndim))
        ch_mean, ch_rate = a.mean(axis=axes), (s / v_th).mean(axis=axes)
        active = ch_mean > 0.01 * max(ch_mean.mean(), 1e-12)
        row = {"layer": n.name, "channels": int(a.shape[1]), "v_th": float(np.mean(v_th)),
               "rel_rmse": float(np.sqrt(np.mean((s - a) ** 2)) / max(np.sqrt(np.mean(a ** 2)), 1e-12)),
               "mean_err": float((s.mean() - a.mean()) / max(a.mean(), 1e-12)), "rate": float(np.mean(s / v_th)),
               "clipped": float(np.mean(a > v_th)), "dead": float(np.mean(ch_rate[active] == 0)) if active.any() else 0.0}
        if n.name in adds:
            add = adds[n.name]
            rms = [float(np.sqrt(np.mean(want[i].astype(np.float64) ** 2))) for i in add.input]
            cur_a, cur_s = want[add.output[0]].astype(np.float64), got[add.output[0]].astype(np.float64)
            row.update(addends_rms=rms, current_rel_rmse=float(np.sqrt(np.mean((cur_s - cur_a) ** 2)) / max(np.sqrt(np.mean(cur_a ** 2)), 1e-12)))
        rows.append(row)
    ann_out = want[out_name]
    return {"layers": rows, "agreement": float(np.mean(logits.argmax(1) == ann_out.argmax(1))),
            "accuracy": float(np.mean(logits.argmax(1) == y)), "ann_accuracy": float(np.mean(ann_out.argmax(1) == y)),
            "notes": [note for note in snn.report.notes if note.startswith("optimal")]}


def ideal_fire(x: np.ndarray, params, timesteps: int, reset: str, signed: bool = False) -> np.ndarray:
    """An ideal quantiser in place of layerwise.fire: the IF count of the mean current, the same every step."""
    mean = x.mean(axis=0, dtype=np.float64)
    shape = (1, -1) + (1,) * (mean.ndim - 2)
    v_th, shift, v_init = (np.broadcast_to(np.asarray(a, np.float64).reshape(-1), (mean.shape[1],)).reshape(shape)
                           for a in (params.v_th, params.shift, params.v_init))
    count = np.clip(np.floor((timesteps * (mean + shift) + v_init) / v_th), 0, timesteps)
    return np.broadcast_to((count * v_th / timesteps).astype(np.float32), (timesteps,) + mean.shape).copy()


def split_loss(name: str, timesteps: list[int]) -> None:
    """IF against the ideal quantiser, both calibrated in-sample on 500 evaluation images (see the module doc)."""
    _, (x, y) = data(name, 500)
    ann = ort.InferenceSession(model_path(name)).run(None, {"image": x})[0].argmax(1)
    base = converter.convert(model_path(name), x, timesteps=1, threshold="max", progress=False)
    real_fire, real_calibrate = layerwise.fire, layerwise.calibrate_snn
    for t in timesteps:
        cells = []
        for label, fire in (("IF", real_fire), ("ideal quantiser", ideal_fire)):
            outputs = {}
            def calibrate(*args, **kwargs):
                params, outputs["values"] = real_calibrate(*args, **kwargs)
                return params, outputs["values"]
            layerwise.fire, layerwise.calibrate_snn = fire, calibrate
            try:
                base.with_settings(timesteps=t, threshold="optimal", select=False)
            finally:
                layerwise.fire, layerwise.calibrate_snn = real_fire, real_calibrate
            out = next(iter(outputs["values"].values()))
            out = (out.mean(axis=0) if out.ndim == 3 else out).argmax(1)
            cells.append(f"{label}: agreement {100 * np.mean(out == ann):.1f}%, accuracy {100 * np.mean(out == y):.1f}%")
        print(f"{name} T={t} (calibrated in-sample on 500 evaluation images; ANN {100 * np.mean(ann == y):.1f}%): "
              + " | ".join(cells), flush=True)


def table(result: dict) -> str:
    lines = ["| layer | C | V_th | rel. RMSE | mean err | rate | clipped | dead | residual: addends RMS, current rel. RMSE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["layers"]:
        res = f"{'/'.join(f'{v:.3g}' for v in r['addends_rms'])}, {r['current_rel_rmse']:.3f}" if "addends_rms" in r else ""
        lines.append(f"| {r['layer']} | {r['channels']} | {r['v_th']:.3g} | {r['rel_rmse']:.3f} | {r['mean_err']:+.3f} | "
                     f"{r['rate']:.3f} | {r['clipped']:.4f} | {r['dead']:.2f} | {res} |")
    lines.append(f"\nagreement with the ANN {100 * result['agreement']:.1f}%, accuracy {100 * result['accuracy']:.1f}% "
                 f"(ANN {100 * result['ann_accuracy']:.1f}%)")
    return "\n".join(lines + result["notes"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="comma-separated names from models/models.json")
    ap.add_argument("--timesteps", default="4,16")
    ap.add_argument("--threshold", default="optimal")
    ap.add_argument("--calib-count", type=int, default=200, help="first N calibration images (default %(default)s)")
    ap.add_argument("--limit", type=int, default=1000, help="evaluation images (default %(default)s)")
    ap.add_argument("--ideal", action="store_true", help="split the loss into quantisation and unevenness (module doc)")
    ap.add_argument("--json", help="write the results as JSON")
    args = ap.parse_args(argv)
    results = {}
    for name in args.models.split(","):
        if CATALOGUE[name].get("zoo", {}).get("split") == "held-out":
            ap.error(f"{name} is a held-out zoo model: diagnose development models only")
        if args.ideal:
            split_loss(name, [int(v) for v in args.timesteps.split(",")])
            continue
        calib, (x, y) = data(name, args.limit, None, args.calib_count)
        base = converter.convert(model_path(name), calib, timesteps=1, threshold="max", progress=False)
        for t in (int(v) for v in args.timesteps.split(",")):
            snn = base.with_settings(timesteps=t, threshold=args.threshold)
            results[f"{name} T={t}"] = result = diagnose(snn, model_path(name), x, y, t)
            print(f"\n{name}, T={t}, {args.threshold}, {len(calib)} calibration images\n\n{table(result)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
