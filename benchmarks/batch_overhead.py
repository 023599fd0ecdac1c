"""Throughput of one session at small batches (what a server runs) against batch 256, optionally A/B against
another checkout of the runtime.

Converts models/mnist_vgg.onnx at T (default 8) once, then times ``InferenceSession.run`` on the same held-out
images in batches of 1, 4, 16 and 256 (``--threads``, default 1). With ``--against DIR`` (a checkout, e.g. a
``git worktree add /tmp/base HEAD~3``), the same loop runs alternately in a subprocess that imports that
checkout's runtime and in one that imports this one, ``--pairs`` times, so both see the same machine load;
it prints each run's img/s and the per-batch ranges. Usage:

    python benchmarks/batch_overhead.py [--timesteps 8] [--threads 1] [--images 512] [--against DIR --pairs 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 4, 16, 256)


def measure(repo: str, snn: str, timesteps: int, threads: int, images: int) -> dict[int, float]:
    """img/s per batch of the runtime found in ``repo`` (run in this process: call it in a fresh one)."""
    sys.path.insert(0, repo)
    import numpy as np
    import runtime
    x = np.load(ROOT / "models" / "mnist_eval.npz")["image"][:images]
    session = runtime.InferenceSession(snn, threads=threads)
    session.run(None, {"image": x[:4]}, timesteps=timesteps)  # compile, lay out weights
    rates = {}
    for batch in BATCHES:
        start = time.perf_counter()
        for i in range(0, len(x) - batch + 1, batch):
            session.run(None, {"image": x[i:i + batch]}, timesteps=timesteps)
        rates[batch] = (len(x) // batch) * batch / (time.perf_counter() - start)
    return rates


def run_in(repo: Path, snn: str, args) -> dict[int, float]:
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import batch_overhead as b; "
            f"print(json.dumps(b.measure({str(repo)!r}, {snn!r}, {args.timesteps}, {args.threads}, {args.images})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=512, help="held-out images timed per batch size (at least 256)")
    ap.add_argument("--against", type=Path, help="another checkout whose runtime is timed alternately with this one")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args(argv)
    if args.images < max(BATCHES):
        ap.error(f"--images must be at least {max(BATCHES)}")
    if args.against is not None and not (args.against / "runtime" / "__init__.py").is_file():
        ap.error(f"--against {args.against}: no runtime/ package there; give a checkout of this repository")
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import converter
    with tempfile.TemporaryDirectory(prefix="batch-overhead-") as folder:
        snn = str(Path(folder) / "mnist_vgg.snn.onnx")
        calib = np.load(ROOT / "models" / "mnist_calib.npz")["image"]
        converter.convert(str(ROOT / "models" / "mnist_vgg.onnx"), calib, timesteps=args.timesteps, progress=False).save(snn)
        repos = [("this", ROOT)] if args.against is None else [("against", args.against.resolve()), ("this", ROOT)]
        results: dict[str, list[dict[int, float]]] = {label: [] for label, _ in repos}
        for _ in range(args.pairs if args.against is not None else 1):
            for label, repo in repos:
                rates = run_in(repo, snn, args)
                results[label].append(rates)
                print(f"{label:8s} " + "  ".join(f"batch {b}: {r:.0f}" for b, r in rates.items()) + " img/s", flush=True)
    print(f"\nmnist_vgg T={args.timesteps}, {args.threads} thread(s), {args.images} images per batch size; img/s (min-max over runs)")
    print("| batch | " + " | ".join(label for label, _ in repos) + " |")
    print("|---:|" + "---:|" * len(repos))
    for b in BATCHES:
        cells = [f"{min(r[b] for r in results[label]):.0f}-{max(r[b] for r in results[label]):.0f}" for label, _ in repos]
        print(f"| {b} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
