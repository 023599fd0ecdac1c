"""IF neuron dynamics against hand-computed sequences, in the reference and the Numba kernel alike."""
import numpy as np
import pytest

from runtime.format import NeuronParams
from runtime.engine import _neuron
from runtime.plan import Step
from runtime.reference import if_step, initial_membrane


def params(v_th=1.0, shift=0.0, v_init=0.0, reset="subtract", signed=False, burst=1):
    f = lambda v: np.atleast_1d(np.asarray(v, np.float32))
    return NeuronParams(f(v_th), f(shift), f(v_init), reset, signed, burst)


def simulate_reference(currents, p):
    """currents: (T, N, C) -> spikes (T, N, C), final membrane."""
    v, net = initial_membrane(currents[0], p), None
    out = []
    for x in currents:
        s, v, net = if_step(x, v, p, net)
        out.append(s)
    return np.stack(out), v


def simulate_kernel(currents, p, constant=False):
    """The Numba engine's neuron layer (kernels/neuron.py via engine._neuron), as the engine calls it."""
    step = Step("n", "IFNeuron", ("x",), ("s",), {}, p)
    value = (currents[0], False) if constant else (currents, True)
    (spikes, _), counts, _ = _neuron(step, value, currents.shape[0], None)
    return spikes, counts


def constant(x, steps):
    return np.full((steps, 1, 1), x, np.float32)


CASES = [
    # (current, steps, params, expected spikes as multiples of v_th) -- worked by hand, values exact in binary
    (0.75, 5, params(), [0, 1, 1, 1, 0]),                         # v: .75 1.5→.5 1.25→.25 1.0→0 .75
    (0.75, 5, params(reset="zero"), [0, 1, 0, 1, 0]),             # v: .75 1.5→0 .75 1.5→0 .75
    (0.375, 4, params(shift=0.125), [0, 1, 0, 1]),                # shift V/2T: v += .5 per step -> rounds .375 up to .5
    (0.375, 4, params(), [0, 0, 1, 0]),                           # no shift: .375 .75 1.125→.125 .5 -> floors to .25
    (0.25, 2, params(v_init=0.5), [0, 1]),                        # starts half full
    (1.5, 4, params(v_th=2.0), [0, 1, 1, 1]),                     # spikes carry v_th: 1.5 3→1 2.5→.5 2→0
    (-0.5, 3, params(), [0, 0, 0]),                               # negative current never fires
    (2.5, 3, params(burst=4), [2, 3, 2]),                         # bursts: 2.5→.5 3→0 2.5→.5
    (5.25, 2, params(burst=2), [2, 2]),                           # capped at 2: 5.25→3.25 8.5→6.5
    (0.75, 5, params(burst=3), [0, 1, 1, 1, 0]),                  # below 2 V_th a step: the plain neuron's spikes
]


@pytest.mark.parametrize("current, steps, p, expected", CASES)
def test_hand_computed_sequences(current, steps, p, expected):
    want = np.array(expected, np.float32) * p.v_th[0]
    ref, _ = simulate_reference(constant(current, steps), p)
    np.testing.assert_array_equal(ref[:, 0, 0], want)
    kern, counts = simulate_kernel(constant(current, steps), p)
    np.testing.assert_array_equal(kern[:, 0, 0], want)
    kern_const, _ = simulate_kernel(constant(current, steps), p, constant=True)
    np.testing.assert_array_equal(kern_const[:, 0, 0], want)
    np.testing.assert_array_equal(counts, np.array(expected) != 0)  # events: a burst counts once


def test_final_membrane_soft_reset_keeps_the_remainder():
    _, v = simulate_reference(constant(0.75, 5), params())
    assert v[0, 0] == pytest.approx(0.75)
    _, v = simulate_reference(constant(0.75, 2), params(reset="zero"))
    assert v[0, 0] == 0.0


def test_rate_with_shift_is_rounded_activation():
    """Constant current a, T steps, shift V/2T: rate = V/T * round(a T / V), error <= V/(2T)."""
    steps, v_th = 16, 1.0
    a = np.linspace(0, 1.0, 97, dtype=np.float32)
    currents = np.broadcast_to(a, (steps, 1, a.size)).copy()
    spikes, _ = simulate_reference(currents, params(v_th=v_th, shift=v_th / (2 * steps)))
    rate = spikes.mean(axis=0)[0]
    assert np.max(np.abs(rate - a)) <= v_th / (2 * steps) + 1e-6


