"""ImageNet-scale structures (ResNet-50, DenseNet-121, Inception v2 from the onnx wheel's backend test data):
conversion time, peak memory and SNN run time per image at T=32, batch 1, so users know what to expect.

These models have the real graph structure but constant weights, so nothing here measures accuracy; with
constant weights every neuron of a layer sees the same current and the SNN spikes densely (the firing rates
are printed): an event-driven runtime is then at its slowest, a trained network with sparse activity runs
faster. Each model runs in its own subprocess, so ru_maxrss is that model's own peak (conversion and run
together; the run alone is measured in a second subprocess). Calibration: --calib-images random uniform
[0, 1) images (the structure is what is measured, not the thresholds' quality).

    python benchmarks/imagenet_scale.py [--models resnet50,densenet121,inception_v2] [--timesteps 32]
        [--threshold max] [--calib-images 4] [--images 1] [--json R.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

FILES = {"resnet50": "light_resnet50.onnx", "densenet121": "light_densenet121.onnx", "inception_v2": "light_inception_v2.onnx"}


def light_dir() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_convert(path: str, out: str, steps: int, method: str, n_calib: int) -> dict:
    """Subprocess body: load, calibrate, convert, save; report seconds and peak RSS."""
    import numpy as np
    import onnx

    import converter
    from converter.convert import model_inputs, prepare

    _, _, clean = prepare(path)
    (inp,) = model_inputs(clean)
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    calib = np.random.default_rng(0).random((n_calib, *shape[1:]), dtype=np.float32)
    t0 = time.perf_counter()
    batches = [calib[i:i + 1] for i in range(n_calib)] if shape[0] == 1 else calib   # these files fix the batch at 1
    snn = converter.convert(path, batches, timesteps=steps, threshold=method, progress=False)
    seconds = time.perf_counter() - t0
    snn.save(out)
    neurons = sum(1 for n in snn.model.graph.node if n.op_type == "IFNeuron")
    return {"convert_s": seconds, "convert_peak_mb": peak_mb(), "input": inp.name, "input_shape": shape[1:],
            "neuron_layers": neurons, "nodes_source": len(onnx.load(path).graph.node), "snn_mb": os.path.getsize(out) / 1e6}


def child_run(snn_path: str, input_name: str, input_shape: list[int], steps: int, images: int) -> dict:
    """Subprocess body: compile and run the SNN on `images` images, batch 1, after one warm-up (JIT) run."""
    import numpy as np

    from runtime import InferenceSession

    x = np.random.default_rng(1).random((images, *input_shape), dtype=np.float32)
    sess = InferenceSession(snn_path)
    t0 = time.perf_counter()
    sess.run(None, {input_name: x[:1]}, timesteps=steps)
    first = time.perf_counter() - t0
    times = []
    for i in range(images):
        t0 = time.perf_counter()
        sess.run(None, {input_name: x[i:i + 1]}, timesteps=steps)
        times.append(time.perf_counter() - t0)
    s = sess.stats
    rate = s["total_spikes"] / max(1, sum(l["neurons"] for l in s["layers"]) * steps)
    return {"first_run_s": first, "run_s_per_image": sum(times) / len(times), "run_peak_mb": peak_mb(),
            "mean_firing_rate": rate, "synops_per_image": s["total_synops"], "ann_macs_per_image": s["ann_macs"]}


def in_subprocess(func: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import imagenet_scale as m; print('RESULT' + json.dumps(m.{func}(*json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]}
    return json.loads(lines[-1][6:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(FILES))
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--threshold", default="max", help="conversion method (default max: 'optimal' simulates the SNN on the calibration images)")
    ap.add_argument("--calib-images", type=int, default=4)
    ap.add_argument("--images", type=int, default=1, help="timed images (batch 1 each), after one warm-up run")
    ap.add_argument("--json")
    ap.add_argument("--merge", help="comma-separated JSON files of earlier runs: print their table, run nothing")
    args = ap.parse_args(argv)
    if args.merge:
        runs = [json.load(open(p)) for p in args.merge.split(",")]
        results = dict(runs[0], models={k: v for r in runs for k, v in r["models"].items()})
        return table(results)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "command": " ".join(["python"] + sys.argv), "timesteps": args.timesteps, "threshold": args.threshold, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            src = os.path.join(light_dir(), FILES[model])
            out = os.path.join(tmp, f"{model}.snn.onnx")
            r = in_subprocess("child_convert", src, out, args.timesteps, args.threshold, args.calib_images)
            if "error" not in r:
                r.update(in_subprocess("child_run", out, r["input"], r["input_shape"], args.timesteps, args.images))
            results["models"][model] = r
            print(model, json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    return table(results)


def table(results: dict) -> int:
    print(f"\nT={results['timesteps']}, threshold {results['threshold']}, batch 1, {results['machine']}\n")
    print("| model | neuron layers | convert (s) | convert peak RSS (MB) | SNN file (MB) | first run incl. JIT (s) | "
          "run per image (s) | run peak RSS (MB) | mean firing rate | SynOps per image (G) | ANN MACs per image (G) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model, r in results["models"].items():
        if "error" in r:
            print(f"| {model} | error: {r['error']} |")
            continue
        print(f"| {model} | {r['neuron_layers']} | {r['convert_s']:.1f} | {r['convert_peak_mb']:.0f} | {r['snn_mb']:.1f} | "
              f"{r.get('first_run_s', float('nan')):.1f} | {r.get('run_s_per_image', float('nan')):.1f} | {r.get('run_peak_mb', float('nan')):.0f} | "
              f"{r.get('mean_firing_rate', float('nan')):.3f} | {r.get('synops_per_image', float('nan')) / 1e9:.2f} | "
              f"{r.get('ann_macs_per_image', float('nan')) / 1e9:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
