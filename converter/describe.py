"""``onnx2snn inspect``: what a file holds. For an SNN file: metadata, neuron layers (V_th, shift, v_init,
reset) and op counts; for an ANN: each op type with the policy the converter applies to it."""
from __future__ import annotations

from collections import Counter

import onnx

from runtime import format as fmt

from .load import load_model
from .policy import policy_of


def inspect_file(path: str) -> tuple[dict, str]:
    source = load_model(path)
    model = source.model
    meta = fmt.metadata(model)
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node)
    info = {"file": path, "ir_version": model.ir_version, "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "inputs": [_io(v) for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}],
            "outputs": [_io(v) for v in model.graph.output], "ops": dict(ops)}
    lines = [f"{path}: IR {model.ir_version}, opsets {info['opset']}",
             "inputs:  " + ", ".join(f"{i['name']} {i['shape']}" for i in info["inputs"]),
             "outputs: " + ", ".join(f"{o['name']} {o['shape']}" for o in info["outputs"])]
    if fmt.META_FORMAT_VERSION in meta:
        fmt.validate(model, path)
        info["kind"] = "snn"
        info["metadata"] = meta
        info["layers"] = []
        for node in model.graph.node:
            if node.domain == fmt.DOMAIN:
                p = fmt.neuron_params(node)
                info["layers"].append({"layer": node.name, "v_th": p.v_th.tolist(), "shift": p.shift.tolist(),
                                       "v_init": p.v_init.tolist(), "reset": p.reset})
        lines.append("SNN description: " + ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in meta.items() if k.startswith("onnx2snn.")))
        lines.append(f"{'neuron layer':<40} {'V_th':>9} {'shift':>9} {'v_init':>8} reset")
        for layer in info["layers"]:
            lines.append(f"{layer['layer'][:40]:<40} {_scalar(layer['v_th']):>9} {_scalar(layer['shift']):>9} {_scalar(layer['v_init']):>8} {layer['reset']}")
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())))
    else:
        info["kind"] = "ann"
        info["policies"] = {}
        lines.append(f"{'op':<24} {'count':>5}  policy   why")
        for op, n in sorted(ops.items()):
            entry = policy_of(op)
            policy, why = (entry.policy, entry.why) if entry else ("refuse", "not supported yet")
            info["policies"][op] = {"count": n, "policy": policy, "why": why}
            lines.append(f"{op:<24} {n:>5}  {policy:<8} {why}")
    return info, "\n".join(lines)


def _scalar(values: list) -> str:
    return f"{values[0]:.4g}" if len(values) == 1 else f"[{len(values)} ch]"


def _io(vi: onnx.ValueInfoProto) -> dict:
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
    return {"name": vi.name, "shape": dims}
