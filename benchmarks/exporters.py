"""Models from exporters other than PyTorch (tests/fixtures/third_party/: scikit-learn/skl2onnx, Keras/tf2onnx,
Flax/jax2onnx) converted and run: per model and T, SNN accuracy with 'optimal' and the paper's 'max' against the
exported ANN in onnxruntime, with McNemar's exact test on the disagreements.

    python benchmarks/exporters.py --timesteps 1,2,4,8,16,32,64 --calib 200 --json exporters.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import onnx  # noqa: E402

import converter  # noqa: E402
from converter.evaluate import ort_predict  # noqa: E402
from runtime import InferenceSession  # noqa: E402
from test_exporters import EXPORTED, THIRD_PARTY, _data  # noqa: E402


def mcnemar(ann_right: np.ndarray, snn_right: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of the discordant pairs."""
    b, c = int(np.sum(ann_right & ~snn_right)), int(np.sum(~ann_right & snn_right))
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", default="1,2,4,8,16,32,64")
    parser.add_argument("--calib", type=int, default=200, help="calibration images (from the calibration split)")
    parser.add_argument("--methods", default="optimal,max")
    parser.add_argument("--json", help="write the results as JSON")
    args = parser.parse_args()
    steps = [int(t) for t in args.timesteps.split(",")]
    results = {}
    for name, entry in sorted(EXPORTED.items()):
        model = onnx.load(THIRD_PARTY / f"{name}.onnx")
        feed_name = model.graph.input[0].name
        calib, _ = _data(entry, "calib")
        x, y = _data(entry, "eval")
        row = {"exporter": entry["exporter"], "framework": entry["framework"], "framework_accuracy": entry["framework_accuracy"],
               "images": int(len(y)), "cells": {}}
        for i, method in enumerate(args.methods.split(",")):
            start = time.perf_counter()
            snn = converter.convert(model, {feed_name: calib[:args.calib]}, timesteps=steps[0], threshold=method, progress=False)
            if i == 0:  # the exported model's output the SNN keeps (the scores, where a label output was dropped)
                ann = ort_predict(model, {feed_name: x}, output=snn.model.graph.output[0].name) == y
                row["ann_accuracy"] = float(ann.mean())
                print(f"\n{name} ({entry['framework']}, {entry['exporter']}): framework {100 * entry['framework_accuracy']:.1f}%, "
                      f"exported ANN in onnxruntime {100 * ann.mean():.1f}% on {len(y)} images")
                print(f"{'method':>8} " + " ".join(f"{'T=' + str(t):>14}" for t in steps))
            cells = []
            for t in steps:
                emitted = snn.with_settings(timesteps=t)
                right = InferenceSession(emitted.model).run(None, {feed_name: x}, timesteps=t)[0].argmax(1) == y
                cell = {"accuracy": float(right.mean()), "gap": float(ann.mean() - right.mean()), "mcnemar_p": mcnemar(ann, right)}
                row["cells"][f"{method}@{t}"] = cell
                cells.append(f"{100 * cell['accuracy']:6.1f} (p={cell['mcnemar_p']:.2g})")
            print(f"{method:>8} " + " ".join(f"{c:>14}" for c in cells) + f"   [{time.perf_counter() - start:.0f} s]")
        results[name] = row
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
