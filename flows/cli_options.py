"""CLI plumbing shared by the ``xai`` commands: options generated from the typed configs, ``NAME=VALUE`` parsing,
and the one-line usage error.

:func:`model_options` turns the fields of a pydantic config (``xcore.pipeline.config``, ``tasks.options``) into
typer options (``--shard-size``, ``--run-id``, …, with the field's description as help), so a new config key is a
new CLI option without touching the CLI.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel

from xcore.errors import UsageError
from xcore.pipeline.config import cli_fields


def fail(err: Exception, code: int = 2) -> typer.Exit:
    """Print ``err`` as one line on stderr; the exit to raise."""
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def parse_value(text: str) -> Any:
    """``3`` -> int, ``0.5`` -> float, ``true`` / ``null`` / JSON lists -> Python, anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(flag: str, specs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: parse_value(v)}`` (UsageError naming ``flag`` on a bad spec)."""
    out: dict[str, Any] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {spec!r}: use NAME=VALUE")
        out[key] = parse_value(value)
    return out


def parse_params(names: list[str], params: list[str]) -> dict[str, dict[str, Any]]:
    """``--method m`` / ``--metric n`` and ``--param m.key=value`` -> ``{name: {key: value}}`` (UsageError on a
    bad spec or a value that does not fit the parameter's type); a parameter goes to whichever selected name it
    starts with, and its text is read by the type that method or metric declares (:func:`typed_params`)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in names}
    for spec in params:
        name, sep, value = spec.partition("=")
        method, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise UsageError(f"--param {spec!r}: use METHOD.NAME=VALUE")
        if method not in out:
            raise UsageError(f"--param {spec!r}: {method!r} is not selected with --method / --metric")
        out[method][key] = value
    return {name: typed_params(name, texts) for name, texts in out.items()}


def typed_params(name: str, texts: dict[str, str]) -> dict[str, Any]:
    """``-p`` texts of method or metric ``name`` as the types it declares (``layer=7`` -> ``"7"``, ``steps=8`` -> 8;
    :func:`xcore.core.param_types.fit_params`, the check ``validate`` applies to config files too); the job's
    validation reports a key the method does not take; a name no registry knows gets :func:`parse_value` values."""
    import xcore.explain
    import xcore.metrics
    from xcore.core.param_types import fit_params

    for kind, registry in (("method", xcore.explain.METHODS), ("metric", xcore.metrics.METRICS)):
        if name in registry:
            return fit_params(kind, name, registry.get(name).fn, texts)
    return {k: parse_value(v) for k, v in texts.items()}


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a field as: ``Literal`` choices as ``str`` (validated by the model), a list as a
    repeatable ``str`` option (the model parses the items, e.g. ``--mean 0.485,0.456,0.406``), optional kept."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(annotation) is list:
        return list[str]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _cli_type(inner[0]) | None if len(inner) == 1 else str | None
    return annotation


def model_options(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword-only typer option per CLI field of ``model`` (required fields stay required)."""
    params = []
    for name, field in cli_fields(model).items():
        default = ... if field.is_required() else field.default
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=_cli_type(field.annotation),
            default=typer.Option(default, help=field.description)))
    return params


def with_model_options(*models: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``fn(*explicit options, values: list[dict])``: its signature gains every CLI field of
    ``models``; typer's values for them reach ``fn`` as ``values``, one dict per model (``None`` left out)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        explicit = [p for p in sig.parameters.values() if p.name != "values"]
        generated = {m: model_options(m) for m in models}
        hints = typing.get_type_hints(fn)

        def command(**kwargs: Any) -> Any:
            values = [{p.name: kwargs.pop(p.name) for p in ps} for ps in generated.values()]
            values = [{k: v for k, v in d.items() if v is not None} for d in values]
            return fn(**kwargs, values=values)

        params = explicit + [p for ps in generated.values() for p in ps]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {**{k: v for k, v in hints.items() if k != "values"},
                                   **{p.name: p.annotation for ps in generated.values() for p in ps}}
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        return command

    return deco