def test_per_channel_parameters():
    p = params(v_th=[1.0, 2.0], shift=[0.0, 0.5], v_init=[0.0, 0.0])
    currents = np.zeros((3, 1, 2, 2), np.float32) + np.array([0.5, 0.5], np.float32).reshape(1, 1, 2, 1)
    ref, _ = simulate_reference(currents, p)
    kern, _ = simulate_kernel(currents, p)
    np.testing.assert_array_equal(ref, kern)
    # channel 0: .5 1→0 .5 ; channel 1 (shift .5, v_th 2): 1 2→0 1
    np.testing.assert_array_equal(ref[:, 0, 0, 0], [0, 1, 0])
    np.testing.assert_array_equal(ref[:, 0, 1, 0], [0, 2, 0])


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_kernel_matches_reference_on_random_currents(rng, reset):
    currents = rng.normal(0.3, 0.6, (20, 3, 4, 5, 5)).astype(np.float32)
    p = params(v_th=[0.7, 1.1, 0.9, 1.3], shift=0.02, v_init=[0.1, 0.0, 0.3, 0.5], reset=reset)
    ref, _ = simulate_reference(currents, p)
    kern, _ = simulate_kernel(currents, p)
    np.testing.assert_array_equal(ref, kern)


@pytest.mark.parametrize("shape", [(5, 3, 7, 11), (9, 37), (2, 300, 1, 1), (3, 2, 1000)], ids=["conv", "features", "tall", "wide"])
@pytest.mark.parametrize("kind", ["if", "signed", "burst"])
def test_kernel_blocks_straddling_channels_and_samples_match_reference(rng, shape, kind):
    """Layers of several kernel blocks (256 neurons each) that start mid-channel, with channels wrapping round
    from one sample to the next, or one neuron per channel: every neuron gets its own channel's parameters."""
    n_ch = shape[1]
    currents = rng.normal(0.2, 1.5, (6,) + shape).astype(np.float32)
    p = params(v_th=rng.uniform(0.3, 1.5, n_ch), shift=rng.uniform(0, 0.1, n_ch), v_init=rng.uniform(0, 0.5, n_ch),
               signed=kind == "signed", burst=3 if kind == "burst" else 1)
    ref, _ = simulate_reference(currents, p)
    kern, _ = simulate_kernel(currents, p)
    np.testing.assert_array_equal(ref, kern)


def sequence(values):
    values = np.asarray(values, np.float32)
    return values.reshape(len(values), 1, 1)


SIGNED_CASES = [
    # (currents per step, params, expected spikes as multiples of v_th) -- worked by hand
    ([1.0, -1.5, -1.5, 0.0, 0.5], params(signed=True), [1, -1, 0, 0, 0]),   # v: 1→0 -1.5→-.5 (net 0: no more) -2 -2 -1.5
    ([0.0, -0.5, 0.0], params(signed=True), [0, 0, 0]),                     # never fired: nothing to take back
    ([2.5, 0.0, -2.0, 0.0], params(signed=True), [1, 1, -1, -1]),           # v: 2.5→1.5 1.5→.5 -1.5→-.5 -.5→.5 (net 2, 1, 0)
    ([2.5, 0.0, -2.0, 0.0, 0.6], params(signed=True), [1, 1, -1, -1, 1]),   # ... then 1.1→.1: fires again
    ([0.75] * 5, params(signed=True), [0, 1, 1, 1, 0]),                     # a positive current: the plain IF sequence
    ([1.0, 0.0], params(signed=True), [1, 0]),                              # v exactly 0 after the spike: nothing back
    ([1.0, -0.25], params(signed=True), [1, -1]),                           # v just below 0: taken back
]


@pytest.mark.parametrize("currents, p, expected", SIGNED_CASES)
def test_signed_hand_computed_sequences(currents, p, expected):
    want = np.array(expected, np.float32) * p.v_th[0]
    ref, _ = simulate_reference(sequence(currents), p)
    np.testing.assert_array_equal(ref[:, 0, 0], want)
    kern, counts = simulate_kernel(sequence(currents), p)
    np.testing.assert_array_equal(kern[:, 0, 0], want)
    np.testing.assert_array_equal(counts, np.abs(np.array(expected)))  # spikes of either sign count


def test_signed_net_count_never_negative_and_kernel_equals_reference(rng):
    currents = rng.normal(0.0, 0.8, (24, 3, 4, 5, 5)).astype(np.float32)
    p = params(v_th=[0.7, 1.1, 0.9, 1.3], shift=0.02, v_init=[0.1, 0.0, 0.3, 0.5], signed=True)
    ref, _ = simulate_reference(currents, p)
    kern, _ = simulate_kernel(currents, p)
    np.testing.assert_array_equal(ref, kern)
    net = np.cumsum(np.sign(ref), axis=0)
    assert net.min() == 0 and (ref < 0).any()  # negative spikes happen, the running net count stays >= 0


