"""A task's signature: binding a call at enqueue time, checking it against the type hints, and
describing the arguments as JSON Schema for the HTTP API.

The checker knows the types JSON can carry (``str``, ``int``, ``float``, ``bool``, ``None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, unions/Optional, ``Literal``, ``Any``,
``TypedDict``); a hint it does not know is not checked (the call is still JSON-checked).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ValidationError
from .serialize import find_non_json

_NoneType = type(None)


class TaskSignature:
    """The parameters of one task function, resolved once at registration."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        try:
            self.hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable forward references: check what JSON can carry only
            self.hints = {}
        self.hints.pop("return", None)
        params = self.signature.parameters.values()
        self.positional = [p.name for p in params
                           if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.var_positional = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), None)
        self.var_keyword = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        # a call with positional arguments only binds when their count is between these:
        # checked directly, ``Signature.bind`` is the slowest part of an enqueue
        plain = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    or p.default is not p.empty for p in params
                    if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        self._positional_range: tuple[int, float] | None = None if not plain else (
            sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty),
            float("inf") if self.var_positional else len(self.positional))

    def validate(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise ``ValidationError`` (with a JSON pointer per problem) unless the call fits."""
        span = self._positional_range
        if kwargs or span is None or not span[0] <= len(args) <= span[1]:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise ValidationError(f"arguments do not match the signature: {exc}",
                                      errors=[{"pointer": "#", "message": str(exc)}]) from None
        problems: list[dict[str, str]] = []
        for i, value in enumerate(args):
            name = self._name_of_position(i)
            problems += self._check(value, name, f"#/args/{i}", variadic=name ==
                                    self.var_positional)
        for key, value in kwargs.items():
            name = key if key in self.signature.parameters else self.var_keyword
            problems += self._check(value, name, f"#/kwargs/{key}",
                                    variadic=name == self.var_keyword)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValidationError(f"{first['pointer']}: {first['message']}{more}",
                                  errors=problems)

    def _name_of_position(self, index: int) -> str | None:
        if index < len(self.positional):
            return self.positional[index]
        return self.var_positional

    def _check(self, value: Any, name: str | None, pointer: str,
               variadic: bool) -> list[dict[str, str]]:
        problems = find_non_json(value, pointer)
        if problems or name is None or name not in self.hints:
            return problems
        # a hint on *args / **kwargs describes each item, not the tuple/dict
        message = check_type(value, self.hints[name])
        if message:
            label = f"argument {name!r}" if not variadic else f"an item of {name!r}"
            return [{"pointer": pointer, "message": f"{label} {message}"}]
        return []

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of a request body ``{"args": [...], "kwargs": {...}}`` for this task."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            schema = type_schema(self.hints.get(param.name, Any))
            if param.default is not param.empty:
                schema = {**schema, "default": _json_default(param.default)}
            else:
                required.append(param.name)
            properties[param.name] = schema
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": self.var_keyword is not None,
        }


def _json_default(value: Any) -> Any:
    return value if not find_non_json(value, "#") else repr(value)


def _type_name(hint: Any) -> str:
    if hint is _NoneType or hint is None:
        return "None"
    return getattr(hint, "__name__", None) or repr(hint).replace("typing.", "")


def check_type(value: Any, hint: Any) -> str | None:
    """None when ``value`` fits ``hint``, else what is wrong ("must be int, got str")."""
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return check_type(value, typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        messages = [check_type(value, option) for option in options]
        if any(message is None for message in messages):
            return None
        # the value has the right shape for one option but a bad item: say which item
        deeper = [m for m in messages if m and not m.startswith("must be")]
        if deeper:
            return deeper[0]
        return f"must be {' or '.join(_type_name(o) for o in options)}, " \
               f"got {type(value).__name__}"
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        return None if value in allowed else f"must be one of {list(allowed)!r}, got {value!r}"
    if hint is None or hint is _NoneType:
        return None if value is None else f"must be None, got {type(value).__name__}"
    if hint is float:  # JSON does not tell 1 from 1.0
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"must be float, got {type(value).__name__}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"must be int, got {type(value).__name__}"
    if hint in (str, bool):
        return None if isinstance(value, hint) else \
            f"must be {hint.__name__}, got {type(value).__name__}"
    if _is_typeddict(hint):
        return _check_typeddict(value, hint)
    container = origin or hint
    if container in (list, tuple, set, frozenset, Sequence, typing.Sequence,
                     typing.List, typing.Tuple):  # noqa: UP006
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {type(value).__name__}"
        item_args = typing.get_args(hint)
        if container is tuple and item_args and item_args[-1] is not Ellipsis:
            if len(item_args) != len(value):
                return f"must have {len(item_args)} items, got {len(value)}"
            pairs = list(zip(value, item_args, strict=True))
        else:
            item = item_args[0] if item_args else Any
            pairs = [(v, item) for v in value]
        for i, (item_value, item_hint) in enumerate(pairs):
            message = check_type(item_value, item_hint)
            if message:
                return f"item {i} {message}"
        return None
    if container in (dict, Mapping, typing.Dict, typing.Mapping):  # noqa: UP006
        if not isinstance(value, dict):
            return f"must be an object, got {type(value).__name__}"
        args = typing.get_args(hint)
        if len(args) == 2:
            for key, item_value in value.items():
                message = check_type(item_value, args[1])
                if message:
                    return f"key {key!r} {message}"
        return None
    return None  # a type JSON cannot describe exactly: the JSON check above is all we do


def _is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__total__")


def _check_typeddict(value: Any, hint: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be an object, got {type(value).__name__}"
    fields = typing.get_type_hints(hint)
    missing = sorted(hint.__required_keys__ - value.keys())
    if missing:
        return f"is missing key {missing[0]!r}"
    for key, item_value in value.items():
        if key in fields:
            message = check_type(item_value, fields[key])
            if message:
                return f"key {key!r} {message}"
    return None


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a type hint (``{}`` for anything it cannot describe)."""
    if hint is Any or hint is object:
        return {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return type_schema(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [type_schema(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean",
              None: "null", _NoneType: "null"}
    if hint in simple:
        return {"type": simple[hint]}
    if _is_typeddict(hint):
        fields = typing.get_type_hints(hint)
        return {"type": "object", "properties": {k: type_schema(v) for k, v in fields.items()},
                "required": sorted(hint.__required_keys__)}
    container = origin or hint
    if container in (list, set, frozenset, Sequence):
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if container is tuple:
        if args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [type_schema(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if container in (dict, Mapping):
        return {"type": "object",
                "additionalProperties": type_schema(args[1]) if len(args) == 2 else {}}
    return {}
