"""Typed values <-> JSON, driven by dataclass fields and their type hints (written once, for every type).

`to_json(value)` turns dataclasses, tuples, mappings, enums, numpy arrays and scalars into plain JSON;
`from_json(cls, data)` checks `data` against `cls`'s type hints and builds the value, so a damaged or
foreign file is refused with the path of the first bad field instead of failing later.

- Strict JSON has no NaN/Infinity: non-finite floats are written as the strings "nan", "inf", "-inf".
- A field that has a default may be missing; any key the type does not have is an error.
- A family of dataclasses that share a field (e.g. the details of each stage) is a *tagged union*:
  the base is decorated with `@tagged("kind")`, each member with `@tag("export")`; the tag is written
  under that key and chooses the class when reading.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from trt_harness.models.core.errors import UsageError

T = TypeVar("T")


class SchemaError(UsageError):
    """JSON that does not have the shape of the type it is read as."""


def tagged(key: str = "kind") -> Callable[[type[T]], type[T]]:
    """Make a dataclass the base of a tagged union whose members are chosen by `data[key]`."""

    def decorate(cls: type[T]) -> type[T]:
        cls.__json_tag_key__ = key  # type: ignore[attr-defined]
        cls.__json_members__ = {}  # type: ignore[attr-defined]
        return cls

    return decorate


def tag(name: str) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as the member `name` of the tagged union of its base class."""

    def decorate(cls: type[T]) -> type[T]:
        for base in cls.__mro__[1:]:
            members = base.__dict__.get("__json_members__")
            if members is not None:
                members[name] = cls
                cls.__json_tag__ = name  # type: ignore[attr-defined]
                return cls
        raise TypeError(f"{cls.__name__} has no @tagged base class")

    return decorate


def _float_to_json(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def to_json(value: Any) -> Any:
    """`value` as plain JSON types (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float_to_json(value)
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data: dict[str, Any] = {}
        tag_name = getattr(type(value), "__json_tag__", None)
        if tag_name is not None:
            data[_tag_key(type(value))] = tag_name
        for f in dataclasses.fields(value):
            if f.init:
                data[f.name] = to_json(getattr(value, f.name))
        return data
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [to_json(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _tag_key(cls: type) -> str:
    for base in cls.__mro__:
        key = base.__dict__.get("__json_tag_key__")
        if key is not None:
            return key
    raise TypeError(f"{cls.__name__} is not in a tagged union")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail(where: str, expected: str, data: Any) -> SchemaError:
    shown = repr(data)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return SchemaError(f"{where}: expected {expected}, got {shown}")


def from_json(tp: Any, data: Any, where: str = "$") -> Any:
    """Build a value of type `tp` from JSON `data`; `where` names the position in errors."""
    if tp is Any or tp is object:
        return data
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _from_union(typing.get_args(tp), data, where)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if data not in allowed or isinstance(data, bool) != any(isinstance(a, bool) for a in allowed):
            raise _fail(where, f"one of {list(allowed)}", data)
        return data
    if origin in (tuple, Sequence, list) or tp in (tuple, list):
        return _from_sequence(tp, origin, data, where)
    if origin in (dict, Mapping) or tp in (dict,):
        args = typing.get_args(tp)
        value_type = args[1] if len(args) == 2 else Any
        if not isinstance(data, dict):
            raise _fail(where, "an object", data)
        return {str(k): from_json(value_type, v, f"{where}[{k!r}]") for k, v in data.items()}
    if tp is type(None):
        if data is not None:
            raise _fail(where, "null", data)
        return None
    if tp is bool:
        if not isinstance(data, bool):
            raise _fail(where, "true or false", data)
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise _fail(where, "an integer", data)
        return data
    if tp is float:
        return _from_float(data, where)
    if tp is str:
        if not isinstance(data, str):
            raise _fail(where, "a string", data)
        return data
    if tp is np.ndarray:
        if not isinstance(data, list):
            raise _fail(where, "a list of numbers", data)
        return np.asarray(data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise _fail(where, f"one of {[m.value for m in tp]}", data) from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_dataclass(tp, data, where)
    raise TypeError(f"{where}: cannot read JSON as {tp!r}")


def _from_float(data: Any, where: str) -> float:
    if isinstance(data, str) and data in ("nan", "inf", "-inf", "NaN", "Infinity", "-Infinity"):
        return float(data.replace("Infinity", "inf"))
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise _fail(where, "a number", data)
    return float(data)


def _from_union(options: tuple[Any, ...], data: Any, where: str) -> Any:
    if data is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return from_json(option, data, where)
        except SchemaError as e:
            errors.append(str(e))
    if len(errors) == 1:
        raise SchemaError(errors[0])
    raise SchemaError(f"{where}: {data!r:.60} matches none of {[getattr(o, '__name__', o) for o in options]}")


def _from_sequence(tp: Any, origin: Any, data: Any, where: str) -> Any:
    if not isinstance(data, list):
        raise _fail(where, "a list", data)
    args = typing.get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(data) != len(args):
            raise _fail(where, f"a list of {len(args)} items", data)
        return tuple(
            from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data, strict=True))
        )
    item = args[0] if args else Any
    items = [from_json(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    return items if origin is list or tp is list else tuple(items)


def _from_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(where, f"an object ({cls.__name__})", data)
    members = cls.__dict__.get("__json_members__")
    if members is not None:
        key = _tag_key(cls)
        name = data.get(key)
        if not isinstance(name, str) or name not in members:
            raise _fail(f"{where}.{key}", f"one of {sorted(members)}", name)
        cls = members[name]
        data = {k: v for k, v in data.items() if k != key}
    elif getattr(cls, "__json_tag__", None) is not None:
        data = {k: v for k, v in data.items() if k != _tag_key(cls)}
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = from_json(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{where}: {cls.__name__} lacks the required key '{name}'")
    try:
        return cls(**kwargs)
    except UsageError as e:
        raise SchemaError(f"{where}: {e}") from e
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{where}: not a valid {cls.__name__}: {e}") from e
