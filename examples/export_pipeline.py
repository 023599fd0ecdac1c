"""Convert an ANN to an SNN as one step of a model-export pipeline.

    python examples/export_pipeline.py MODEL.onnx --calib CALIB.npz -o OUT.snn.onnx [--report OUT.report.json] [--timesteps 8]

The calibration data reach ``converter.convert`` as an iterable of ``(images, labels)`` batches, the shape a
PyTorch DataLoader yields, so a training script can pass its own loader (torch tensors work as they are) and
the model as bytes straight from ``torch.onnx.export`` into a BytesIO. On a conversion error (an unsupported
op, calibration data that do not fit the model) it prints one ``error:`` line and exits with status 2, so the
pipeline stops, and nothing is written. Both outputs are written atomically (a temporary file renamed into
place), so a later step never reads half a file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import converter
from converter.writer import write_bytes_atomic


def npz_batches(path: str, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches from an .npz with 'image' (or the first array) and optional 'y', like a DataLoader."""
    with np.load(path) as data:
        images = data["image"] if "image" in data.files else data[data.files[0]]
        labels = data["y"] if "y" in data.files else np.zeros(len(images), np.int64)
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size], labels[start:start + batch_size]


def export(model: str | bytes, batches: Iterable, output: str, report: str | None = None, timesteps: int = 8,
           threshold: str = "optimal") -> converter.ConvertedSNN:
    """Convert ``model`` (a path or the ONNX bytes) and write the SNN file and, if asked, the report JSON."""
    snn = converter.convert(model, calibration=batches, timesteps=timesteps, threshold=threshold)
    snn.save(output)
    if report:
        write_bytes_atomic(report, (snn.report.to_json() + "\n").encode())  # the converter's own atomic writer
    return snn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the ANN (.onnx), or - to read its bytes from stdin")
    parser.add_argument("--calib", required=True, help=".npz with the calibration images ('image') and labels ('y')")
    parser.add_argument("-o", "--output", required=True, help="the SNN file to write (.snn.onnx)")
    parser.add_argument("--report", help="also write the conversion report as JSON")
    parser.add_argument("--timesteps", type=int, default=8)
    parser.add_argument("--threshold", default="optimal")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    model = sys.stdin.buffer.read() if args.model == "-" else Path(args.model).read_bytes() if os.path.isfile(args.model) else args.model
    try:
        snn = export(model, npz_batches(args.calib, args.batch_size), args.output, args.report, args.timesteps, args.threshold)
    except (converter.Onnx2SnnError, OSError, KeyError) as exc:   # bad model, data or path: stop the pipeline
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(snn.thresholds)} neuron layers, T={args.timesteps}"
          + (f"; report {args.report}" if args.report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
