"""Where the float32 dense path beats the fused event path: one Conv + IF layer, by input density, T and burst.

For each of the bundled CNNs' layer shapes (3x3, pad 1), random spikes of a given density, T steps: CPU time of
the fused event kernel (Conv + IF in one pass, ``engine._conv_neuron``) against the dense path (onnxruntime's
Conv on the (T x N) stack, then the IF layer kernel: ``engine._conv`` + ``engine._neuron``), best of --repeats,
all in one process. Prints event / dense per cell (below 1: the event path is faster) and the crossover density
per row (the first density where the dense path wins). docs/runtime.md (session 9) says why float32's auto
still takes the event path for every spiking input. Usage:

    python benchmarks/path_crossover.py [--batch 64] [--timesteps 1,4,16] [--bursts 1,8] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.engine import KernelCache, _conv, _conv_neuron, _neuron  # noqa: E402
from runtime.format import NeuronParams  # noqa: E402
from runtime.plan import Step  # noqa: E402

SHAPES = [(16, 16, 28), (16, 32, 14), (32, 32, 14), (32, 64, 7), (64, 64, 7)]  # (C in, C out, H = W)
DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def cpu_best(fn, repeats: int) -> float:
    fn()  # compile and warm the caches
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def layer(c_in: int, c_out: int, burst: int, rng):
    conv = Step("conv", "Conv", ("x", "w", "b"), ("y",), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    v_th = np.full(c_out, 0.5 / burst, np.float32)
    neuron = Step("if", "IFNeuron", ("y",), ("s",), {}, NeuronParams(v_th, np.zeros(c_out, np.float32),
                                                                      v_th / 2, "subtract", False, burst))
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)
    return conv, neuron, w, rng.standard_normal(c_out).astype(np.float32) * 0.1


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--timesteps", default="1,4,16")
    ap.add_argument("--bursts", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, {numba.get_num_threads()} threads; CPU time event / dense (< 1: event faster)")
    print(f"{'layer':>16} {'T':>3} {'B':>2} " + " ".join(f"{d:>5}" for d in DENSITIES) + "  crossover")
    for c_in, c_out, hw in SHAPES:
        for burst in map(int, args.bursts.split(",")):
            conv, neuron, w, b = layer(c_in, c_out, burst, rng)
            for t in map(int, args.timesteps.split(",")):
                ratios = []
                for d in DENSITIES:
                    x = (rng.random((t, args.batch, c_in, hw, hw)) < d).astype(np.float32) * np.float32(0.5)
                    consts = [(w, False), (b, False)]
                    event_cache, dense_cache = KernelCache("event"), KernelCache("dense")
                    event = cpu_best(lambda: _conv_neuron(conv, neuron, [(x, True)] + consts, None, event_cache, t, None,
                                                          keep_state=False), args.repeats)
                    dense = cpu_best(lambda: _neuron(neuron, _conv(conv, [(x, True)] + consts, dense_cache, t), t, None),
                                     args.repeats)
                    ratios.append(event / dense)
                cross = next((d for d, r in zip(DENSITIES, ratios) if r > 1), None)
                print(f"{f'{c_in}->{c_out} {hw}x{hw}':>16} {t:>3} {burst:>2} " + " ".join(f"{r:5.2f}" for r in ratios)
                      + f"  {'none' if cross is None else cross}")


if __name__ == "__main__":
    main()
