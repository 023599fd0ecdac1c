"""How fast could the event-driven runtime be on this machine? The scatter's floors, the honesty check of issue #18.

For each model at T, batch B (one process):

* budgets, from baselines measured here: 10 x onnxruntime on the ANN and, with the [bench] extra,
  SpikingJelly / 10 (the run times issue #18's T = 16 targets allow);
* our engine's run (auto, float32, all cores) and the additions its event kernels do (counted from their
  inputs: more than ``stats['total_synops']`` when a Conv reads pooled spikes);
* the cost per SynOp of the fused Conv+IF kernel's scatter (1 thread, CPU time), for every 3x3 Conv on spikes
  in the model, on random spikes at the model's mean firing rate: (time at that density - time with no
  spike) / SynOps, with float32 sums (the default engine) and float64 sums (``precision="float64"``), and the
  float32 cost over the float32 add floor of the same output width (issue #18: within 1.5x);
* the machine's add floor: a loop doing only the scatter's contiguous adds (one block of KW x O per kernel row
  and event, at random places in an accumulator that fits in L1), float64 and float32.

The floor of a run is its event additions x the best ns per addition / cores: the scatter alone with perfect scaling,
without event scans, neuron updates or pooling (printed apart: the fused kernel's time with no spike, per
neuron-step, times the run's neuron-steps). A budget below a floor cannot be met by that kind of kernel
on this machine. Usage:

    python benchmarks/scatter_floor.py [--models mnist_vgg,mnist_resnet] [--timesteps 16] [--batch 256] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numba
import numpy as np
import onnx
import onnxruntime as ort
from numba import njit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_speed import best_of, machine, spikingjelly_net  # noqa: E402

import converter  # noqa: E402
import runtime  # noqa: E402
from runtime import engine  # noqa: E402
from runtime.engine import _conv_weights  # noqa: E402
from runtime.kernels.conv import conv2d_events_if  # noqa: E402
from runtime.plan import compile_plan  # noqa: E402

MICRO_ELEMENTS = 4_000_000  # input elements (T x N x C x H x W) per kernel micro-run


@njit(cache=True)
def adds_only(acc, w, starts, length):
    """acc[starts[e, r] : +length] += w[r * length : +length] for every event e and kernel row r."""
    for e in range(starts.shape[0]):
        for r in range(starts.shape[1]):
            a = np.uint64(starts[e, r])
            w0 = np.uint64(r * length)
            for o in range(np.uint64(length)):
                acc[a + o] += w[w0 + o]


def conv_adds(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_out: int, groups: int) -> int:
    """The event scatter's additions for a (..., C, H, W) input: each non-zero input adds O / groups weights for
    every kernel tap that reaches an output (``tap_targets`` rows / cols >= 0)."""
    nonzero = np.count_nonzero(x.reshape((-1,) + x.shape[-2:]), axis=0)  # (H, W) over samples, steps, channels
    return int((n_out // groups) * np.einsum("yx,y,x->", nonzero, (rows >= 0).sum(1), (cols >= 0).sum(1)))


def event_adds(session, feeds: dict, steps: int) -> int:
    """The additions the engine's event kernels do in one run: counted from their actual inputs (spikes, or the
    pooled spikes a Conv after an AveragePool reads, which ``stats['total_synops']`` does not count)."""
    total = [0]
    real = {k: getattr(engine, k) for k in ("conv2d_events", "conv2d_events_if", "matmul_events")}

    def counting_conv(kernel):  # both conv kernels take (x, wt, wflip, bias, rows, cols, pad_w, groups, ...)
        def counted(x, wt, wflip, bias, rows, cols, pad_w, groups, *rest):
            total[0] += conv_adds(x, rows, cols, bias.shape[0], groups)
            return kernel(x, wt, wflip, bias, rows, cols, pad_w, groups, *rest)
        return counted

    def matmul(x, w, bias, *rest):
        total[0] += int(np.count_nonzero(x)) * bias.shape[0]
        return real["matmul_events"](x, w, bias, *rest)

    engine.conv2d_events = counting_conv(real["conv2d_events"])
    engine.conv2d_events_if = counting_conv(real["conv2d_events_if"])
    engine.matmul_events = matmul
    try:
        session.run(None, feeds, timesteps=steps)
    finally:
        for k, v in real.items():
            setattr(engine, k, v)
    return total[0]


def add_floor(dtype, n_out: int, kernel: int = 3, events: int = 200_000) -> float:
    """ns per add (= per SynOp) of ``adds_only`` with KW x O blocks, in a 32 KB accumulator."""
    length = kernel * n_out
    slots = max(1, 32768 // np.dtype(dtype).itemsize // n_out - kernel)
    rng = np.random.default_rng(0)
    starts = (rng.integers(0, slots, (events, kernel)) * n_out).astype(np.int64)
    acc = np.zeros((slots + kernel) * n_out, dtype)
    w = rng.standard_normal(kernel * length).astype(dtype)
    adds_only(acc, w, starts[:10], length)  # compile / load
    _, cpu, _ = best_of(lambda: adds_only(acc, w, starts, length), 5)
    return cpu / (events * kernel * length) * 1e9


def spike_convs(ann_path: str) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, input (C, H, W)) of every 3x3, stride-1 Conv whose input is not the graph input."""
    model = onnx.shape_inference.infer_shapes(onnx.load(ann_path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    inputs = {i.name for i in model.graph.input}
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type == "Conv" and node.input[0] not in inputs and node.input[0] in shapes
                and list(inits[node.input[1]].dims[2:]) == [3, 3] and list(attrs.get("strides", [1, 1])) == [1, 1]):
            found.append((node.name, tuple(shapes[node.input[0]][1:])))
    return found


def kernel_cost(plan, name: str, in_chw: tuple, density: float, timesteps: int, dtype) -> dict:
    """ns per SynOp of the fused kernel's scatter and ns per output neuron-step of everything else (1 thread)."""
    step = next(s for s in plan.steps if s.name == name)
    w, b = plan.constants[step.inputs[1]], plan.constants[step.inputs[2]]
    c, h, wd = in_chw
    n = max(1, MICRO_ELEMENTS // (timesteps * c * h * wd))
    cw = _conv_weights(step, w, b, (n, c, h, wd), dtype)
    n_out, (ho, wo) = w.shape[0], cw.out_hw
    wt, wflip, bias = cw.wt, cw.wflip, cw.bias
    rng = np.random.default_rng(1)

    def run(x):
        v = np.full(n * ho * wo * n_out, 0.5, np.float32)
        out = np.empty((timesteps, n, n_out, ho, wo), np.float32)
        conv2d_events_if(x, wt, wflip, bias, cw.rows, cw.cols, cw.pad_w, cw.groups, np.array([ho, wo], np.int64),
                         np.empty((0,) * 5, np.float32), np.ones(n_out, np.float32), np.zeros(n_out, np.float32), True, 1,
                         v, np.zeros(0, np.int32), np.empty(0, np.int64), 1.0, out, np.zeros((1, timesteps), np.int64), np.zeros((1, 1), np.int64))

    quiet = np.zeros((timesteps, n, c, h, wd), np.float32)
    spikes = (rng.random(quiet.shape) < density).astype(np.float32)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # one block of samples: one thread works, the others must not spin on the CPU clock
    try:
        run(quiet)  # compile / load
        base = best_of(lambda: run(quiet), 5)[1]
        busy = best_of(lambda: run(spikes), 5)[1]
    finally:
        numba.set_num_threads(threads)
    return {"ns_per_synop": (busy - base) / conv_adds(spikes, cw.rows, cw.cols, n_out, cw.groups) * 1e9, "ns_per_neuron_step": base / (timesteps * n * ho * wo * n_out) * 1e9}


def measure_model(name: str, data: np.ndarray, calib: np.ndarray, steps: int, cores: int, floors: dict) -> dict:
    """Budgets, our engine's run, the per-layer kernel costs and the floors of one model (printed as it goes)."""
    ann = str(ROOT / "models" / f"{name}.onnx")
    snn = converter.convert(ann, calib, timesteps=steps, progress=False).model
    plan = compile_plan(snn)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cores
    ort_sess = ort.InferenceSession(ann, opts, providers=["CPUExecutionProvider"])
    feeds = {ort_sess.get_inputs()[0].name: data}
    ours = runtime.InferenceSession(snn, threads=cores)
    synops = event_adds(ours, feeds, steps)  # also the first call (compile / load)
    t_ours = best_of(lambda: ours.run(None, feeds, timesteps=steps), 3)[0]
    stats = ours.stats
    neuron_steps = sum(layer["neurons"] for layer in stats["layers"]) * stats["batch"] * stats["timesteps"]  # no early stop
    density = stats["total_spikes"] / neuron_steps
    budgets = {"10 x onnxruntime": 10 * best_of(lambda: ort_sess.run(None, feeds), 9)[0]}
    sj, note = spikingjelly_net(snn, cores)
    if sj is not None:
        sj(data, steps)
        budgets["SpikingJelly / 10"] = best_of(lambda: sj(data, steps), 2)[0] / 10
    else:
        print(f"  SpikingJelly unavailable ({note})")
    layers = []
    for conv_name, chw in spike_convs(ann):
        row = {"conv": conv_name, "input": list(chw)}
        for dtype in (np.float64, np.float32):
            row[np.dtype(dtype).name] = kernel_cost(plan, conv_name, chw, density, steps, dtype)
        n_out = plan.constants[next(s for s in plan.steps if s.name == conv_name).inputs[1]].shape[0]
        nearest = min(floors["float32"], key=lambda o: abs(o - n_out))  # the floor measured for this output width
        row["float32_over_add_floor"] = row["float32"]["ns_per_synop"] / floors["float32"][nearest]
        layers.append(row)
    best = {k: min(r[k]["ns_per_synop"] for r in layers) for k in ("float64", "float32")}
    run_floors = {f"fused kernel scatter, {k}": synops * v * 1e-9 / cores for k, v in best.items()}
    run_floors.update({f"adds only, {k}": synops * min(d.values()) * 1e-9 / cores for k, d in floors.items()})
    rest = neuron_steps * min(r["float32"]["ns_per_neuron_step"] for r in layers) * 1e-9 / cores
    print(f"\n{name}  T={steps}  batch={len(data)}: {synops / 1e9:.2f} G additions in the event kernels "
          f"(stats' SynOps {stats['total_synops'] / 1e9:.2f} G), mean firing rate {density:.3f}; "
          f"our engine (auto, {cores} threads) {t_ours:.3f} s")
    for r in layers:
        print(f"  {r['conv']:<40} in {r['input']}: scatter ns/SynOp float64 {r['float64']['ns_per_synop']:.3f}, "
              f"float32 {r['float32']['ns_per_synop']:.3f} ({r['float32_over_add_floor']:.2f}x the float32 add floor; target <= 1.5); "
              f"rest ns/neuron-step float32 {r['float32']['ns_per_neuron_step']:.2f}")
    print("  budgets (s): " + "; ".join(f"{k} {v:.3f}" for k, v in budgets.items()))
    for k, v in run_floors.items():
        verdict = ", ".join(f"{'above' if v > b else 'below'} {bk}" for bk, b in budgets.items())
        print(f"  floor {k:<32} {v:.3f} s  ({verdict})")
    print(f"  plus the fused kernels' work without spikes (event scan, bias, rounding, neuron update, spike "
          f"copy-out) at its lowest measured rate: {rest:.3f} s for {neuron_steps / 1e6:.0f} M neuron-steps")
    return {"event_adds": synops, "stats_synops": stats["total_synops"], "firing_rate": density, "engine_s": t_ours, "budgets_s": budgets, "layers": layers,
            "floors_s": run_floors, "no_spike_work_s": rest}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_vgg,mnist_resnet")
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", help="write the measurements as JSON")
    args = ap.parse_args(argv)
    cores, steps = os.cpu_count() or 1, args.timesteps
    data = np.load(ROOT / "models" / "mnist_eval.npz")["image"][:args.batch].astype(np.float32)
    calib = np.load(ROOT / "models" / "mnist_calib.npz")["image"].astype(np.float32)
    info = machine()
    print(f"machine: {info['cpu']}, {cores} cores, load average {info['load_average']}")
    floors = {}
    for dtype in (np.float64, np.float32):
        floors[np.dtype(dtype).name] = {o: add_floor(dtype, o) for o in (16, 32, 64)}
    print("add floor, ns per add, 1 thread (O = 16 / 32 / 64 output channels): "
          + "; ".join(f"{k} " + " / ".join(f"{v:.3f}" for v in d.values()) for k, d in floors.items()))
    results = {"machine": info, "add_floor_ns": floors, "models": {}}
    for name in args.models.split(","):
        results["models"][name] = measure_model(name, data, calib, steps, cores, floors)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
