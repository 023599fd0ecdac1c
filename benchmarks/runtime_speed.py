"""Runtime speed on the bundled MNIST CNNs: onnxruntime (ANN floor), NumPy reference, our engine, SpikingJelly.

For each model, batch and T (one process, one run): best-of-N wall time, the ratio to onnxruntime on the ANN
and to SpikingJelly's multi-step CPU simulation of the same converted SNN, SynOps/s, and the peak memory of NumPy
arrays in one run of our engine. SpikingJelly rows need the [bench] extra (torch==2.13.0, spikingjelly); without it they
are printed as unavailable. Usage:

    python benchmarks/runtime_speed.py [--models mnist_vgg,mnist_resnet] [--batches 1,256] [--timesteps 8,16,32]
                                       [--repeats 3] [--json OUT.json]

Every row is the best of --repeats runs, except the NumPy reference and the dense path at batch > 1 (one run
each: they take seconds to minutes). Times are wall-clock; on a shared machine, look at the load average and
the "cpu (s)" column (CPU time of the best run, all threads summed), which load inflates much less.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import converter  # noqa: E402
import runtime  # noqa: E402
from runtime.plan import compile_plan  # noqa: E402

def best_of(fn, repeats):
    """(best wall seconds, CPU seconds of that run, last result). CPU time is the process's, all threads summed:
    on a loaded machine it is the steadier measure of the work done."""
    times, result = [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    wall, cpu = min(times)
    return wall, cpu, result


def peak_numpy_mb(fn):
    """Peak of NumPy-allocated memory during one extra (untimed) call, by tracemalloc. It sees every array
    the engine allocates (not Numba's small per-thread scratch, nor PyTorch's or onnxruntime's own memory)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def spikingjelly_net(snn_model, threads):
    """The converted SNN rebuilt in PyTorch + SpikingJelly (IFNode, soft reset, multi-step); None if unavailable."""
    try:
        import torch
        import torch.nn.functional as F
        from spikingjelly.activation_based import functional, neuron
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed here"
        return None, f"{type(exc).__name__}: {exc}"
    torch.set_num_threads(threads)
    plan = compile_plan(snn_model)
    consts = {k: torch.from_numpy(np.array(v)) for k, v in plan.constants.items()}
    neurons = {}
    for s in plan.neurons:
        p = s.neuron
        if p.reset != "subtract":
            return None, "zero-reset neurons are not mapped"
        # Per-channel V_th: a unit-threshold IFNode on (x + shift) / V_th, spikes scaled back by V_th.
        neurons[s.name] = (neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m"),
                           torch.from_numpy(p.v_th.copy()), torch.from_numpy(p.shift.copy()),
                           torch.from_numpy((p.v_init / p.v_th).astype(np.float32)))

    def forward(x, timesteps):
        env = dict(consts)
        env[plan.inputs[0].name] = x.unsqueeze(0).repeat((timesteps,) + (1,) * x.dim())  # (T, B, ...)
        for s in plan.steps:
            a = [env[n] if n else None for n in s.inputs]
            merge = lambda t: t.flatten(0, 1)  # noqa: E731 - multi-step layers run on (T*B, ...)
            split = lambda t: t.reshape((timesteps, -1) + tuple(t.shape[1:]))  # noqa: E731
            if s.neuron is not None:
                node, v_th, shift, v0 = neurons[s.name]
                view = (-1,) + (1,) * (a[0].dim() - 3)  # channel axis 2 of (T, B, C, ...)
                v_th, shift = v_th.view(view), shift.view(view)
                node.v = v0.view(view).expand(a[0].shape[1:]).clone()  # initial membrane (scaled), per sample
                y = node((a[0] + shift) / v_th) * v_th
            elif s.op == "Conv":
                y = split(F.conv2d(merge(a[0]), a[1], a[2], stride=s.attrs.get("strides", [1, 1]),
                                   padding=s.attrs.get("pads", [0, 0, 0, 0])[:2], groups=s.attrs.get("group", 1)))
            elif s.op == "Gemm":
                y = split(F.linear(merge(a[0]), a[1] if s.attrs.get("transB", 0) else a[1].T, a[2]))
            elif s.op == "AveragePool":
                y = split(F.avg_pool2d(merge(a[0]), s.attrs["kernel_shape"], s.attrs.get("strides")))
            elif s.op == "GlobalAveragePool":
                y = a[0].mean(dim=(-2, -1), keepdim=True)
            elif s.op == "Flatten":
                y = a[0].flatten(2)
            elif s.op == "Add":
                y = a[0] + a[1]
            else:
                raise NotImplementedError(f"op {s.op} not mapped to PyTorch")
            env[s.outputs[0]] = y
        skip = plan.readout_start if timesteps > plan.readout_start else 0  # delayed readout (runtime/readout.py)
        return env[plan.outputs[0].name][skip:].mean(0)

    def run(x, timesteps):
        with torch.no_grad():
            for node, *_ in neurons.values():
                functional.reset_net(node)
            return forward(torch.from_numpy(x), timesteps).numpy()
    import spikingjelly
    return run, f"spikingjelly {getattr(spikingjelly, '__version__', '?')}, torch {torch.__version__}"


def machine():
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": ort.__version__, "load_average": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist_vgg,mnist_resnet")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--timesteps", default="8,16,32")
    ap.add_argument("--repeats", type=int, default=3, help="best of N for the fast rows (slow rows run once)")
    ap.add_argument("--engines", default="event,dense,auto", help="our engine's paths to time")
    ap.add_argument("--json", help="write every row as JSON")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, min(2, cores)})
    data = np.load(ROOT / "models" / "mnist_eval.npz")["image"].astype(np.float32)
    calib = np.load(ROOT / "models" / "mnist_calib.npz")["image"].astype(np.float32)
    rows, info = [], machine()
    t0 = time.perf_counter()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']}")
    for name in args.models.split(","):
        ann = str(ROOT / "models" / f"{name}.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cores
        ort_sess = ort.InferenceSession(ann, opts, providers=["CPUExecutionProvider"])
        in_name = ort_sess.get_inputs()[0].name
        for steps in [int(t) for t in args.timesteps.split(",")]:
            snn = converter.convert(ann, calib, timesteps=steps, progress=False).model
            sj, sj_note = spikingjelly_net(snn, cores)
            sessions = {(mode, n): runtime.InferenceSession(snn, threads=n, engine=mode)
                        for mode in args.engines.split(",") for n in thread_counts}
            if "first_call_s" not in info:  # JIT compile, or load from Numba's on-disk cache, reported apart from run time
                first = time.perf_counter()
                for sess in sessions.values():
                    sess.run(None, {in_name: data[:1]}, timesteps=steps)
                info["first_call_s"] = time.perf_counter() - first
                print(f"first calls of the kernels (compile or load from the on-disk cache): {info['first_call_s']:.2f} s")
            reference = runtime.InferenceSession(snn, engine="reference")
            for batch in [int(b) for b in args.batches.split(",")]:
                x = data[:batch]
                feeds = {in_name: x}
                base = dict(model=name, T=steps, batch=batch)
                t_ort, c_ort, _ = best_of(lambda: ort_sess.run(None, feeds), args.repeats * 3)
                rows.append(dict(base, engine="onnxruntime ANN", threads=cores, seconds=t_ort, cpu_seconds=c_ort, peak_mb=None))
                t_ref, c_ref, ref_out = best_of(lambda: reference.run(None, feeds, timesteps=steps)[0], 1)
                rows.append(dict(base, engine="numpy reference", threads=1, seconds=t_ref, cpu_seconds=c_ref, peak_mb=None,
                                 synops=reference.stats["total_synops"]))
                outs = {}
                for (mode, n), sess in sessions.items():
                    reps = 1 if mode == "dense" and batch > 1 else args.repeats
                    t, cpu, out = best_of(lambda: sess.run(None, feeds, timesteps=steps)[0], reps)
                    m = peak_numpy_mb(lambda: sess.run(None, feeds, timesteps=steps)) if mode != "dense" or batch == 1 else None
                    outs[(mode, n)] = out
                    rows.append(dict(base, engine=f"onnx2snn {mode}", threads=n, seconds=t, cpu_seconds=cpu, peak_mb=m,
                                     synops=sess.stats["total_synops"],
                                     max_abs_vs_reference=float(np.abs(out - ref_out).max()),
                                     paths=sorted(set(sess.stats.get("node_path", {}).values()))))
                one = [o for (mode, n), o in outs.items() if n == thread_counts[0]]
                many = [o for (mode, n), o in outs.items() if n == thread_counts[-1]]
                identical = all(np.array_equal(a, b) for a, b in zip(one, many))
                for r in rows[-len(outs):]:
                    r["bit_identical_across_threads"] = identical
                if sj is None:
                    rows.append(dict(base, engine="spikingjelly", threads=cores, seconds=None, note=f"unavailable ({sj_note})"))
                else:
                    sj(x, steps)  # warm-up
                    t, cpu, out = best_of(lambda: sj(x, steps), args.repeats)
                    agree = float(np.mean(out.argmax(1) == ref_out.argmax(1)))
                    rows.append(dict(base, engine="spikingjelly", threads=cores, seconds=t, cpu_seconds=cpu, peak_mb=None, note=sj_note,
                                     max_abs_vs_reference=float(np.abs(out - ref_out).max()), top1_agreement=agree))
                print_block(rows, base, os.getloadavg()[0])
    summary = acceptance(rows)
    print(summary["text"])
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows, "acceptance": summary["checks"]}, indent=2) + "\n")


