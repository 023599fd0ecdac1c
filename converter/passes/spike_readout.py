"""Readout by output spikes (``readout="spikes"``): a threshold ReLU on every graph output, so the SNN's outputs
are spike trains and the readout (their mean over T) is a spike count times V_th.

Why an option: the default readout, the mean of the output layer's current over T (its membrane potential
divided by T), keeps the logits' sign and resolution at any T; counting output spikes is the classic alternative
(Diehl et al. 2015; SpikingJelly's converters with an output neuron layer), and the issue asks for both to be
ablatable. Negative logits give no spikes, and at small T several classes may share the top count (the first
wins), so it needs more steps for the same accuracy. The threshold-ReLU ANN gets the same clip at its outputs,
which is what the SNN then approximates.

Before: rewrite_activations ran. After: each float graph output not already produced by an activation is the
output of a new Clip(0, bound) node, recorded in ``ctx.activations`` (source op "readout"); output names kept.
"""
import numpy as np
import onnx_graphsurgeon as gs

from .context import Activation, Context, finish
from .rewrite_activations import UNBOUNDED

READOUTS = ("membrane", "spikes")


def run(ctx: Context) -> None:
    if ctx.options.get("readout", "membrane") != "spikes":
        return
    activations = {id(a.node) for a in ctx.activations}
    for out in list(ctx.graph.outputs):
        producer = out.inputs[0] if out.inputs else None
        if producer is None or id(producer) in activations or out.dtype not in (None, np.float32):
            continue
        current = gs.Variable(out.name + "_current", dtype=out.dtype, shape=out.shape)
        producer.outputs[producer.outputs.index(out)] = current
        for consumer in list(out.outputs):  # other readers keep reading the current, as in the ANN
            consumer.inputs[consumer.inputs.index(out)] = current
        name = out.name + "_readout"
        node = gs.Node("Clip", name, inputs=[current, gs.Constant(name + "_vmin", np.zeros((), np.float32)),
                                             gs.Constant(name + "_vth", np.array(UNBOUNDED, np.float32))], outputs=[out])
        ctx.graph.nodes.append(node)
        ctx.activations.append(Activation(node, "readout", None))
        ctx.report.notes.append(f"readout by output spikes: output '{out.name}' is read out by the spike count of a neuron "
                                "layer added after it (negative values give no spikes)")
    finish(ctx.graph)
