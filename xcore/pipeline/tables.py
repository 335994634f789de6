"""Arrow schemas of the explain job's tables and the assembly of one shard's tables from rows.

Metric columns come from each metric's declared ``per_sample_keys``: those it declares as ``list_keys`` are
``list<float32>``, all others ``float64``; a method's declared ``extras`` (e.g. freeze-frame
predictions) are ``list<float32>`` columns of its own metrics files. Error rows keep them null. ``meta`` is the
sample's scalar annotations as JSON (e.g. a skeleton's ``valid_frames``, ``subject``, ``camera``). ``part`` names
the map of a multi-part method (``"map"`` for single-map methods; e.g. ``temporal`` / ``spatial`` / ``full``).
``explain_ms``, ``explain_batch``, ``device`` and one ``<metric>_ms`` per metric time the explanation and each
metric apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

import xcore.explain
import xcore.metrics
from xcore.core.shards import Shard
from xcore.io.parquet import HEATMAP_FIELDS
from xcore.io.runs import RunLayout

_ID = [pa.field("sample_id", pa.string()), pa.field("index", pa.int64()), pa.field("label", pa.int64()),
       pa.field("target", pa.int64()), pa.field("pred", pa.int64()), pa.field("meta", pa.string())]

EXPLANATIONS = pa.schema([*_ID, pa.field("score", pa.float64()), pa.field("method", pa.string()),
                          pa.field("part", pa.string()), pa.field("params", pa.string()), *HEATMAP_FIELDS,
                          pa.field("native_shape", pa.list_(pa.int32())), pa.field("run_key", pa.string())])

METRICS_HEAD = [*_ID, pa.field("pred_score", pa.float64()), pa.field("method", pa.string())]
METRICS_TAIL = [pa.field("status", pa.string()), pa.field("error_type", pa.string()),
                pa.field("device", pa.string()), pa.field("explain_ms", pa.float64()),
                pa.field("explain_batch", pa.int64())]

ERRORS = pa.schema([pa.field("sample_id", pa.string()), pa.field("index", pa.int64()),
                    pa.field("stage", pa.string()), pa.field("method", pa.string()),
                    pa.field("error_type", pa.string()), pa.field("message", pa.string()),
                    pa.field("run_key", pa.string())])


def is_timing(column: str) -> bool:
    """Whether a ``metrics`` column is a measured time (``explain_ms``, ``<metric>_ms``) or the batch size it was
    measured at: the columns that differ between two runs of the same configuration."""
    return column.endswith("_ms") or column == "explain_batch"


def metric_fields(metrics: dict[str, Any]) -> list[pa.Field]:
    """One column per per-sample key of every configured metric, in configuration order."""
    fields: list[pa.Field] = []
    for name in metrics:
        metric = xcore.metrics.METRICS.get(name)
        for key in metric.per_sample_keys:
            fields.append(pa.field(key, pa.list_(pa.float32()) if key in metric.list_keys else pa.float64()))
    return fields


def metrics_schema(metrics: dict[str, Any], extras: tuple[str, ...] = ()) -> pa.Schema:
    """The ``metrics`` schema: identity, every metric's columns, the method's ``extras`` (list columns), status."""
    extra = [pa.field(k, pa.list_(pa.float32())) for k in extras]
    timing = [pa.field(f"{name}_ms", pa.float64()) for name in metrics]
    return pa.schema([*METRICS_HEAD, *metric_fields(metrics), *extra, *METRICS_TAIL, *timing,
                      pa.field("run_key", pa.string())])


def _table(rows: list[dict[str, Any]], schema: pa.Schema, key: str) -> pa.Table:
    return pa.Table.from_pylist([{**r, "run_key": key} for r in rows], schema=schema)


def build_tables(layout: RunLayout, shard: Shard, key: str,
                 rows: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
                 errors: list[dict[str, Any]], methods: dict[str, Any],
                 metrics: dict[str, Any]) -> tuple[dict[Path, pa.Table], dict[str, int]]:
    """Every file of ``shard``: explanations and metrics per method, then errors (possibly empty)."""
    tables: dict[Path, pa.Table] = {}
    ok = failed = 0
    for method in methods:
        expl, mets = rows[method]
        tables[layout.table_path("explanations", shard, method)] = _table(expl, EXPLANATIONS, key)
        mschema = metrics_schema(metrics, xcore.explain.METHODS.get(method).extras)
        tables[layout.table_path("metrics", shard, method)] = _table(mets, mschema, key)
        ok += sum(r["status"] == "ok" for r in mets)
        failed += sum(r["status"] != "ok" for r in mets)
    tables[layout.table_path("errors", shard)] = _table(errors, ERRORS, key)
    return tables, {"ok": ok, "failed": failed}
