"""Readout by output spikes (``readout="spikes"``): a threshold ReLU on every graph output, so the SNN's outputs
are spike trains and the readout (their mean over T) is a spike count times V_th.

Why an option: the default readout, the mean of the output layer's current over T (its membrane potential
divided by T), keeps the logits' sign and resolution at any T; counting output spikes is the classic alternative
(Diehl et al. 2015; SpikingJelly's converters with an output neuron layer), and the issue asks for both to be
ablatable. Negative logits give no spikes, and at small T several classes may share the top count (the first
wins), so it needs more steps for the same accuracy. The threshold-ReLU ANN gets the same clip at its outputs,
which is what the SNN then approximates.

Before: rewrite_activations ran. After: each float32 graph output computed by the graph and not already produced
by an activation is the output of a new Clip(0, bound) node, recorded in ``ctx.activations`` (source op
"readout"); output names kept; any other output is left as it is, with a note.
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
    taken = set(ctx.graph.tensors()) | {n.name for n in ctx.graph.nodes}

    def unique(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    for out in list({id(t): t for t in ctx.graph.outputs}.values()):  # an output listed twice gets one layer
        producer = out.inputs[0] if out.inputs else None
        if producer is not None and id(producer) in activations:
            continue  # already the spikes of a neuron layer
        if producer is None or out.dtype not in (None, np.float32):
            ctx.report.notes.append(f"readout by output spikes: output '{out.name}' is kept as it is (not a float32 value "
                                    "computed by the graph), read out as its mean over T")
            continue
        current = gs.Variable(unique(out.name + "_current"), dtype=out.dtype, shape=out.shape)
        producer.outputs[producer.outputs.index(out)] = current
        for consumer in list(out.outputs):  # other readers keep reading the current, as in the ANN
            consumer.inputs[consumer.inputs.index(out)] = current
        name = unique(out.name + "_readout")
        node = gs.Node("Clip", name, inputs=[current, gs.Constant(name + "_vmin", np.zeros((), np.float32)),
                                             gs.Constant(name + "_vth", np.array(UNBOUNDED, np.float32))], outputs=[out])
        ctx.graph.nodes.append(node)
        ctx.activations.append(Activation(node, "readout", None))
        ctx.report.notes.append(f"readout by output spikes: output '{out.name}' is read out by the spike count of a neuron "
                                "layer added after it (negative values give no spikes)")
    finish(ctx.graph)
