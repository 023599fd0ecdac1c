"""Throughput of batch inference on a local Ray instance: 1 vs 2 (or more) single-threaded workers.

One Ray instance holds one set of actors per worker count; each set does a warm-up run (actors load the model
and Numba's cached kernels), then the timed runs on the whole batch alternate between the sets (best of --repeats). A local
single-threaded ``InferenceSession`` run is the reference that every Ray output must equal bit for bit. Usage:

    onnx2snn convert models/mnist_vgg.onnx --calib models/mnist_calib.npz -o /tmp/vgg.snn.onnx --timesteps 32
    python benchmarks/distributed_scaling.py --snn /tmp/vgg.snn.onnx [--images 4096] [--timesteps 32]
                                             [--workers 1,2] [--repeats 3] [--no-local] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from runtime.distributed import RayCluster, import_ray  # noqa: E402


def images(n: int) -> np.ndarray:
    """The bundled 1,000 held-out MNIST images, repeated to n."""
    x = np.load(ROOT / "models" / "mnist_eval.npz")["image"]
    return np.resize(x, (n,) + x.shape[1:])


def timed(fn, repeats: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snn", default="/tmp/vgg.snn.onnx", help="SNN file (default %(default)s)")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--timesteps", type=int, default=32)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-local", action="store_true", help="skip the local reference run (outputs are then compared across worker counts only)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    x = {"image": images(args.images)}
    rows, reference = [], None
    if not args.no_local:
        local = runtime.InferenceSession(args.snn, threads=1)
        local.run(None, {"image": x["image"][:16]}, timesteps=args.timesteps)  # warm-up: Numba's cache
        seconds, reference = timed(lambda: local.run(None, x, timesteps=args.timesteps), 1)
        rows.append({"mode": "local", "workers": 1, "threads_per_worker": 1, "seconds": seconds, "identical": True})
    ray = import_ray()
    ray.init(num_cpus=sum(counts), include_dashboard=False, log_to_driver=False)  # all clusters side by side; idle actors use no CPU
    try:
        clusters = [RayCluster(workers=w, threads_per_worker=1, progress=False) for w in counts]
        sessions = [c.session(args.snn) for c in clusters]
        for w, session in zip(counts, sessions):
            session.run(None, {"image": x["image"][:16 * w]}, timesteps=args.timesteps)
        best, outs = [float("inf")] * len(counts), [None] * len(counts)
        for _ in range(args.repeats):  # interleaved, so that a change in the machine's load hits every worker count alike
            for i, session in enumerate(sessions):
                seconds, outs[i] = timed(lambda: session.run(None, x, timesteps=args.timesteps), 1)
                best[i] = min(best[i], seconds)
        for w, seconds, out in zip(counts, best, outs):
            reference = out if reference is None else reference
            rows.append({"mode": "ray", "workers": w, "threads_per_worker": 1, "seconds": seconds,
                         "identical": all(np.array_equal(a, b) for a, b in zip(out, reference))})
    finally:
        ray.shutdown()
    base = next(r["seconds"] for r in rows if r["mode"] == "ray" and r["workers"] == min(counts))
    for r in rows:
        r.update(images_per_s=args.images / r["seconds"], speedup_vs_1_worker=base / r["seconds"])
    print(f"{args.images} images, T={args.timesteps}, {Path(args.snn).name}, best of {args.repeats}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'mode':<6} {'workers':>7} {'threads':>7} {'seconds':>9} {'images/s':>9} {'vs 1 worker':>11} {'identical':>9}")
    for r in rows:
        print(f"{r['mode']:<6} {r['workers']:>7} {r['threads_per_worker']:>7} {r['seconds']:>9.2f} {r['images_per_s']:>9.1f} "
              f"{r['speedup_vs_1_worker']:>10.2f}x {str(r['identical']):>9}")
    if args.json:
        meta = {"images": args.images, "timesteps": args.timesteps, "snn": args.snn, "repeats": args.repeats,
                "cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
