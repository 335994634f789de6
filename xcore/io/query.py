"""DuckDB over a run's Parquet tables: views ``metrics``, ``explanations``, ``errors`` and the per-method summary.

Globs end in ``*.parquet``, so temp files of unfinished writes (``.shard-*.parquet.tmp-<uuid>``) never match.
``hive_types`` keeps the ``method`` partition a VARCHAR; ``union_by_name`` tolerates schema evolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

TABLES = ("metrics", "explanations", "errors")


def summary_sql(columns: list[str]) -> str:
    """Per-method counts and the mean of every ``*_auc`` column over ``status = 'ok'`` rows."""
    means = "".join(f", avg({c}) FILTER (WHERE status = 'ok') AS {c}" for c in columns if c.endswith("_auc"))
    return ("SELECT method, count(*) FILTER (WHERE status = 'ok') AS ok, "
            f"count(*) FILTER (WHERE status <> 'ok') AS errors{means} "
            "FROM metrics GROUP BY method ORDER BY method")


def connect(run_dir: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table of the run under ``run_dir``."""
    root = Path(run_dir)
    con = duckdb.connect()
    for table in TABLES:
        files = list((root / table).glob("**/*.parquet")) if (root / table).is_dir() else []
        if files:
            glob = str(root / table / "**" / "*.parquet").replace("'", "''")
            hive = ", hive_types = {'method': 'VARCHAR'}" if any(p.parent.name.startswith("method=")
                                                                  for p in files) else ""
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                        f"union_by_name = true{hive})")
        else:  # keep queries valid on a run without this table yet
            con.execute(f"CREATE VIEW {table} AS SELECT NULL::VARCHAR AS sample_id, NULL::VARCHAR AS method, "
                        "NULL::VARCHAR AS status, NULL::DOUBLE AS deletion_auc, "
                        "NULL::DOUBLE AS insertion_auc WHERE false")
    return con


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql``."""
    rel = con.execute(sql)
    cols = [d[0] for d in rel.description or []]
    return cols, rel.fetchall()


def method_summary(run_dir: Path | str) -> list[dict[str, Any]]:
    """Per method: ok / error row counts and mean deletion / insertion AUC over ``status = 'ok'`` rows."""
    con = connect(run_dir)
    try:
        columns = [r[0] for r in con.execute("DESCRIBE metrics").fetchall()]
        cols, data = rows(con, summary_sql(columns))
    finally:
        con.close()
    return [dict(zip(cols, r, strict=True)) for r in data]
