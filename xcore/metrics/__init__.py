"""Evaluation metrics behind one protocol, found through a registry (:mod:`xcore.metrics.base`).

Every module of this package registers its metric(s) on import with :func:`xcore.metrics.base.register`:
adding a metric = adding one module. Underscore modules are helpers and register nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from xcore.core.param_types import fit_params
from xcore.core.params import check_ignored
from xcore.metrics.base import METRICS, Metric, register

__all__ = ["METRICS", "Metric", "available", "register", "validate"]

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")


def available() -> list[str]:
    """Registry names of every metric (the metric columns' prefixes in the ``metrics`` table)."""
    return METRICS.names()


def validate(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full parameters of metric ``name``, each given value brought to its declared type
    (:mod:`xcore.core.param_types`); ``UsageError`` for an unknown metric or parameter, a value that does not fit
    its type, or a parameter the chosen variant ignores (:func:`xcore.core.params.ignores`)."""
    metric = METRICS.get(name)
    full = metric.params(fit_params("metric", name, metric.fn, params or {}))
    check_ignored(metric.fn, full)
    return full


def run(name: str, model: Any, x: Any, maps: Any, targets: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Score ``maps`` (B, *S') of ``model`` on ``x`` with metric ``name``: per-sample values by key.

    ``kwargs`` are the metric's parameters (defaults filled in; an unknown name raises ``UsageError``) and the
    per-sample annotations it ``needs`` (e.g. ``boxes=[...]``, one entry per sample).
    """
    metric = METRICS.get(name)
    given = {k: kwargs.pop(k) for k in metric.needs if k in kwargs}
    return metric.fn(model, x, maps, targets, **metric.params(kwargs), **given)
