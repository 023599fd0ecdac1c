"""Evaluation data from folders users already have on disk: the CIFAR-10/100 binary versions and image folders.

- CIFAR-10 binary (``cifar-10-batches-bin/``: data_batch_1..5.bin, test_batch.bin) and CIFAR-100 binary
  (``cifar-100-binary/``: train.bin, test.bin): raw bytes, one record per image (label byte(s), then
  1024 red, 1024 green, 1024 blue pixels). Read with NumPy only; nothing is unpickled.
- An image folder: either ``labels.txt`` / ``labels.csv`` with one "relative/path label" (or "path,label")
  per line, or one sub-folder per class (classes numbered in sorted name order, as torchvision does).
  Images are decoded with Pillow, resized (shorter side to size x 256/224) and centre-cropped to the model's
  input size, as ImageNet evaluation does.
Pixels are scaled to [0, 1], then normalised per channel with the given mean and std.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

CIFAR_RECORD = 3072
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def _normalise(x: np.ndarray, mean, std, path: str) -> np.ndarray:
    channels = x.shape[1]
    mean = np.asarray(mean if mean is not None else [0.0] * channels, np.float32)
    std = np.asarray(std if std is not None else [1.0] * channels, np.float32)
    for name, v in (("--mean", mean), ("--std", std)):
        if v.size not in (1, channels):
            raise InputError(f"{path}: {name} has {v.size} values for {channels} channels")
    if np.any(std == 0):
        raise InputError(f"{path}: --std must not contain 0")
    return ((x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)).astype(np.float32)


def cifar_files(folder: Path, split: str) -> tuple[list[Path], int] | None:
    """The record files of a CIFAR binary folder and its label bytes per record, or None if it is not one."""
    if (folder / "test_batch.bin").is_file() or (folder / "data_batch_1.bin").is_file():
        names = ["test_batch.bin"] if split == "test" else [f"data_batch_{i}.bin" for i in range(1, 6)]
        return [folder / n for n in names], 1
    if (folder / "test.bin").is_file() or (folder / "train.bin").is_file():
        return [folder / f"{split}.bin"], 2
    return None


def read_cifar(folder: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) float32 images in [0, 1] and int64 labels (fine labels for CIFAR-100)."""
    files, label_bytes = cifar_files(folder, split)
    record = label_bytes + CIFAR_RECORD
    xs, ys = [], []
    for path in files:
        if not path.is_file():
            raise InputError(f"{folder}: {path.name} is missing for the {split} split")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise InputError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records")
        raw = raw.reshape(-1, record)
        ys.append(raw[:, label_bytes - 1].astype(np.int64))
        xs.append(raw[:, label_bytes:].reshape(-1, 3, 32, 32))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit:
        x, y = x[:limit], y[:limit]
    return x.astype(np.float32) / 255.0, y


def _labelled_images(folder: Path) -> list[tuple[Path, int]]:
    for name in ("labels.txt", "labels.csv"):
        labels = folder / name
        if labels.is_file():
            items = []
            for number, line in enumerate(labels.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.replace(",", " ").split()
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise InputError(f"{labels}:{number}: expected 'relative/path label', got {line!r}")
                path = (folder / parts[0]).resolve()
                if folder.resolve() not in path.parents:
                    raise InputError(f"{labels}:{number}: {parts[0]!r} points outside {folder}")
                items.append((path, int(parts[1])))
            return items
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    return [(p, i) for i, c in enumerate(classes) for p in sorted((folder / c).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]


def read_image_folder(folder: Path, channels: int, height: int, width: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode, resize, centre-crop: (N, C, H, W) float32 in [0, 1] and int64 labels."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading an image folder needs Pillow: pip install pillow") from None
    items = _labelled_images(folder)
    if limit:
        items = items[:limit]
    if not items:
        raise InputError(f"{folder}: no images found (give labels.txt, or one sub-folder of images per class)")
    x = np.empty((len(items), channels, height, width), np.float32)
    for i, (path, _) in enumerate(items):
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                scale = max(height, width) * 256 / 224 / min(img.size)
                img = img.resize((max(width, round(img.size[0] * scale)), max(height, round(img.size[1] * scale))), Image.BILINEAR)
                left, top = (img.size[0] - width) // 2, (img.size[1] - height) // 2
                pixels = np.asarray(img.crop((left, top, left + width, top + height)), np.float32) / 255.0
        except OSError as exc:
            raise InputError(f"{path}: cannot read image ({exc})") from None
        x[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return x, np.array([label for _, label in items], np.int64)


def load_folder(path: str, input_shape: tuple, mean=None, std=None, split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from a CIFAR binary folder or an image folder, shaped for the model's input."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{path}: not a folder")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if len(input_shape) != 4 or not all(isinstance(d, int) and d > 0 for d in input_shape[1:]):
        raise InputError(f"{path}: image data needs a model input of shape (N, C, H, W) with fixed C, H, W; the model has {list(input_shape)}")
    channels, height, width = input_shape[1:]
    if cifar_files(folder, split) is not None:
        x, y = read_cifar(folder, split, limit)
        if (channels, height, width) != (3, 32, 32):
            raise InputError(f"{path}: CIFAR images are 3x32x32 but the model takes {channels}x{height}x{width}")
    else:
        x, y = read_image_folder(folder, channels, height, width, limit)
    return _normalise(x, mean, std, path), y


def parse_floats(text: str | None) -> list[float] | None:
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406] (for --mean / --std)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated numbers such as 0.5,0.5,0.5, got {text!r}") from None
