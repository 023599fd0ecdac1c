"""Evaluation data folders: CIFAR-10/100 binary versions and image folders, built here as tiny synthetic files."""
import numpy as np
import onnx
import pytest
from conftest import GraphBuilder

from converter import InputError
from converter.cli import main
from converter.datasets import load_folder


def write_cifar(folder, n, label_bytes, name):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, (n, label_bytes)).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    folder.mkdir(exist_ok=True)
    np.concatenate([labels, pixels], axis=1).tofile(folder / name)
    return labels[:, -1].astype(np.int64), pixels.reshape(n, 3, 32, 32)


@pytest.mark.parametrize("flavour, label_bytes, name", [("cifar-10-batches-bin", 1, "test_batch.bin"), ("cifar-100-binary", 2, "test.bin")])
def test_cifar_binary_folders(tmp_path, flavour, label_bytes, name):
    y, pixels = write_cifar(tmp_path / flavour, 7, label_bytes, name)
    x, labels = load_folder(str(tmp_path / flavour), ("N", 3, 32, 32), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(x, (pixels / 255.0 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    assert x.dtype == np.float32 and x.shape == (7, 3, 32, 32)


def test_cifar_errors_name_the_problem(tmp_path):
    folder = tmp_path / "c10"
    write_cifar(folder, 2, 1, "test_batch.bin")
    with open(folder / "test_batch.bin", "ab") as f:
        f.write(b"xx")
    with pytest.raises(InputError, match="not a whole number of 3073-byte CIFAR records"):
        load_folder(str(folder), ("N", 3, 32, 32))
    with pytest.raises(InputError, match="data_batch_1.bin is missing for the train split"):
        load_folder(str(folder), ("N", 3, 32, 32), split="train")
    with pytest.raises(InputError, match="CIFAR images are 3x32x32"):
        (folder / "test_batch.bin").write_bytes(b"\x01" * 3073)
        load_folder(str(folder), ("N", 1, 28, 28))


def make_image_folder(root, with_labels_file):
    from PIL import Image
    rng = np.random.default_rng(1)
    expected = []
    for i in range(4):
        cls = i % 2
        sub = root if with_labels_file else root / f"class_{cls}"
        sub.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (20 + i, 24, 3)).astype(np.uint8)
        Image.fromarray(img).save(sub / f"img{i}.png")
        expected.append((sub / f"img{i}.png", cls))
    if with_labels_file:
        (root / "labels.txt").write_text("".join(f"{p.name} {c}\n" for p, c in expected))
    return expected


@pytest.mark.parametrize("with_labels_file", [True, False])
def test_image_folder(tmp_path, with_labels_file):
    expected = make_image_folder(tmp_path / "imgs", with_labels_file)
    x, y = load_folder(str(tmp_path / "imgs"), ("N", 3, 16, 16))
    assert x.shape == (4, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert sorted(y.tolist()) == sorted(c for _, c in expected)


def test_labels_file_cannot_escape_the_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "labels.txt").write_text("../secret.png 1\n")
    with pytest.raises(InputError, match="points outside"):
        load_folder(str(tmp_path / "imgs"), ("N", 3, 8, 8))


def test_evaluate_reads_a_cifar_folder(tmp_path, capsys):
    b = GraphBuilder(0)
    y = b.gemm(b.relu(b.node("Flatten", [b.node("GlobalAveragePool", [b.relu(b.conv("x", 3, 4, pads=[1, 1, 1, 1]))])])), 4, 10)
    onnx.save(b.model([("x", ["N", 3, 32, 32])], [y]), tmp_path / "m.onnx")
    write_cifar(tmp_path / "cifar-10-batches-bin", 6, 1, "test_batch.bin")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((8, 3, 32, 32)).astype(np.float32))
    code = main(["evaluate", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npy"), "--data", str(tmp_path / "cifar-10-batches-bin"),
                 "--mean", "0.49,0.48,0.45", "--std", "0.25,0.24,0.26", "--timesteps", "4", "--limit", "5", "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0, capsys.readouterr().err
    import json
    assert json.loads((tmp_path / "r.json").read_text())["samples"] == 5
