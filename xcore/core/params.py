"""Parameters that do nothing must say so: a method's or metric's parameter that the chosen variant ignores is a
:class:`~xcore.errors.UsageError` naming it, instead of a silent no-op.

The published defaults are always filled in (:func:`xcore.registry.merge_params`), so "the user set it" means "its
value differs from the published default". Two ways to declare it:

- :func:`ignores` with rules (:func:`by_value`, :func:`when_given`) that depend on the parameters alone: the decorated
  function checks every call, and :func:`check_ignored` checks a parameter set before anything runs;
- :func:`reject_ignored` inside a function, where what is ignored depends on the input (e.g. a clip-only option given
  with an image).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from xcore.errors import UsageError
from xcore.registry import keyword_defaults

F = TypeVar("F", bound=Callable[..., Any])
#: A rule: the full parameters -> (the names they make ineffective, the condition in words), or None.
Rule = Callable[[Mapping[str, Any]], tuple[Sequence[str], str] | None]


def same_value(value: Any, default: Any) -> bool:
    """Whether ``value`` is the default: ``==``, with lists and tuples compared item by item (a YAML list equals a
    tuple default); a value that cannot be compared to a bool (an array, a tensor) counts as set."""
    if value is default:
        return True
    if isinstance(value, list | tuple) and isinstance(default, list | tuple):
        return len(value) == len(default) and all(same_value(v, d) for v, d in zip(value, default, strict=True))
    try:
        return bool(value == default)
    except (TypeError, ValueError, RuntimeError):
        return False


def reject_ignored(fn: Callable[..., Any], when: str, **given: Any) -> None:
    """Raise a :class:`UsageError` naming each of ``given`` (parameters ``fn`` ignores ``when`` …, with their values)
    whose value is not ``fn``'s published default; nothing when all are at their defaults."""
    defaults = keyword_defaults(fn)
    changed = [name for name, value in given.items() if not same_value(value, defaults[name])]
    if changed:
        what = "; ".join(f"{name}={given[name]!r} has no effect with {when} (its default is {defaults[name]!r})"
                         for name in changed)
        raise UsageError(f"{fn.__name__}: {what}; remove it from the parameters or pick a variant that uses it")


def by_value(param: str, table: Mapping[Any, Sequence[str]]) -> Rule:
    """Rule: with ``param = v``, the parameters ``table[v]`` do nothing (values missing from ``table``: none)."""

    def rule(params: Mapping[str, Any]) -> tuple[Sequence[str], str] | None:
        value = params[param]
        try:
            names = table.get(value, ())
        except TypeError:  # an unhashable value is no table key
            return None
        return (names, f"{param}={value!r}") if names else None

    return rule


def when_given(param: str, names: Sequence[str]) -> Rule:
    """Rule: once ``param`` is given (not None), the parameters ``names`` do nothing."""

    def rule(params: Mapping[str, Any]) -> tuple[Sequence[str], str] | None:
        return None if params[param] is None else (names, f"{param} given")

    return rule


def ignores(*rules: Rule) -> Callable[[F], F]:
    """Decorator: every call of the function checks its keyword parameters against ``rules`` first (a non-default
    value for a parameter a rule makes ineffective raises); the check is kept as ``fn.check_params`` for
    :func:`check_ignored`. The signature, hence the published defaults, is the function's own."""

    def deco(fn: F) -> F:
        defaults = keyword_defaults(fn)

        def check(params: Mapping[str, Any]) -> None:
            full = {**defaults, **{k: v for k, v in params.items() if k in defaults}}
            for rule in rules:
                hit = rule(full)
                if hit is not None:
                    names, when = hit
                    reject_ignored(fn, when, **{name: full[name] for name in names})

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return fn(*args, **kwargs)

        wrapper.check_params = check  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return deco


def check_ignored(fn: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """Check ``params`` against ``fn``'s :func:`ignores` rules without running it (no rules: nothing to check)."""
    check = getattr(fn, "check_params", None)
    if check is not None:
        check(params)
