"""DuckDB over a run's Parquet tables: one view per committed table (``metrics``, ``explanations``, ``errors``,
``roar``, ``filter_scores``, ...), one per reduced table under ``analysis/`` (``filter_stats``, ``roar_curves``, ...)
and the per-method summary.

Each view reads exactly the files listed by the commit records of the run's key (``read_parquet([...])``,
:func:`xcore.io.commits.committed_files`), never a glob: a copied ``shard-000003.backup.parquet``, a shard
written but not committed before a kill, or a temp file is not part of any query, summary or ``run.json``.
``hive_types`` keeps the ``method`` / ``scorer`` partitions VARCHARs; ``union_by_name`` tolerates schema evolution.
The same views over every run under one output root: :mod:`xcore.io.catalog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from xcore.io.commits import committed_files, resolve_key

TABLES = ("metrics", "explanations", "errors")
EMPTY_COLUMNS = ("NULL::VARCHAR AS sample_id, NULL::VARCHAR AS method, NULL::VARCHAR AS status, "
                 "NULL::DOUBLE AS deletion_auc, NULL::DOUBLE AS insertion_auc")  # a table no shard has yet


def summary_sql(columns: list[str]) -> str:
    """Per-method counts and the mean of every ``*_auc`` column over ``status = 'ok'`` rows; with the faithfulness
    metric's columns also AD and IIC (:func:`xcore.metrics.faithfulness.average_drop_increase`, in SQL)."""
    means = "".join(f", avg({c}) FILTER (WHERE status = 'ok') AS {c}" for c in columns if c.endswith("_auc"))
    if {"confidence", "masked_confidence"} <= set(columns):  # Average Drop / Increase in Confidence (eqs 5.4-5.5)
        means += (", 100 * avg(greatest(0, confidence - masked_confidence) / confidence) FILTER (WHERE status = "
                  "'ok') AS AD, 100 * avg((masked_confidence > confidence)::INT) FILTER (WHERE status = 'ok') AS IIC")
    return ("SELECT method, count(*) FILTER (WHERE status = 'ok') AS ok, "
            f"count(*) FILTER (WHERE status <> 'ok') AS errors{means} "
            "FROM metrics GROUP BY method ORDER BY method")


def sql_list(paths: Sequence[Path | str]) -> str:
    """``paths`` as a DuckDB list literal of quoted strings (``read_parquet([...])``)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def read_committed(files: Sequence[Path]) -> str:
    """The ``read_parquet([...])`` expression over the committed ``files`` of one table (of one run or of many,
    :mod:`xcore.io.catalog`): hive partitions (``method=`` / ``scorer=``) as VARCHARs, ``union_by_name``."""
    keys = sorted({p.parent.name.partition("=")[0] for p in files if "=" in p.parent.name})
    hive = (", hive_types = {" + ", ".join(f"'{k}': 'VARCHAR'" for k in keys) + "}") if keys else ""
    return f"read_parquet({sql_list(files)}, hive_partitioning = true, union_by_name = true{hive})"


def connect(run_dir: Path | str, run_key: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table (:data:`TABLES` and every other table the commit
    records list, e.g. ``roar``) over the committed files of run ``run_key``
    (default: the run's own key, :func:`xcore.io.commits.resolve_key`) under ``run_dir``. A table without
    committed files is an empty view. Raises :class:`xcore.errors.UsageError` when the key is ambiguous and
    ``duckdb.Error`` when a committed file cannot be read."""
    root = Path(run_dir)
    key = run_key or resolve_key(root)
    tables = committed_files(root, key) if key else {}
    con = duckdb.connect()
    try:
        for table in sorted(set(TABLES) | set(tables)):  # the explain tables always; a job's own (roar) when there
            files = tables.get(table, [])
            if files:
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM {read_committed(files)}")
            else:  # keep queries valid on a run without this table yet
                con.execute(f"CREATE VIEW {table} AS SELECT {EMPTY_COLUMNS} WHERE false")
        for path in derived_tables(root):
            if path.stem not in tables and path.stem not in TABLES:
                con.execute(f"CREATE VIEW {path.stem} AS SELECT * FROM read_parquet({sql_list([path])})")
    except BaseException:
        con.close()
        raise
    return con


def derived_tables(root: Path) -> list[Path]:
    """The reduce step's tables, ``<run>/analysis/<name>.parquet`` (e.g. ``filter_stats``, ``roar_curves``): each
    is written atomically from the committed shards, so it is a view too."""
    folder = root / "analysis"
    return sorted(p for p in folder.glob("*.parquet") if p.stem.isidentifier()) if folder.is_dir() else []


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql``."""
    rel = con.execute(sql)
    cols = [d[0] for d in rel.description or []]
    return cols, rel.fetchall()


def summarise(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """:func:`summary_sql` over the ``metrics`` view of ``con``, as one dict per method."""
    columns = [r[0] for r in con.execute("DESCRIBE metrics").fetchall()]
    cols, data = rows(con, summary_sql(columns))
    return [dict(zip(cols, r, strict=True)) for r in data]


def method_summary(run_dir: Path | str, run_key: str | None = None) -> list[dict[str, Any]]:
    """Per method: ok / error row counts and mean deletion / insertion AUC over ``status = 'ok'`` rows of the
    committed shards of ``run_key`` (default: the run's own key)."""
    con = connect(run_dir, run_key)
    try:
        return summarise(con)
    finally:
        con.close()
