"""The metric protocol and registry: :class:`Metric`, :data:`METRICS` and the :func:`register` decorator.

A metric is ``fn(model, x, maps, targets, **params) -> dict[str, Tensor]``: per-sample values with a leading
batch dim. The decorator declares what the shard worker needs to store them: ``keys`` (the per-sample outputs,
in column order), ``list_keys`` (those holding one list per sample, e.g. a curve; stored as ``list<float32>``,
the rest as ``float64``) and ``needs`` (sample annotations passed as one keyword list, e.g. ``boxes``; the
metric runs on the samples that have them). The keyword-only defaults of ``fn`` are its published parameters;
a ``needs`` name is per-sample data, not a parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xcore.registry import Registry, keyword_defaults, merge_params

MetricFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, published defaults and the per-sample outputs it writes."""

    name: str
    fn: MetricFn
    defaults: dict[str, Any] = field(default_factory=dict)
    per_sample_keys: tuple[str, ...] = ()
    list_keys: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    by_method: Callable[[str], dict[str, Any]] | None = None

    def method_defaults(self, method: str) -> dict[str, Any]:
        """Defaults that depend on the explained method (e.g. the pointing game smooths gradient maps only);
        a parameter the user sets wins over them."""
        return dict(self.by_method(method)) if self.by_method is not None else {}

    def params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The full parameters: defaults updated with ``overrides`` (unknown names raise ``UsageError``)."""
        return merge_params("metric", self.name, self.defaults, overrides)


METRICS: Registry[Metric] = Registry("metric")


def register(name: str, *, keys: tuple[str, ...], list_keys: tuple[str, ...] = (), needs: tuple[str, ...] = (),
             by_method: Callable[[str], dict[str, Any]] | None = None) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn`` as metric ``name`` (see the module docstring for ``keys``, ``list_keys``, ``needs``;
    ``by_method(method)`` gives parameter defaults that depend on the explained method)."""
    if not set(list_keys) <= set(keys):
        raise ValueError(f"metric {name!r}: list_keys {sorted(set(list_keys) - set(keys))} are not among its keys")

    def deco(fn: MetricFn) -> MetricFn:
        defaults = {k: v for k, v in keyword_defaults(fn).items() if k not in needs}
        METRICS.add(name, Metric(name, fn, defaults, tuple(keys), tuple(list_keys), tuple(needs), by_method))
        return fn

    return deco
