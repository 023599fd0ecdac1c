"""Move a MaxPool that follows an activation before it: Act -> MaxPool becomes MaxPool -> Act.

In the ANN this is exact for any Relu or Clip(lo, hi): they are monotone and elementwise, so they commute with
a max over a window. In the SNN the neuron then integrates the pooled current instead of the spiking max pool
taking the max of spikes:
- when the activation's input is static (computed from the analog input alone, e.g. the first Conv), the pooled
  current is the same every step, so the move is exact and always done (and one gated max pool less);
- when the input is dynamic (spikes arrive upstream), the currents differ from step to step; the writer then
  makes the pool the gated SpikeMaxPool, which passes at each step the current of the input with the largest
  running total, so the neuron integrates about the max of the summed currents, not the max of the rates of
  neurons that each clip and quantise on their own: an approximation, done only with maxpool="pre" and
  reported, like maxpool="avg".

Before: check_ops passed; activations are still Relu/Clip. After: such MaxPools read the activation's input.
"""
import onnx_graphsurgeon as gs

from .context import Context, downstream, finish

MOVED = "moved before"  # in the report action of every MaxPool this pass moves (the writer keeps that reason)


def run(ctx: Context) -> None:
    graph = ctx.graph
    activations = [n for n in graph.nodes if n.op in ("Relu", "Clip")]
    spiking = downstream([t for n in activations for t in n.outputs])
    for pool in [n for n in graph.nodes if n.op == "MaxPool"]:
        link = pool.inputs[0]
        if len(link.inputs) != 1 or link.inputs[0].op not in ("Relu", "Clip"):
            continue
        act = link.inputs[0]
        if len(link.outputs) != 1 or link in graph.outputs or (len(pool.outputs) > 1 and pool.outputs[1].outputs):
            continue  # the activation feeds something else too, or the Indices output is used
        static = act.inputs[0].name not in spiking
        if not static and ctx.options.get("maxpool") != "pre":
            continue
        pooled = pool.outputs[0]
        before = gs.Variable(f"{pool.name}_before_{act.name}", dtype=link.dtype)
        pool.inputs[0] = act.inputs[0]
        pool.outputs[0] = before
        act.inputs[0] = before
        act.outputs[0] = pooled
        if static:
            ctx.report.set_action(pool.name, f"{MOVED} '{act.name}' (exact: its input is the same every step)")
        else:
            ctx.report.set_action(pool.name, f"approximated: {MOVED} '{act.name}' (--maxpool pre)")
            ctx.report.notes.append(f"MaxPool '{pool.name}' was moved before activation '{act.name}' at the user's request: "
                                    "the neuron integrates the gated max of its input currents instead of the max of the rates of spiking inputs")
    finish(graph)
