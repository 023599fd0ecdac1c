"""Run an SNN file over a folder of .npy inputs, writing one output .npy per input.

    python examples/batch_inference.py MODEL.snn.onnx INPUT_DIR OUTPUT_DIR [--timesteps T] [--threads N] [--overwrite]

Each input file holds a batch (N, ...) for the model's single input, or one sample without the batch axis;
OUTPUT_DIR/<same name> gets the first output's rate readout, with the same leading axis. Outputs are written
atomically (a temporary file renamed into place), so an interrupted run leaves only complete files, and a
rerun skips the inputs whose output already exists (unless --overwrite). Uses the runtime only: a deployment
needs neither the converter nor the source ANN. A progress bar is shown on a terminal, not under --quiet.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

import runtime


def save_atomic(path: Path, array: np.ndarray) -> None:
    """np.save to a temporary file in the target folder, fsync, then rename over the target."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_folder(model: str, inputs: Path, outputs: Path, timesteps: int | None = None, threads: int | None = None,
               overwrite: bool = False, quiet: bool = False) -> list[Path]:
    """Run every inputs/*.npy through the SNN; returns the outputs written (skipped ones are not listed)."""
    sess = runtime.InferenceSession(model, threads=threads)
    (spec,) = sess.get_inputs()   # one input; a multi-input model needs one .npz per sample instead
    first = sess.get_outputs()[0].name
    files = sorted(inputs.glob("*.npy"))
    outputs.mkdir(parents=True, exist_ok=True)
    todo = [f for f in files if overwrite or not (outputs / f.name).exists()]
    written = []
    for path in tqdm(todo, desc="inference", unit="file", disable=quiet or not sys.stderr.isatty(), file=sys.stderr):
        x = np.load(path, allow_pickle=False)
        single = x.ndim == len(spec.shape) - 1
        (y,) = sess.run([first], {spec.name: x[None] if single else x}, timesteps=timesteps)
        save_atomic(outputs / path.name, y[0] if single else y)
        written.append(outputs / path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the SNN file (.snn.onnx)")
    parser.add_argument("inputs", type=Path, help="folder of .npy inputs")
    parser.add_argument("outputs", type=Path, help="folder for the outputs (created if missing)")
    parser.add_argument("--timesteps", type=int, default=None, help="T (default: the T the file was converted for)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    if not args.inputs.is_dir():
        print(f"error: {args.inputs} is not a folder", file=sys.stderr)
        return 2
    try:
        written = run_folder(args.model, args.inputs, args.outputs, args.timesteps, args.threads, args.overwrite, args.quiet)
    except (runtime.Onnx2SnnError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {len(written)} outputs to {args.outputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
