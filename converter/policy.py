"""The op policy table: the single source of truth for what the converter does with every ONNX op it knows.

Policies:
- ``keep``: a linear (affine) op, simulated unchanged at every time step;
- ``fold``: folded into weights or constants, or removed (it does nothing at inference);
- ``rewrite``: replaced by its spiking counterpart: an activation becomes a threshold ReLU in the ANN and an IF
  neuron in the SNN; a MaxPool on spikes becomes the gated onnx2snn.SpikeMaxPool;
- ``approximate``: changes the math; only with an explicit opt-in flag, and always reported;
- ``drop``: removed at a graph output only (it does not change the top-1 class), always reported;
- ``refuse``: no rate-coded equivalent (or none implemented yet): conversion stops with a clear error.
An op absent from the table is refused with "not supported yet".
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UnsupportedOpError


@dataclass(frozen=True)
class OpPolicy:
    policy: str
    why: str


KEEP, FOLD, REWRITE, APPROXIMATE, DROP, REFUSE = "keep", "fold", "rewrite", "approximate", "drop", "refuse"
_LINEAR = "linear: applied to the spikes at every step"
_SHAPE = "moves values only: applied at every step"
_NO_RATE = "has no rate-coded equivalent: an average of spikes cannot pass through it"
_BATCH_ARITHMETIC = ("shape arithmetic on a symbolic batch size: folded where it is the same for every batch size (a Reshape "
                     "target gets 0 or -1), else evaluated at run time")

POLICIES: dict[str, OpPolicy] = {
    "Conv": OpPolicy(KEEP, _LINEAR),
    "Gemm": OpPolicy(KEEP, _LINEAR),
    "MatMul": OpPolicy(KEEP, _LINEAR + " (one operand must be a constant)"),
    "Add": OpPolicy(KEEP, "linear: bias or sum of branches (residual)"),
    "Sub": OpPolicy(KEEP, "linear: bias or difference of branches"),
    "Sum": OpPolicy(KEEP, "linear: sum of branches"),
    "Mul": OpPolicy(KEEP, "linear when one operand is a constant (otherwise refused)"),
    "Div": OpPolicy(KEEP, "linear when the divisor is a constant (otherwise refused)"),
    "AveragePool": OpPolicy(KEEP, _LINEAR),
    "GlobalAveragePool": OpPolicy(KEEP, _LINEAR),
    "ReduceMean": OpPolicy(KEEP, _LINEAR),
    "Flatten": OpPolicy(KEEP, _SHAPE),
    "Reshape": OpPolicy(KEEP, _SHAPE),
    "Transpose": OpPolicy(KEEP, _SHAPE),
    "Squeeze": OpPolicy(KEEP, _SHAPE),
    "Unsqueeze": OpPolicy(KEEP, _SHAPE),
    "Concat": OpPolicy(KEEP, _SHAPE),
    "Pad": OpPolicy(KEEP, _SHAPE + " (constant mode)"),
    "Shape": OpPolicy(KEEP, _BATCH_ARITHMETIC),
    "Gather": OpPolicy(KEEP, _BATCH_ARITHMETIC),
    "Constant": OpPolicy(FOLD, "becomes an initializer"),
    "Identity": OpPolicy(FOLD, "does nothing: removed"),
    "Dropout": OpPolicy(FOLD, "does nothing at inference: removed"),
    "BatchNormalization": OpPolicy(FOLD, "folded into the preceding Conv/Gemm, else kept as a per-channel Mul+Add"),
    "Relu": OpPolicy(REWRITE, "threshold ReLU in the ANN, IF neuron in the SNN"),
    "Clip": OpPolicy(REWRITE, "Clip(0, c) (e.g. ReLU6): threshold ReLU with V_th <= c, IF neuron in the SNN"),
    "ArgMax": OpPolicy(DROP, "a label output (arg-max of the scores, e.g. skl2onnx's): dropped with the nodes that map it to class labels"),
    "ArrayFeatureExtractor": OpPolicy(DROP, "ai.onnx.ml: maps a label output's arg-max to class labels: dropped with it"),
    "ZipMap": OpPolicy(DROP, "ai.onnx.ml: at an output, turns scores into {class: score} maps: dropped, the output holds the scores"),
    "Softmax": OpPolicy(DROP, "monotonic at a graph output: dropped, the rate readout gives logits"),
    "LogSoftmax": OpPolicy(DROP, "monotonic at a graph output: dropped, the rate readout gives logits"),
    "Sigmoid": OpPolicy(REFUSE, _NO_RATE),
    "Tanh": OpPolicy(REFUSE, _NO_RATE + " (negative outputs)"),
    "LeakyRelu": OpPolicy(REFUSE, _NO_RATE + " (negative slope)"),
    "PRelu": OpPolicy(REFUSE, _NO_RATE + " (negative slope)"),
    "Elu": OpPolicy(REFUSE, _NO_RATE + " (negative outputs)"),
    "Selu": OpPolicy(REFUSE, _NO_RATE + " (negative outputs)"),
    "Gelu": OpPolicy(REFUSE, _NO_RATE + " (negative outputs)"),
    "HardSigmoid": OpPolicy(REFUSE, _NO_RATE),
    "HardSwish": OpPolicy(REFUSE, _NO_RATE),
    "Softplus": OpPolicy(REFUSE, _NO_RATE),
    "LRN": OpPolicy(REFUSE, _NO_RATE + " (divides by a function of the activity)"),
    "MaxPool": OpPolicy(REWRITE, "on spikes: onnx2snn.SpikeMaxPool, gated by the input with the largest running "
                                 "total, so the output rate tracks the largest input rate; on the analog input: kept, "
                                 "exact; after an activation of a static input: moved before it, exact; --maxpool pre "
                                 "moves it before any activation, --maxpool avg makes it an AveragePool (both approximate, reported)"),
    "ConvTranspose": OpPolicy(KEEP, _LINEAR),
    "Resize": OpPolicy(KEEP, "nearest mode copies values: applied at every step (linear modes refused)"),
    "Cast": OpPolicy(KEEP, "type conversion in shape arithmetic"),
    "ConstantOfShape": OpPolicy(FOLD, "folded into a constant"),
}

ACTIVATIONS = sorted(op for op, p in POLICIES.items() if p.policy == REWRITE)


def policy_of(op: str) -> OpPolicy | None:
    return POLICIES.get(op)


def refuse(node_name: str, op: str) -> UnsupportedOpError:
    """The error for a node whose op is refused or unknown."""
    entry = POLICIES.get(op)
    if entry is None:
        return UnsupportedOpError(
            f"node '{node_name}': op {op} is not supported yet; supported ops: "
            f"{', '.join(sorted(o for o, p in POLICIES.items() if p.policy != REFUSE))}")
    return UnsupportedOpError(f"node '{node_name}': op {op} {entry.why}; supported activations: {', '.join(ACTIVATIONS)}")


def markdown_table() -> str:
    """The op support table of docs/ops.md, generated from POLICIES (a test keeps the two in step)."""
    lines = ["| op | policy | what the converter does |", "|---|---|---|"]
    for op in sorted(POLICIES):
        entry = POLICIES[op]
        lines.append(f"| `{op}` | {entry.policy} | {entry.why} |")
    return "\n".join(lines)


BEGIN, END = "<!-- begin generated: converter.policy.markdown_table() -->", "<!-- end generated -->"


def update_doc(path: str) -> bool:
    """Rewrite the generated section of docs/ops.md; return whether it changed."""
    with open(path) as f:
        text = f.read()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return new != text