def _find(rows, base, engine, threads=None):
    for r in rows:
        if all(r[k] == v for k, v in base.items()) and r["engine"] == engine and (threads is None or r["threads"] == threads):
            return r
    return None


def print_block(rows, base, load):
    ort_row, sj_row = _find(rows, base, "onnxruntime ANN"), _find(rows, base, "spikingjelly")
    print(f"\n{base['model']}  T={base['T']}  batch={base['batch']}  (1-minute load average {load:.1f})")
    print(f"  {'engine':<20} {'thr':>3} {'time (s)':>10} {'cpu (s)':>8} {'x ORT':>8} {'SJ / this':>9} {'GSynOps/s':>9} {'peak MB':>8}  notes  (peak MB: NumPy arrays of one run)")
    for r in rows:
        if not all(r[k] == v for k, v in base.items()):
            continue
        if r["seconds"] is None:
            print(f"  {r['engine']:<20} {r['threads']:>3} {'—':>10}  {r.get('note', '')}")
            continue
        vs_ort = r["seconds"] / ort_row["seconds"]
        vs_sj = f"{sj_row['seconds'] / r['seconds']:9.1f}" if sj_row and sj_row["seconds"] else f"{'—':>9}"
        rate = f"{r['synops'] / r['seconds'] / 1e9:9.2f}" if r.get("synops") else f"{'':>9}"
        peak = f"{r['peak_mb']:8.1f}" if r.get("peak_mb") is not None else f"{'':>8}"
        notes = []
        if "max_abs_vs_reference" in r:
            notes.append(f"max|Δref| {r['max_abs_vs_reference']:.1e}")
        if "top1_agreement" in r:
            notes.append(f"top-1 agree {r['top1_agreement']:.3f}")
        if r.get("bit_identical_across_threads") is False:
            notes.append("NOT bit-identical across threads")
        cpu = f"{r['cpu_seconds']:8.3f}" if r.get("cpu_seconds") is not None else f"{'':>8}"
        print(f"  {r['engine']:<20} {r['threads']:>3} {r['seconds']:10.4f} {cpu} {vs_ort:8.2f} {vs_sj} {rate} {peak}  {', '.join(notes)}")


