"""DuckDB over every run under one output root: scheduled runs pile up under a deployment's ``out`` (each one
``OUT/RUN_ID``) and their users compare them over time (``xai query ROOT "SQL"``).

:func:`connect_root` opens, over the runs found under the root (:func:`run_dirs`):

- one view per table any run committed (``metrics``, ``explanations``, ``errors``, ``roar``, ``filter_scores``,
  ...): one ``read_parquet([...])`` over the files the commit records of each run list for that run's own key
  (:func:`xcore.io.commits.committed_files`, :func:`xcore.io.query.read_committed`, as in
  :func:`xcore.io.query.connect`), never a glob; ``union_by_name``, so runs whose schemas differ still union, and
  every row carries its ``run_key`` column as written;
- one view per reduced table (``analysis/<name>.parquet``: ``filter_stats``, ``roar_curves``, ...) of the runs with
  committed shards, with a ``run_key`` column added (the reduced files record it in their footer only);
- the table ``runs`` (:data:`RUNS`), one row per run, from its ``run.json`` (:func:`runs_table`), so
  ``SELECT r.finished, m.method, avg(m.deletion_auc) FROM metrics m JOIN runs r USING (run_key) GROUP BY 1, 2``
  compares runs over time.

A folder that is not a run contributes nothing; a run without a committed shard contributes no data rows, but is a
row of ``runs`` (with its status). Several folders holding one run key (a copy, or one configuration under two
``--run-id``) hold one computation: the catalog reads one of them (the most committed shards, then the latest
``finished``, then the first path), so every run key is counted once.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from xcore.errors import UsageError
from xcore.io.atomic import read_json
from xcore.io.commits import committed_files, records, resolve_key
from xcore.io.query import EMPTY_COLUMNS, TABLES, derived_tables, read_committed, sql_list

RUN_MARKERS = ("run.json", "_shards", "_manifests/plan.json")  # what makes a folder a run (``xai verify`` too)
RUNS: tuple[tuple[str, str], ...] = (  # the ``runs`` table: column, DuckDB type
    ("run_key", "VARCHAR"), ("run_id", "VARCHAR"), ("dir", "VARCHAR"), ("kind", "VARCHAR"), ("dataset", "VARCHAR"),
    ("split", "VARCHAR"), ("dataset_kind", "VARCHAR"), ("model", "VARCHAR"), ("model_digest", "VARCHAR"),
    ("methods", "VARCHAR[]"), ("metrics", "VARCHAR[]"), ("started", "TIMESTAMP"), ("finished", "TIMESTAMP"),
    ("status", "VARCHAR"), ("xcore_version", "VARCHAR"), ("shards_committed", "INTEGER"))


@dataclass(frozen=True)
class Run:
    """One run directory: its key, ``run.json`` (``{}`` before the reduce step wrote it), the committed files per
    table and the number of commit records of its key."""

    dir: Path
    key: str
    info: dict[str, Any]
    tables: dict[str, list[Path]]
    shards: int


def is_run(path: Path) -> bool:
    """``path`` is a run directory: it has ``run.json``, ``_shards`` or ``_manifests/plan.json``."""
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def subdirs(path: Path) -> list[Path]:
    """The visible sub-folders of ``path`` by name (hidden ones, e.g. temp folders, skipped; ``[]`` if unreadable)."""
    with contextlib.suppress(OSError):
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_dir())
    return []


def run_dirs(root: Path | str) -> list[Path]:
    """The runs under ``root``: ``root`` itself when it is a run; else its sub-folders that are runs (a deployment
    writes ``OUT/RUN_ID``) and, under a sub-folder that is not one, its sub-folders that are (a root of roots,
    ``OUT/<deployment>/RUN_ID``)."""
    root = Path(root)
    if is_run(root):
        return [root]
    found: list[Path] = []
    for child in subdirs(root):
        found.extend([child] if is_run(child) else [g for g in subdirs(child) if is_run(g)])
    return found


def open_run(path: Path) -> Run | None:
    """The run under ``path`` (``None`` without a run key: nothing was planned or committed there). Raises
    :class:`UsageError` for a folder holding commit records of several runs and no ``run.json``."""
    key = resolve_key(path)
    if key is None:
        return None
    shards = sum(1 for _, r in records(path) if r and r.get("run_key") == key and isinstance(r.get("files"), list))
    return Run(path, key, read_json(path / "run.json") or {}, committed_files(path, key), shards)


def epoch(value: Any) -> float | None:
    """A finite number of seconds since the epoch, else ``None``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def times(info: dict[str, Any]) -> tuple[float | None, float | None]:
    """``(started, finished)`` in epoch seconds: ``finished_at``, and ``started_at`` or else ``finished_at`` less
    ``timings.wall_s`` (the start of the invocation that wrote ``run.json``)."""
    finished = epoch(info.get("finished_at"))
    started = epoch(info.get("started_at"))
    wall = epoch((info.get("timings") or {}).get("wall_s"))
    if started is None and finished is not None and wall is not None:
        started = finished - wall
    return started, finished


