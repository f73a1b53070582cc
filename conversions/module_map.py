"""Which Torch module each part of an exported ONNX graph comes from.

The `torch.export`-based exporter writes, per node, `pkg.torch.onnx.name_scopes` (the module paths
from the root down, then the ATen op), `pkg.torch.onnx.class_hierarchy` (their classes, aligned) and
`pkg.torch.onnx.stack_trace` (outermost frame first). The TorchScript exporter writes only the scope,
into the node name (`/model/m/m.0/c/Conv`); there the source line is where the module's `forward` is
defined (`inspect`), not the line that computes its output.

A module's output is the last tensor its nodes produce that something outside them reads (or that is
a graph output): the tensor a forward hook's value is compared with.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from trt_harness.models.results.localize import ModuleBoundary, ModuleMap, SourceKind

if TYPE_CHECKING:
    import onnx
    import torch

# the attribute under which `conversions.export.outputs_as_tuple` holds the user's model
WRAPPER_ATTRIBUTE = "model"

_SCOPES = "pkg.torch.onnx.name_scopes"
_CLASSES = "pkg.torch.onnx.class_hierarchy"
_STACK = "pkg.torch.onnx.stack_trace"
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _literal_list(text: str) -> list[str]:
    """The exporter writes these lists as Python reprs of lists of strings."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _user_path(scope: str) -> str | None:
    """The wrapper's `model.x.y` as the user's model names it (`x.y`); None for the wrapper itself."""
    if scope == WRAPPER_ATTRIBUTE:
        return ""
    prefix = WRAPPER_ATTRIBUTE + "."
    return scope[len(prefix) :] if scope.startswith(prefix) else None


def _dynamo_scopes(node: onnx.NodeProto) -> list[tuple[str, str]]:
    """(module path, class) from the root's child down to the node's own module."""
    meta = _metadata(node)
    scopes = _literal_list(meta.get(_SCOPES, "[]"))[:-1]  # the last one is the ATen op
    classes = _literal_list(meta.get(_CLASSES, "[]"))
    found = []
    for i, scope in enumerate(scopes):
        path = _user_path(scope)
        if path:
            found.append((path, classes[i] if i < len(classes) else ""))
    return found


def _torchscript_scopes(node: onnx.NodeProto, known: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Scope components of `/model/m/m.0/c/Conv`: a child of a container is written `m.0` (its parent's
    component, a dot, its own name); resolved against the model's module names where they are known."""
    parts = node.name.split("/")
    if len(parts) < 3 or parts[0] != "":
        return []
    components = parts[1:-1]
    if not components or components[0] != WRAPPER_ATTRIBUTE:
        return []
    found: list[tuple[str, str]] = []
    path, previous = "", WRAPPER_ATTRIBUTE
    for component in components[1:]:
        own = component
        if component.startswith(previous + "."):
            own = component[len(previous) + 1 :]
        candidate = f"{path}.{own}" if path else own
        if known and candidate not in known:
            alternative = f"{path}.{component}" if path else component
            candidate = alternative if alternative in known else candidate
        path, previous = candidate, component
        module = known.get(path)
        found.append((path, _qualified_class(module) if module is not None else ""))
    return found


def _qualified_class(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _forward_span(module: Any) -> tuple[str, int, int] | None:
    """(file, first line, last line) of the module's forward."""
    try:
        forward = inspect.unwrap(type(module).forward)
        file = inspect.getsourcefile(forward)
        lines, start = inspect.getsourcelines(forward)
    except (TypeError, OSError):
        return None
    return (file, start, start + len(lines) - 1) if file else None


def _source_of(module: Any, stacks: Iterable[str]) -> tuple[str | None, SourceKind | None]:
    """The innermost frame of a stack trace inside the module's forward, else where it is defined."""
    span = _forward_span(module) if module is not None else None
    if span is None:
        return None, None
    file, first, last = span
    for stack in stacks:
        frames = [m for m in _FRAME.finditer(stack) if m["file"] == file and first <= int(m["line"]) <= last]
        if frames:
            return f"{file}:{frames[-1]['line']}", "stack trace"
    return f"{file}:{first}", "forward definition"


def module_map_of(
    proto: onnx.ModelProto, model: torch.nn.Module | None, exporter: str, onnx_name: str
) -> ModuleMap:
    """The module boundaries of an exported graph; `model` is the user's model (not the export wrapper)."""
    known = dict(model.named_modules()) if model is not None else {}
    known.pop("", None)
    graph = proto.graph
    nodes = list(graph.node)
    initializers = {t.name for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    producer: dict[str, int] = {}
    consumers: dict[str, set[int]] = {}
    members: dict[str, list[int]] = {}
    classes: dict[str, str] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name:
                producer[name] = index
        for name in node.input:
            if name:
                consumers.setdefault(name, set()).add(index)
        scopes = _dynamo_scopes(node) if exporter == "dynamo" else _torchscript_scopes(node, known)
        for path, class_name in scopes:
            members.setdefault(path, []).append(index)
            classes.setdefault(path, class_name)

    boundaries = []
    for path, indexes in members.items():
        span = set(indexes)
        output = None
        for index in sorted(span, reverse=True):
            for name in reversed(nodes[index].output):
                read_outside = consumers.get(name, set()) - span
                if name and (read_outside or name in graph_outputs):
                    output = name
                    break
            if output is not None:
                break
        inputs = tuple(
            dict.fromkeys(
                name
                for index in sorted(span)
                for name in nodes[index].input
                if name and name not in initializers and producer.get(name) not in span
            )
        )
        module = known.get(path)
        order = sorted(span)
        if output is not None:
            order_of_output = [producer[output], *sorted(span - {producer[output]}, reverse=True)]
        else:
            order_of_output = sorted(span, reverse=True)
        stacks = (_metadata(nodes[i]).get(_STACK, "") for i in order_of_output)
        source, kind = _source_of(module, stacks)
        boundaries.append(
            ModuleBoundary(
                path=path,
                class_name=classes.get(path) or (_qualified_class(module) if module is not None else ""),
                source=source,
                source_kind=kind,
                nodes=tuple(nodes[i].name for i in order),
                op_types=dict(Counter(nodes[i].op_type for i in order)),
                output=output,
                inputs=inputs,
                depth=path.count(".") + 1,
            )
        )
    boundaries.sort(
        key=lambda b: (producer.get(b.output, len(nodes)) if b.output else len(nodes), -b.depth, b.path)
    )
    return ModuleMap(onnx=onnx_name, exporter=exporter, modules=tuple(boundaries))
