"""Read the CLI's data files safely: ``.npy`` (one array for the model's single input) and ``.npz`` (arrays
keyed by input name, plus ``y`` labels). Never unpickles (allow_pickle=False)."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import InputError


def load_array_file(path: str) -> np.ndarray | dict[str, np.ndarray]:
    """An .npy array, or an .npz mapping of name -> array; clear errors for anything else."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path}: holds pickled Python objects, which are never loaded; save plain numeric arrays") from None
        raise InputError(f"{path}: not a NumPy .npy/.npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable NumPy .npy/.npz file ({type(exc).__name__})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        try:
            return {key: data[key] for key in data.files}
        except ValueError as exc:
            raise InputError(f"{path}: an array in the archive cannot be read without pickle ({exc}); save plain numeric arrays") from None
        finally:
            data.close()
    return data


def model_feeds(data, input_names: list[str], path: str) -> dict[str, np.ndarray]:
    """Feeds for the model's inputs from an .npy array (single-input models) or an .npz dict."""
    if isinstance(data, dict):
        missing = [n for n in input_names if n not in data]
        if missing and len(input_names) == 1 and "x" in data:
            return {input_names[0]: data["x"]}
        if missing:
            raise InputError(f"{path}: no array named {missing[0]!r} (model inputs: {', '.join(input_names)}; file has: {', '.join(data) or 'nothing'})")
        return {n: data[n] for n in input_names}
    if len(input_names) != 1:
        raise InputError(f"{path}: one array given but the model has inputs {', '.join(input_names)}; save an .npz keyed by input name")
    return {input_names[0]: data}


def labels(data, path: str, n_samples: int, n_classes: int | None = None) -> np.ndarray:
    """Integer labels ``y`` from an .npz, checked against the number of samples and classes."""
    if not isinstance(data, dict) or "y" not in data:
        raise InputError(f"{path}: needs an array 'y' of integer labels for evaluation")
    y = np.asarray(data["y"])
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise InputError(f"{path}: 'y' must be a 1-D array of integer labels, got shape {y.shape} dtype {y.dtype}")
    if len(y) != n_samples:
        raise InputError(f"{path}: 'y' has {len(y)} labels for {n_samples} samples")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        raise InputError(f"{path}: labels must lie in [0, {n_classes}) for a model with {n_classes} outputs; found {y.min()}..{y.max()}")
    return y