def timestamp(seconds: float | None) -> datetime | None:
    """Epoch seconds as a naive UTC ``datetime`` (DuckDB ``TIMESTAMP``)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None)


def run_status(info: dict[str, Any]) -> str:
    """``complete`` (every planned shard / unit committed, none failed), ``partial`` (some), ``failed`` (none),
    from ``run.json``'s summary; ``unfinished`` without ``run.json`` (running, or stopped before its reduce step);
    ``unknown`` when the summary has no counts."""
    if not info:
        return "unfinished"
    summary = info.get("summary") or {}
    total = summary.get("shards", summary.get("units"))
    done = summary.get("shards_complete", summary.get("units_complete"))
    failed = summary.get("shards_failed", summary.get("units_failed")) or []
    if not isinstance(total, int) or not isinstance(done, int):
        return "unknown"
    if done >= total and not failed:
        return "complete"
    return "failed" if done == 0 else "partial"


def names(value: Any) -> list[str]:
    """The names of a ``{name: params}`` mapping (methods, metrics) in file order; ``[]`` for anything else."""
    return [str(k) for k in value] if isinstance(value, dict) else []


def run_row(run: Run) -> dict[str, Any]:
    """The ``runs`` row of ``run`` (:data:`RUNS`)."""
    info = run.info
    cfg, resolved = info.get("config") or {}, info.get("resolved") or {}
    plan = read_json(run.dir / "_manifests" / "plan.json") or {}
    started, finished = times(info)
    return {"run_key": run.key, "run_id": run.dir.name, "dir": str(run.dir),
            "kind": info.get("kind") or plan.get("kind"), "dataset": cfg.get("dataset"),
            "split": cfg.get("split", cfg.get("test_split")),
            "dataset_kind": cfg.get("dataset_kind"), "model": cfg.get("model"),
            "model_digest": resolved.get("model_digest"), "methods": names(cfg.get("methods")),
            "metrics": names(cfg.get("metrics")), "started": timestamp(started), "finished": timestamp(finished),
            "status": run_status(info), "xcore_version": (info.get("versions") or {}).get("xcore"),
            "shards_committed": run.shards}


def find_runs(root: Path) -> list[Run]:
    """The runs under ``root`` (:func:`run_dirs`), one per run key (module docstring), in path order."""
    best: dict[str, Run] = {}
    for path in run_dirs(root):
        run = open_run(path)
        if run is None:
            continue
        rank = (run.shards, times(run.info)[1] or -math.inf)
        have = best.get(run.key)
        if have is None or rank > (have.shards, times(have.info)[1] or -math.inf):
            best[run.key] = run
    return sorted(best.values(), key=lambda r: str(r.dir))


def require_root(root: Path | str) -> Path:
    """``root`` as an absolute path; :class:`UsageError` unless it is a folder."""
    path = Path(root).absolute()
    if not path.is_dir():
        raise UsageError(f"{root} is not a folder of runs")
    return path


def runs_table(root: Path | str) -> list[dict[str, Any]]:
    """One dict per run under ``root`` (the ``runs`` table's columns, :data:`RUNS`), in path order."""
    return [run_row(r) for r in find_runs(require_root(root))]


def quoted(name: str) -> str:
    """``name`` as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def connect_root(root: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection over every run under ``root`` (module docstring): the ``runs`` table and one
    view per committed or reduced table, each row with its ``run_key``. Raises :class:`UsageError` for a root that
    is not a folder (or holds a folder of commit records of several runs) and ``duckdb.Error`` when a committed file
    cannot be read."""
    found = find_runs(require_root(root))
    tables: dict[str, list[Path]] = {}
    for run in found:
        for table, files in run.tables.items():
            tables.setdefault(table, []).extend(files)
    derived: dict[str, list[str]] = {}
    for run in (r for r in found if r.tables):  # a run's reduced tables come from its committed shards
        for path in derived_tables(run.dir):
            if path.stem not in tables and path.stem not in TABLES:
                derived.setdefault(path.stem, []).append(
                    f"SELECT {literal(run.key)} AS run_key, COLUMNS(lambda c: c <> 'run_key') "
                    f"FROM read_parquet({sql_list([path])})")
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TABLE runs ({', '.join(f'{c} {t}' for c, t in RUNS)})")
        if found:
            con.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(RUNS))})",
                            [[row[c] for c, _ in RUNS] for row in map(run_row, found)])
        for table in sorted((set(TABLES) | set(tables)) - {"runs"}):
            files = tables.get(table)
            body = (f"SELECT * FROM {read_committed(files)}" if files
                    else f"SELECT {EMPTY_COLUMNS}, NULL::VARCHAR AS run_key WHERE false")
            con.execute(f"CREATE VIEW {quoted(table)} AS {body}")
        for name, parts in sorted(derived.items()):
            if name != "runs":
                con.execute(f"CREATE VIEW {quoted(name)} AS {' UNION ALL BY NAME '.join(parts)}")
    except BaseException:
        con.close()
        raise
    return con
