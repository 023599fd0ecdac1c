"""Draw docs/img/concepts.png, the guide's picture of how an IF neuron approximates a threshold ReLU.

Run from the repository root: python docs/img/make_concepts.py. The neuron here is the per-step rule of
docs/format.md (v += x + shift; spike V_th and subtract V_th when v >= V_th), written out in NumPy so that the
figure shows exactly what the runtime computes.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

V_TH, T = 1.0, 8
OUT = Path(__file__).resolve().parent / "concepts.png"


def if_neuron(x: float, timesteps: int, shift: float, v_init: float = 0.0):
    """Membrane after each step (before the reset is shown as a peak) and the spike train of one IF neuron."""
    v, trace, spikes = v_init, [v_init], []
    for _ in range(timesteps):
        v += x + shift
        trace.append(v)
        fired = v >= V_TH
        spikes.append(V_TH if fired else 0.0)
        if fired:
            v -= V_TH
            trace.append(v)
        else:
            trace.append(v)
    return np.array(trace), np.array(spikes)


def rate(x: np.ndarray, timesteps: int, shift: float) -> np.ndarray:
    """SNN output (mean of the spikes over T) of a constant input x, for every x."""
    return np.array([if_neuron(float(v), timesteps, shift)[1].mean() for v in x])


def main() -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = 0.37
    trace, spikes = if_neuron(x, T, shift=V_TH / (2 * T))
    steps = np.repeat(np.arange(T + 1), 2)[1:]     # integrate, then reset, at each step
    left.plot(steps, trace, color="tab:blue", label="membrane v")
    left.axhline(V_TH, color="tab:red", ls="--", label="threshold V_th")
    fired = np.nonzero(spikes)[0] + 1
    left.vlines(fired, 0, -0.25, color="black", lw=3, label="spike (height V_th)")
    left.set_xlabel("time step t")
    left.set_ylabel("membrane potential")
    left.set_title(f"one IF neuron, constant input x = {x}, shift V_th/2T, T = {T}\n"
                   f"{len(fired)} spikes: rate readout {spikes.mean():.3f} (ANN: {x})", fontsize=10)
    left.set_ylim(-0.35, 1.45)
    left.set_xticks(range(T + 1))
    left.legend(loc="upper left", fontsize=8, ncol=3)

    xs = np.linspace(-0.2, 1.5, 681)
    right.plot(xs, np.maximum(xs, 0), color="0.6", lw=3, label="ReLU (ANN)")
    right.plot(xs, np.clip(xs, 0, V_TH), color="black", lw=1.5, label="threshold ReLU, clip(x, 0, V_th)")
    right.plot(xs, rate(xs, T, 0.0), color="tab:orange", label=f"SNN rate, T = {T}, no shift (floor)")
    right.plot(xs, rate(xs, T, V_TH / (2 * T)), color="tab:blue", label=f"SNN rate, T = {T}, shift V_th/2T (rounds)")
    right.axvline(V_TH, color="tab:red", ls="--", lw=1)
    right.text(V_TH + 0.02, 0.05, "V_th", color="tab:red")
    right.set_xlabel("input current x (ANN pre-activation)")
    right.set_ylabel("output")
    right.set_title("ANN activation vs SNN firing rate", fontsize=10)
    right.legend(loc="upper left", fontsize=8)
    right.set_ylim(-0.1, 1.5)
    fig.tight_layout()
    fig.savefig(OUT, dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
