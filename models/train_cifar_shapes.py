"""Train and export the seed paper's three networks (CIFAR-Net, VGG-16, ResNet-20) at their published shapes
(development only; not part of the package).

Deng & Gu (ICLR 2021) evaluate on CIFAR-10/100 with CIFAR-Net, VGG-16 and ResNet-20. We have no CIFAR
offline, so these models keep the CIFAR input shape (3 x 32 x 32) and are trained on the MNIST subset of
``train_models.py`` (same seed-0 splits: train 3,500 / calib 500 / eval 1,000), transformed by
``to32`` below: pad 2 px of zeros on each side (28 -> 32) and replicate the grey channel 3 times; pixels stay
in [0, 1], no mean/std normalisation. The transform is applied at load time (benchmarks/paper_networks.py
uses the same function), so no extra data files are stored.

Architectures (``arch`` below):

* ``cifarnet`` -- the small CIFAR-10 CNN used in the conversion literature since Cao, Chen & Khosla,
  "Spiking Deep Convolutional Neural Networks for Energy-Efficient Object Recognition", IJCV 113 (2015),
  and Diehl et al. (IJCNN 2015), after the cuda-convnet / Caffe ``cifar10_quick`` net: 32c5-P-32c5-P-64c5-P
  (5x5, pad 2, 2x2 pooling) then fc 64 and fc 10. Conversion papers use average pooling; so do we.
* ``vgg16`` -- VGG-16 (Simonyan & Zisserman 2015, configuration D) as adapted to CIFAR by conversion papers
  (e.g. Sengupta et al., Front. Neurosci. 2019; Deng & Gu 2021): 13 3x3 conv layers (64-64-P-128-128-P-
  256x3-P-512x3-P-512x3-P) with BatchNorm, average pooling instead of max pooling, then 3 fc layers
  (4096-4096-10 at full width). The committed files are width-reduced: conv widths / 4 (16 ... 128) and fc
  512-512-10, so each ONNX file stays under 5 MB; ``--width 1`` builds the full one. ``vgg16_maxpool`` is
  the same net with MaxPool, to exercise the converter's gated spiking max pooling.
* ``resnet20`` -- ResNet-20 for CIFAR (He et al., CVPR 2016, section 4.2): 3x3 conv 16, then 3 stages x 3
  basic blocks with 16/32/64 channels, global average pooling, fc 10; option-B (1x1 conv + BN) projection
  shortcuts where the shape changes.

Each comes with plain ReLU and, separately (``*_clip``), with learned clipped ReLUs min(relu(x), b) --
the threshold-ReLU training of the paper -- exported as Clip(0, b).

Training (2-core machine, so short): Adam + one-cycle, batch 64, +-2 px random shifts, the epochs in
CONFIGS (fewer than the papers' hundreds: MNIST needs few). Usage::

    python models/train_cifar_shapes.py [--only cifarnet vgg16_w4 ...] [--width 4]
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_models as tm  # noqa: E402  (data loading, training loop, export + onnxruntime check)


def to32(x: np.ndarray) -> np.ndarray:
    """MNIST (N, 1, 28, 28) -> CIFAR shape (N, 3, 32, 32): zero-pad 2 px each side, replicate to 3 channels."""
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x, 3, axis=1), dtype=np.float32)


def load_mnist32_npz(split: str) -> tuple[np.ndarray, np.ndarray]:
    """models/mnist_{split}.npz transformed by to32 (what the benchmarks feed these models)."""
    d = np.load(os.path.join(HERE, f"mnist_{split}.npz"))
    return to32(d["image"]), d["y"]


def act(clip: bool) -> nn.Module:
    return tm.ClippedReLU() if clip else nn.ReLU()


class CIFARNet(nn.Module):
    """32c5-AP2-32c5-AP2-64c5-AP2-fc64-fc10 (Cao et al. 2015 / cifar10_quick), average pooling."""

    def __init__(self, clip: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), act(clip), nn.AvgPool2d(2),    # 32 -> 16
            nn.Conv2d(32, 32, 5, padding=2), act(clip), nn.AvgPool2d(2),   # 16 -> 8
            nn.Conv2d(32, 64, 5, padding=2), act(clip), nn.AvgPool2d(2),   # 8 -> 4
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), act(clip), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


VGG16_CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")


class VGG16(nn.Module):
    """VGG-16 (13 conv with BN + 3 fc) for 32x32 input; widths divided by ``width``; avg or max pooling."""

    def __init__(self, clip: bool = False, width: int = 4, pool: str = "avg") -> None:
        super().__init__()
        layers, cin = [], 3
        for v in VGG16_CFG:
            if v == "P":
                layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v // width, 3, padding=1), nn.BatchNorm2d(v // width), act(clip)]
                cin = v // width
        self.features = nn.Sequential(*layers)
        hidden = 4096 if width == 1 else 4096 // (2 * width)   # 512 at width/4 keeps the file < 5 MB
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin, hidden), act(clip), nn.Dropout(0.3),
                                        nn.Linear(hidden, hidden), act(clip), nn.Dropout(0.3), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class Block(nn.Module):
    """Basic block with option-B (1x1 conv + BN) shortcut on shape change; activations are modules."""

    def __init__(self, cin: int, cout: int, stride: int, clip: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act(clip)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act(clip)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 (He et al. 2016, CIFAR): conv16 + 3 stages x 3 blocks (16/32/64) + GAP + fc10."""

    def __init__(self, clip: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), act(clip))
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(Block(cin, cout, stride if i == 0 else 1, clip))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def configs(width: int) -> dict:
    """name -> training config (train_models.train's keys). Epochs are few: the machine has 2 shared cores."""
    w = f"vgg16_w{width}" if width != 1 else "vgg16"
    base = dict(data="mnist32", lr=2e-3, batch=64, shift=2, wd=1e-4)
    return {
        "cifarnet": dict(base, build=lambda: CIFARNet(False), epochs=10, arch="cifarnet"),
        "cifarnet_clip": dict(base, build=lambda: CIFARNet(True), epochs=10, arch="cifarnet"),
        w: dict(base, build=lambda: VGG16(False, width), epochs=8, arch=f"vgg16 width/{width}"),
        f"{w}_clip": dict(base, build=lambda: VGG16(True, width), epochs=8, arch=f"vgg16 width/{width}"),
        f"{w}_maxpool": dict(base, build=lambda: VGG16(False, width, "max"), epochs=8, arch=f"vgg16 width/{width}, MaxPool"),
        "resnet20": dict(base, build=lambda: ResNet20(False), epochs=6, arch="resnet20 option B"),
        "resnet20_clip": dict(base, build=lambda: ResNet20(True), epochs=6, arch="resnet20 option B"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="MODEL", help="train only these (default: all in CONFIGS)")
    ap.add_argument("--width", type=int, default=4, help="VGG-16 width divisor (default 4; 1 = full width)")
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--train-limit", type=int, default=0, help="first N training images only (default: all 3,500)")
    ap.add_argument("--epochs", type=int, default=0, help="override the epochs of CONFIGS (default: as listed)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: much faster than 2 on a busy 2-core machine)")
    ap.add_argument("--no-json", action="store_true", help="do not add entries to models.json (e.g. full-width VGG in a benchmark)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    cfgs = configs(args.width)
    names = args.only or list(cfgs)
    unknown = sorted(set(names) - set(cfgs))
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; choices: {', '.join(cfgs)}")
    raw = tm.load_mnist_splits()
    splits = {k: (to32(x), y) for k, (x, y) in raw.items()}
    if args.train_limit:
        splits["train"] = tuple(a[:args.train_limit] for a in splits["train"])
    meta_path = os.path.join(HERE, "models.json")
    for name in names:
        cfg = dict(cfgs[name], epochs=args.epochs or cfgs[name]["epochs"])
        print(f"training {name} ...", flush=True)
        model, seconds = tm.train(name, cfg, splits)
        path = os.path.join(args.out_dir, f"{name}.onnx")
        x_eval, y_eval = splits["eval"]
        res = tm.export_and_verify(model, path, x_eval, y_eval)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"  {name}.onnx: onnxruntime eval acc {res['accuracy']:.4f}, {n_params} params, {seconds:.1f}s, "
              f"{os.path.getsize(path) / 1e6:.2f} MB", flush=True)
        if args.no_json:
            continue
        lock = open(os.path.join(tempfile.gettempdir(), "onnx2snn-models-json.lock"), "w")   # two trainings may run at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(meta_path) as f:   # re-read: other scripts write this file too
            meta = json.load(f)
        flags = (f" --width {args.width}" if "vgg16" in name and args.width != 4 else "") + \
            (f" --train-limit {args.train_limit}" if args.train_limit else "") + (f" --epochs {args.epochs}" if args.epochs else "")
        meta["models"][name] = {
            "file": f"{name}.onnx", "architecture": cfg["arch"],
            "input_name": "image", "input_shape": ["N", 3, 32, 32], "output_name": "logits", "output_shape": ["N", 10],
            "dataset": "mnist32",
            "transform": "models/mnist_{calib,eval}.npz images zero-padded 2 px per side to 32x32 and replicated to 3 channels "
                         "(models/train_cifar_shapes.py:to32); pixels / 255, no normalisation",
            "calib_file": "mnist_calib.npz", "eval_file": "mnist_eval.npz",
            "n_train": int(len(splits["train"][1])), "n_calib": 500, "n_eval": int(len(y_eval)),
            "ann_accuracy_eval_onnxruntime": round(res["accuracy"], 4),
            "onnx_vs_torch_max_abs_diff": float(f"{res['max_abs_diff']:.3g}"),
            "n_parameters": int(n_params), "epochs": cfg["epochs"], "train_seconds": round(seconds, 1), "opset": 13,
            "onnx_op_types": res["op_types"],
            "regenerate": f"python models/train_cifar_shapes.py --only {name}{flags}",
        }
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
