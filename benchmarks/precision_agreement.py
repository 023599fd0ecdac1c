"""float32 against float64 on the bundled models: spike flips and accuracy at every T of the demo's full sweep.

For each model the SNN is converted as `onnx2snn demo --full` converts it (all calibration images, threshold
optimal with its final selection, re-emitted per T), then run on the whole held-out split by the float64 engine
(equal to the NumPy reference) and the float32 engine (the default), both `engine="auto"`. Per (model, T): both
accuracies, their difference in points, the fraction of the float64 run's spikes that the float32 run does not
reproduce (any (neuron, step, sample) whose spike differs counts once: ``runtime.compare``), and the samples whose
top-1 class differs. design.md 5a asks for equal accuracy within 0.1 point at every T: the script says which
cells meet it and exits 1 if one does not.

    python benchmarks/precision_agreement.py [--models mnist_vgg,mnist_resnet,digits_cnn,digits_maxpool]
        [--timesteps 4,8,16,32,64,128] [--limit N] [--calib-limit N] [--spikes unsigned|signed] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import converter  # noqa: E402
from converter.cli import DEMO_FULL_TIMESTEPS, DEMO_MODELS  # noqa: E402
from runtime.compare import precision_agreement  # noqa: E402

TOLERANCE_POINTS = 0.1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEMO_MODELS))
    ap.add_argument("--timesteps", default=DEMO_FULL_TIMESTEPS)
    ap.add_argument("--limit", type=int, default=0, help="first N held-out images only (default: all)")
    ap.add_argument("--calib-limit", type=int, default=0, help="first N calibration images only (default: all, as demo --full)")
    ap.add_argument("--spikes", choices=["unsigned", "signed"], default="unsigned", help="the neurons to convert to (convert --spikes)")
    ap.add_argument("--json", help="write every cell as JSON")
    args = ap.parse_args(argv)
    steps = [int(t) for t in args.timesteps.split(",")]
    cells, t0 = [], time.perf_counter()
    print(f"load average {os.getloadavg()}")
    print(f"{'model':<16} {'T':>4} {'images':>6} {'acc f64':>8} {'acc f32':>8} {'diff (pt)':>9} {'spikes f64':>12} {'flips':>8} "
          f"{'flip frac':>10} {'top-1 chg':>9}  within {TOLERANCE_POINTS} pt")
    for name in args.models.split(","):
        prefix = name.split("_")[0]
        calib = np.load(ROOT / "models" / f"{prefix}_calib.npz")["image"]
        data = np.load(ROOT / "models" / f"{prefix}_eval.npz")
        x, y = data["image"], data["y"]
        if args.calib_limit:
            calib = calib[:args.calib_limit]
        if args.limit:
            x, y = x[:args.limit], y[:args.limit]
        snn = converter.convert(str(ROOT / "models" / f"{name}.onnx"), calib, timesteps=max(steps), progress=False,
                                signed_spikes=args.spikes == "signed")
        for t in steps:
            model = (snn if t == snn.settings.timesteps else snn.with_settings(timesteps=t)).model
            cell = dict(model=name, **precision_agreement(model, {"image": x}, y, t))
            cell["ok"] = abs(cell["accuracy_difference_points"]) <= TOLERANCE_POINTS + 1e-9
            cells.append(cell)
            print(f"{name:<16} {t:>4} {cell['samples']:>6} {100 * cell['accuracy_float64']:>7.2f}% {100 * cell['accuracy_float32']:>7.2f}% "
                  f"{cell['accuracy_difference_points']:>+9.2f} {cell['spikes_float64']:>12} {cell['spike_flips']:>8} "
                  f"{cell['flip_fraction']:>10.2e} {cell['top1_changed']:>9}  {'yes' if cell['ok'] else 'NO'}", flush=True)
    failed = [c for c in cells if not c["ok"]]
    print(f"{len(cells) - len(failed)} of {len(cells)} cells within {TOLERANCE_POINTS} point; total {time.perf_counter() - t0:.0f} s, "
          f"load average {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"tolerance_points": TOLERANCE_POINTS, "cells": cells}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
