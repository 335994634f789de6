"""Evaluation metrics behind one protocol, found through a registry.

A metric is ``fn(model, x, maps, targets, **params) -> dict[str, Tensor]``: per-sample values with a leading
batch dim (scalars become columns, 1-D curves become list columns of the ``metrics`` table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xcore.metrics.deletion_insertion import auc, deletion_insertion
from xcore.metrics.localisation import localisation_error, weak_localisation
from xcore.metrics.node_masking import node_masking
from xcore.registry import Registry, keyword_defaults, merge_params

__all__ = ["METRICS", "Metric", "auc", "available", "deletion_insertion", "localisation_error", "node_masking",
           "validate", "weak_localisation"]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., dict[str, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    per_sample_keys: tuple[str, ...] = ()
    list_keys: tuple[str, ...] = ()  # per-sample keys holding a list (besides *_curve)
    needs: tuple[str, ...] = ()  # sample annotations passed as keyword lists (e.g. "boxes"), one per sample

    def params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The full parameters: defaults updated with ``overrides`` (unknown names raise ``UsageError``)."""
        return merge_params("metric", self.name, self.defaults, overrides)


METRICS: Registry[Metric] = Registry("metric")
METRICS.add("deletion_insertion", Metric(
    "deletion_insertion", deletion_insertion, keyword_defaults(deletion_insertion),
    ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve")))
METRICS.add("node_masking", Metric(
    "node_masking", node_masking, keyword_defaults(node_masking),
    ("important_preds", "unimportant_preds"), list_keys=("important_preds", "unimportant_preds")))
_LOC_KEYS = ("loc_val_iou", "loc_mean_iou", "loc_energy_iou")
METRICS.add("weak_localisation", Metric(
    "weak_localisation", weak_localisation,
    {k: v for k, v in keyword_defaults(weak_localisation).items() if k != "boxes"},  # boxes: per sample (needs)
    _LOC_KEYS, list_keys=_LOC_KEYS, needs=("boxes",)))


def available() -> list[str]:
    return METRICS.names()


def validate(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full parameters of metric ``name``; ``UsageError`` for an unknown metric or parameter."""
    return METRICS.get(name).params(dict(params or {}))
