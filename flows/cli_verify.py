"""``xai verify RUN_DIR`` and the committed-run connection behind ``xai summary`` / ``xai query``.

``xai verify`` checks every commit record of a run (:func:`xcore.io.commits.verify_run`: run key, sizes, sha256
of every listed file, footers) and prints one line per bad shard. Exit codes, shared with ``summary`` and
``query``: 0 all good; 1 a committed file is bad (changed, truncated, missing: rerun the command that made the
run, which recomputes those shards); 2 a path that is not a run, or another usage error (e.g. bad SQL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import typer

from flows.cli_options import fail
from flows.launch import console
from xcore.errors import UsageError
from xcore.io.catalog import RUN_MARKERS

DATA_ERRORS = (duckdb.IOException, duckdb.InvalidInputException)  # a file that cannot be read, not the SQL


def require_run(run_dir: Path) -> None:
    """Exit 2 with one line unless ``run_dir`` is a run directory (it has ``run.json``, ``_shards`` or a plan)."""
    if not run_dir.is_dir() or not any((run_dir / m).exists() for m in RUN_MARKERS):
        raise fail(UsageError(f"{run_dir} is not a run directory (no run.json, _shards or _manifests/plan.json)"))


@contextlib.contextmanager
def committed_run(run_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB views over the committed files of the run (:func:`xcore.io.query.connect`), with the CLI's one-line
    errors: not a run -> exit 2; no committed shard yet -> one line, exit 0; a committed file DuckDB cannot read
    -> exit 1; bad SQL -> exit 2."""
    from xcore.io.commits import committed_files, resolve_key
    from xcore.io.query import connect

    require_run(run_dir)
    try:
        key = resolve_key(run_dir)
    except UsageError as err:
        raise fail(err) from None
    if key is None or not committed_files(run_dir, key):
        console.print(f"{run_dir}: no committed shards yet", highlight=False, soft_wrap=True)
        raise typer.Exit(0)
    try:
        con = connect(run_dir, key)
        with contextlib.closing(con):
            yield con
    except DATA_ERRORS as err:
        raise fail(RuntimeError(f"{str(err).splitlines()[0]} (check the run with: xai verify {run_dir})"),
                   1) from None
    except duckdb.Error as err:
        raise fail(UsageError(str(err).splitlines()[0])) from None


def verify(run_dir: Path) -> None:
    """Check every committed shard of RUN_DIR against its commit record (run key, sizes, sha256, footers): one
    line per bad shard and exit 1, or exit 0 when all are intact."""
    from xcore.io.commits import verify_run
    from xcore.io.runs import read_json

    require_run(run_dir)
    try:
        report = verify_run(run_dir)
    except UsageError as err:
        raise fail(err) from None
    for name, problem in report.problems:
        console.print(f"bad {name.removesuffix('.json')}: {problem}", highlight=False, soft_wrap=True)
    planned = (read_json(run_dir / "_manifests" / "plan.json") or {}).get("total")
    of = f" ({planned} planned)" if isinstance(planned, int) else ""
    console.print(f"{run_dir}: {report.checked - len(report.problems)} of {report.checked} committed shards "
                  f"intact{of}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if report.problems else 0)
