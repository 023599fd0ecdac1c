"""The conversion report: what happened to every source node and every neuron layer, and why."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class NodeEntry:
    node: str
    op: str
    policy: str
    action: str


@dataclass
class LayerEntry:
    layer: str          # the IFNeuron node in the SNN (named after the source activation)
    source_op: str
    v_th: float
    upper_bound: float | None = None   # Clip(0, c): V_th never exceeds c
    stats: dict = field(default_factory=dict)


@dataclass
class Report:
    source: str = ""
    nodes: list[NodeEntry] = field(default_factory=list)
    layers: list[LayerEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def node(self, name: str) -> NodeEntry | None:
        return next((n for n in self.nodes if n.node == name), None)

    def set_action(self, name: str, action: str) -> None:
        entry = self.node(name)
        if entry is not None:
            entry.action = action

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A compact, human-readable summary for the CLI."""
        lines = [f"{'node':<36} {'op':<20} {'policy':<8} action"]
        for n in self.nodes:
            lines.append(f"{n.node[:36]:<36} {n.op[:20]:<20} {n.policy:<8} {n.action}")
        if self.layers:
            lines.append("")
            lines.append(f"{'neuron layer':<36} {'V_th':>9} {'act max':>9} {'p99.99':>9} {'clipped':>8}")
            for layer in self.layers:
                s = layer.stats
                lines.append(f"{layer.layer[:36]:<36} {layer.v_th:>9.4f} {s.get('max', float('nan')):>9.4f} "
                             f"{s.get('p99.99', float('nan')):>9.4f} {100 * s.get('clipped_fraction', 0.0):>7.3f}%")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)
