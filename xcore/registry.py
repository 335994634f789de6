"""A small name -> object registry shared by explainers, metrics, models and datasets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from xcore.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps stable public names (the contract used in Parquet columns and on the CLI) to objects."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("gradcam")``. Registering a name twice is a programming error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


def keyword_defaults(fn: Callable[..., object]) -> dict[str, object]:
    """The keyword-only parameters of ``fn`` with their defaults: a method's or metric's published defaults."""
    import inspect

    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def merge_params(kind: str, name: str, defaults: dict[str, object], overrides: dict[str, object]) -> dict:
    """``defaults`` updated with ``overrides``; a ``UsageError`` names any parameter ``name`` does not take."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        from xcore.errors import UsageError

        raise UsageError(f"{kind} {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(defaults)}")
    return {**defaults, **overrides}