def acceptance(rows):
    """The issue's acceptance ratios at T=16, batch 256 (auto engine), per model."""
    checks, lines = {}, ["\nacceptance (T=16, batch 256, auto):"]
    for model in sorted({r["model"] for r in rows}):
        base = dict(model=model, T=16, batch=256)
        two, one = _find(rows, base, "onnx2snn auto", 2), _find(rows, base, "onnx2snn auto", 1)
        ort_row, ref, sj = _find(rows, base, "onnxruntime ANN"), _find(rows, base, "numpy reference"), _find(rows, base, "spikingjelly")
        if not (two and one and ort_row and ref):
            continue
        c = {"vs_spikingjelly": sj["seconds"] / two["seconds"] if sj and sj["seconds"] else None,
             "vs_reference": ref["seconds"] / two["seconds"], "x_onnxruntime": two["seconds"] / ort_row["seconds"],
             "two_vs_one_thread": one["seconds"] / two["seconds"], "bit_identical": two["bit_identical_across_threads"],
             "max_abs_vs_reference": two["max_abs_vs_reference"]}
        checks[model] = c
        sj_text = f"{c['vs_spikingjelly']:.1f}x (target >=10)" if c["vs_spikingjelly"] else "unavailable"
        lines.append(f"  {model}: vs SpikingJelly {sj_text}; vs NumPy reference {c['vs_reference']:.1f}x (>=30); "
                     f"{c['x_onnxruntime']:.1f}x onnxruntime's time (<=4); 2 vs 1 thread {c['two_vs_one_thread']:.2f}x (>=1.7); "
                     f"bit-identical across threads {c['bit_identical']}; max|Δref| {c['max_abs_vs_reference']:.1e} (<=1e-5)")
    return {"checks": checks, "text": "\n".join(lines)}


if __name__ == "__main__":
    main()
