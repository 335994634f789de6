"""Parameter values checked against the types their method or metric declares: one mechanism for every source.

A method's or metric's parameters are its keyword-only arguments; their annotations are the declared types
(``layer: str | None``, ``steps: int``, ``mean: Sequence[float]``). :func:`fit_params` brings the given values to
those types or raises one :class:`~xcore.errors.UsageError` naming the parameter, the value and the expected type.
``xcore.explain.validate`` and ``xcore.metrics.validate`` call it, so CLI ``-p`` values, ``xai job`` config files and
Prefect parameters all get the same rules:

- a value that fits as it is stays as it is;
- a text value (``-p NAME=TEXT``, a quoted YAML scalar) is read as JSON first and kept as text only when the JSON
  value does not fit: ``-p gradcam.layer=7`` is the layer named ``"7"`` (a ``str`` parameter), ``-p
  deletion_insertion.steps=8`` is the number 8, ``-p lime.hide=0.5`` the number 0.5 of a ``str | float``;
- a number given to a ``str`` parameter becomes its text (YAML ``layer: 7``), an integral float an ``int``;
- anything else (``steps=abc``, ``layer=true``) does not fit.

Annotations this module does not know (``Callable``, classes such as ``Tensor``) accept instances / anything.
"""

from __future__ import annotations

import functools
import json
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xcore.errors import UsageError


class _MisfitError(Exception):
    """The value does not fit the annotation (internal)."""


_SEQUENCES = (list, tuple, Sequence)


@functools.cache
def declared_types(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``fn``'s keyword-only parameters (through decorators' ``__wrapped__``); one that
    cannot be resolved (a name only imported for type checking) is ``Any``: not checked."""
    import inspect

    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # resolve what can be resolved, one annotation at a time
        base = inspect.unwrap(fn)
        hints = {}
        for name, ann in getattr(base, "__annotations__", {}).items():
            try:
                one = types.SimpleNamespace(__annotations__={name: ann})
                hints[name] = typing.get_type_hints(one, globalns=base.__globals__)[name]
            except Exception:
                hints[name] = Any
    return {k: hints.get(k, Any) for k, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def fit_params(kind: str, name: str, fn: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every value brought to the type ``fn`` declares for it (module docstring); parameters ``fn``
    does not declare pass through untouched (the registry's unknown-name check reports them)."""
    types_ = declared_types(fn)
    out = dict(params)
    for key, value in params.items():
        if key in types_:
            out[key] = fit_value(types_[key], value, f"{kind} {name!r}: parameter {key}")
    return out


def fit_value(annotation: Any, value: Any, what: str = "value") -> Any:
    """``value`` as ``annotation`` declares it (module docstring); ``UsageError`` naming ``what`` when it does not
    fit."""
    candidates = [value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            pass
        else:
            if not isinstance(parsed, str):
                candidates.insert(0, parsed)
    for lax in (False, True):
        for cand in candidates:
            try:
                return _fit(annotation, cand, lax)
            except _MisfitError:
                continue
    raise UsageError(f"{what}={value!r} does not fit its type: expected {type_text(annotation)}")


def _fit(ann: Any, v: Any, lax: bool) -> Any:
    """``v`` fitted to ``ann``: as it is, or (``lax``) converted (number -> text, integral float -> int)."""
    if ann is Any or ann is object:
        return v
    if ann is None or ann is type(None):
        if v is None:
            return v
        raise _MisfitError
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        for member_lax in (False, True) if lax else (False,):  # a member it fits as it is wins
            for a in args:
                try:
                    return _fit(a, v, member_lax)
                except _MisfitError:
                    continue
        raise _MisfitError
    if origin is typing.Literal:
        if v in args:
            return v
        raise _MisfitError
    if ann is bool:
        if isinstance(v, bool):
            return v
        raise _MisfitError
    if ann is int:
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return v
        if lax and isinstance(v, float) and v.is_integer():
            return int(v)
        raise _MisfitError
    if ann is float:
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            return v
        raise _MisfitError
    if ann is str:
        if isinstance(v, str):
            return v
        if lax and isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
        raise _MisfitError
    if origin in _SEQUENCES or ann in _SEQUENCES:
        return _fit_sequence(origin or ann, args, v, lax)
    if origin in (dict, Mapping) or ann in (dict, Mapping):
        if not isinstance(v, Mapping):
            raise _MisfitError
        kt, vt = args or (Any, Any)
        return {_fit(kt, k, lax): _fit(vt, x, lax) for k, x in v.items()}
    if isinstance(ann, type) and origin is None:
        if isinstance(v, ann):
            return v
        raise _MisfitError
    return v  # Callable[...], protocols, …: not checked here


def _fit_sequence(origin: Any, args: tuple[Any, ...], v: Any, lax: bool) -> Any:
    """A list / tuple value of a ``Sequence[X]``, ``list[X]``, ``tuple[X, ...]`` or ``tuple[X, Y]`` parameter."""
    if isinstance(v, str | bytes) or not isinstance(v, list | tuple):
        raise _MisfitError
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(v) != len(args):
            raise _MisfitError
        items = [_fit(a, x, lax) for a, x in zip(args, v, strict=True)]
    else:
        item = args[0] if args else Any
        items = [_fit(item, x, lax) for x in v]
    return type(v)(items)


def type_text(ann: Any) -> str:
    """The annotation in words for a message: ``int``, ``str or None``, ``list of float``, ``[int, int]``."""
    if ann is None or ann is type(None):
        return "None"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in _SEQUENCES:
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return "[" + ", ".join(type_text(a) for a in args) + "]"
        return f"list of {type_text(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return "mapping"
    return getattr(ann, "__name__", None) or str(ann)