def test_signed_state_carries_across_blocks_of_steps(rng):
    """The engine continues a run block by block (early stop): the net count is state, like the membrane."""
    currents = rng.normal(0.0, 0.8, (12, 2, 3, 7)).astype(np.float32)
    p = params(v_th=[0.8, 1.0, 1.2], shift=0.01, signed=True)
    step = Step("n", "IFNeuron", ("x",), ("s",), {}, p)
    (whole, _), _, _ = _neuron(step, (currents, True), 12, None)
    (first, _), _, state = _neuron(step, (currents[:5], True), 5, None)
    (second, _), _, _ = _neuron(step, (currents[5:], True), 7, state)
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))


@pytest.mark.parametrize("signed, burst, reset", [(False, 1, "subtract"), (False, 1, "zero"), (True, 1, "subtract"), (False, 3, "subtract")],
                         ids=["if", "if-reset-zero", "signed", "burst"])
def test_calibration_simulates_the_runtime_neuron(rng, signed, burst, reset):
    """The converter's layer-wise calibration (converter/layerwise.py) simulates the neuron the runtime runs: its
    spikes equal the engine's bit for bit, and its candidate errors are those of the engine's rates."""
    from converter.layerwise import LayerParams, _errors, fire
    currents = rng.normal(0.1, 0.8 * burst, (10, 4, 3, 6)).astype(np.float32)  # (T, N, C, S)
    v_th, shift, v_init = np.array([0.7, 1.0, 1.3], np.float32), np.array([0.05, 0.0, 0.02], np.float32), np.array([0.3, 0.5, 0.0], np.float32)
    calibrated = fire(currents, LayerParams(v_th, shift, v_init), 10, reset, signed, burst)
    runtime, _ = simulate_kernel(currents, params(v_th, shift, v_init, reset=reset, signed=signed, burst=burst))
    np.testing.assert_array_equal(calibrated, runtime)
    assert signed == bool((runtime < 0).any())
    assert (burst > 1) == bool((runtime > v_th[None, None, :, None] * 1.5).any())  # multiple spikes in a step
    target = rng.random((4, 3, 6)).astype(np.float32)
    sq, mean = _errors(currents, target, v_th[None], v_init[None], shift[None], 10, reset == "subtract", signed, burst)
    rate = runtime.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(sq[0], ((target - rate) ** 2).mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(mean[0], (target - rate).mean(axis=(0, 2)), rtol=1e-6, atol=1e-7)  # float32 rates


def test_signed_neuron_params_need_the_soft_reset():
    from runtime.errors import SNNFormatError
    with pytest.raises(SNNFormatError, match="signed spikes need reset 'subtract'"):
        params(reset="zero", signed=True)


def test_burst_neuron_kernel_equals_reference_and_carries_state(rng):
    """Burst neurons on random currents: the Numba layer kernel equals the reference bit for bit, every spike is
    k * v_th with 0 <= k <= burst, and a run continued block by block equals one run (early stop)."""
    currents = rng.normal(0.3, 2.5, (16, 3, 4, 5)).astype(np.float32)
    p = params(v_th=[0.7, 1.1, 0.9, 1.3], shift=0.02, v_init=[0.1, 0.0, 0.3, 0.5], burst=4)
    ref, _ = simulate_reference(currents, p)
    kern, counts = simulate_kernel(currents, p)
    np.testing.assert_array_equal(ref, kern)
    k = np.rint(ref / p.v_th[None, None, :, None])
    np.testing.assert_array_equal(ref, k.astype(np.float32) * p.v_th[None, None, :, None])  # s = float32(k) * v_th
    assert k.min() == 0 and k.max() == 4
    np.testing.assert_array_equal(counts, np.count_nonzero(ref.reshape(16, -1), axis=1))
    step = Step("n", "IFNeuron", ("x",), ("s",), {}, p)
    (whole, _), _, _ = _neuron(step, (currents, True), 16, None)
    (first, _), _, state = _neuron(step, (currents[:7], True), 7, None)
    (second, _), _, _ = _neuron(step, (currents[7:], True), 9, state)
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))


def test_burst_neuron_params_need_the_soft_reset_and_unsigned_spikes():
    from runtime.errors import SNNFormatError
    with pytest.raises(SNNFormatError, match="burst spikes need reset 'subtract' and unsigned neurons"):
        params(reset="zero", burst=2)
    with pytest.raises(SNNFormatError, match="burst spikes need reset 'subtract' and unsigned neurons"):
        params(signed=True, burst=2)
