"""Readout ablation for `optimal`: delayed readout (readout_start = 0, T/8, T/4, T/2) and readout by output
spikes, against the default (mean of the output layer over all T steps), on held-out images.

Each setting is a full conversion with the knob fixed (the final selection then scores its other candidates
with that readout), run in runtime.InferenceSession; accuracies in percent.

    python benchmarks/readout_ablation.py [--models mnist_vgg,mnist_resnet_s1] [--timesteps 8,16,32] [--limit 1000]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import converter
from runtime import InferenceSession

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy_vs_T import MODELS, data  # noqa: E402  (the same data split as the main benchmark)


def accuracy(snn, x, y, steps: int) -> float:
    return 100 * float(np.mean(InferenceSession(snn.model).run(None, {"image": x}, timesteps=steps)[0].argmax(1) == y))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_vgg,mnist_resnet_s1")
    ap.add_argument("--timesteps", default="8,16,32")
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args(argv)
    print("| model | T | start 0 (default) | start T/8 | start T/4 | start T/2 | spike readout |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        path = os.path.join(MODELS, f"{model}.onnx")
        calib, (x, y) = data(model, args.limit)
        base = converter.convert(path, calib, timesteps=8, threshold="max", progress=False)
        spiking = converter.convert(path, calib, timesteps=8, threshold="max", progress=False, readout="spikes")
        for steps in (int(t) for t in args.timesteps.split(",")):
            delayed = [accuracy(base.with_settings(timesteps=steps, threshold="optimal", readout_start=steps // d), x, y, steps)
                       for d in (steps + 1, 8, 4, 2)]  # steps // (steps + 1) == 0: the default
            spikes = accuracy(spiking.with_settings(timesteps=steps, threshold="optimal"), x, y, steps)
            print(f"| {model} | {steps} | " + " | ".join(f"{a:.1f}" for a in delayed + [spikes]) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
