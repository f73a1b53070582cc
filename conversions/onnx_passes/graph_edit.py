"""Small in-place edits and change descriptions shared by the passes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx_graphsurgeon as gs

DEFAULT_DOMAINS = (None, "", "ai.onnx")  # gs leaves the domain None for default-domain nodes


def is_onnx_op(node: gs.Node, op: str) -> bool:
    return node.op == op and node.domain in DEFAULT_DOMAINS


def walk_graphs(root: gs.Graph) -> list[gs.Graph]:
    """The graph and every control-flow subgraph nested in it, listed up front so callers may edit them."""
    return [root, *root.subgraphs(recursive=True)]


def tensor_names(root: gs.Graph) -> set[str]:
    """Tensor names used anywhere in the model (subgraphs included)."""
    names: set[str] = set()
    for graph in walk_graphs(root):
        names.update(graph.tensors().keys())
    return names


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_<n>` if taken; the result is added to `taken`."""
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    taken.add(name)
    return name


def replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every consumer of `old` (subgraph consumers included) read `new` instead."""
    for consumer in list(old.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is old:
                consumer.inputs[index] = new


def contains(tensors: list[gs.Tensor], tensor: gs.Tensor) -> bool:
    """Identity membership: gs tensors compare by value, which is wrong (and slow) for edits."""
    return any(candidate is tensor for candidate in tensors)


def detach(node: gs.Node) -> None:
    """Unhook a node (and the nodes of its subgraphs) from all tensors it reads or writes."""
    for subgraph in node.subgraphs():
        for inner in subgraph.nodes:
            detach(inner)
    node.inputs.clear()
    node.outputs.clear()


def shape_text(shape: object) -> str:
    if shape is None:
        return "unknown shape"
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


@dataclass(frozen=True)
class GraphSnapshot:
    """Enough of a graph's structure to tell whether a pass changed it and how."""

    nodes: tuple[gs.Node, ...]
    wiring: tuple[tuple[int, ...], ...]  # ids of graphs, nodes and the tensors they connect, in order
    constant_names: frozenset[str]
    referenced: tuple[object, ...]  # everything `wiring` names, kept alive so no id is reused meanwhile

    @classmethod
    def of(cls, root: gs.Graph) -> GraphSnapshot:
        nodes: list[gs.Node] = []
        wiring: list[tuple[int, ...]] = []
        referenced: list[object] = []
        for graph in walk_graphs(root):
            tensors = [*graph.inputs, *graph.outputs]
            wiring.append((id(graph), *(id(t) for t in tensors)))
            referenced.extend([graph, *tensors])
            for node in graph.nodes:
                nodes.append(node)
                wiring.append((id(node), *(id(t) for t in node.inputs), -1, *(id(t) for t in node.outputs)))
                referenced.extend([*node.inputs, *node.outputs])
        constants = frozenset(t.name for node in nodes for t in node.inputs if isinstance(t, gs.Constant))
        return cls(tuple(nodes), tuple(wiring), constants, tuple(referenced))

    def changes_to(self, after: GraphSnapshot) -> tuple[str, ...]:
        before_ids = {id(node) for node in self.nodes}
        after_ids = {id(node) for node in after.nodes}
        removed = [node for node in self.nodes if id(node) not in after_ids]
        added = [node for node in after.nodes if id(node) not in before_ids]
        changes = []
        if removed:
            changes.append(f"removed {len(removed)} nodes ({_op_summary(removed)})")
        if added:
            changes.append(f"added {len(added)} nodes ({_op_summary(added)})")
        new_constants = after.constant_names - self.constant_names
        if new_constants:
            changes.append(f"{len(new_constants)} tensors became constants: {_name_list(new_constants)}")
        kept_order_before = [id(node) for node in self.nodes if id(node) in after_ids]
        kept_order_after = [id(node) for node in after.nodes if id(node) in before_ids]
        if not changes and kept_order_before != kept_order_after:
            moved = sum(1 for b, a in zip(kept_order_before, kept_order_after, strict=True) if a != b)
            changes.append(f"reordered nodes ({moved} of {len(kept_order_after)} changed position)")
        if not changes and self.wiring != after.wiring:
            changes.append("rewired node inputs/outputs")
        return tuple(changes)


def _op_summary(nodes: list[gs.Node]) -> str:
    counts = Counter(node.op for node in nodes)
    return ", ".join(f"{op}×{n}" if n > 1 else op for op, n in sorted(counts.items()))


def _name_list(names: frozenset[str], limit: int = 8) -> str:
    shown = sorted(names)[:limit]
    more = f", … {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(f"'{name}'" for name in shown) + more
