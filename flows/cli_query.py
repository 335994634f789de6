"""``xai query TARGET "SQL"``: SQL over one run's committed tables, or over every run under a root of runs
(:func:`xcore.io.catalog.connect_root`: the same tables, each row with its ``run_key``, and a ``runs`` table).

Exit codes as ``xai summary`` / ``xai verify`` (:mod:`flows.cli_verify`): 0 the rows were printed (a run without a
committed shard prints one line); 1 a committed file cannot be read; 2 a path that is neither a run nor a folder of
runs, or another usage error (e.g. bad SQL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb

from flows.cli_options import fail
from flows.cli_verify import DATA_ERRORS, committed_run
from flows.launch import console
from flows.progress import print_rows
from xcore.errors import UsageError


@contextlib.contextmanager
def catalog(root: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB views over every run under ``root`` (:func:`xcore.io.catalog.connect_root`) with the CLI's one-line
    errors: a bad root or bad SQL -> exit 2; a committed file DuckDB cannot read -> exit 1."""
    from xcore.io.catalog import connect_root

    try:
        con = connect_root(root)
        with contextlib.closing(con):
            yield con
    except UsageError as err:
        raise fail(err) from None
    except DATA_ERRORS as err:
        raise fail(RuntimeError(f"{str(err).splitlines()[0]} (check the run with: xai verify RUN_DIR)"), 1) from None
    except duckdb.Error as err:
        raise fail(UsageError(str(err).splitlines()[0])) from None


def query(target: Path, sql: str) -> None:
    """Run SQL (DuckDB) over a run's committed shards: ``metrics``, ``explanations``, ``errors``; ``roar`` in a roar
    run; ``filter_scores`` and the reduced ``filter_stats`` / ``filter_ranking`` in a filters run. TARGET may also be
    a folder of runs (e.g. a deployment's output root): the same views over every committed run, each row with its
    ``run_key``, and a ``runs`` table (run_key, run_id, dir, kind, dataset, split, dataset_kind, model,
    model_digest, methods, metrics, started, finished, status, xcore_version, shards_committed), e.g.
    ``SELECT r.finished, m.method, avg(m.deletion_auc) FROM metrics m JOIN runs r USING (run_key) GROUP BY 1, 2``."""
    from xcore.io.catalog import is_run, run_dirs
    from xcore.io.query import rows

    if is_run(target):
        with committed_run(target) as con:
            cols, data = rows(con, sql)
    elif target.is_dir() and run_dirs(target):
        with catalog(target) as con:
            cols, data = rows(con, sql)
    else:
        raise fail(UsageError(f"{target} is neither a run directory (no run.json, _shards or _manifests/plan.json) "
                              "nor a folder of runs"))
    print_rows(console, sql, [dict(zip(cols, r, strict=True)) for r in data])
