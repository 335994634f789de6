"""``xai report RUN_DIR``: write the run's self-contained HTML report (:func:`xcore.report.write_report`) to
``RUN_DIR/report.html`` and print its path.

Exit codes as ``xai summary``: 0 written; 1 a committed file cannot be read (check the run with ``xai verify``);
2 a path that is not a run, or another usage error (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import duckdb
import typer

from flows.cli_options import fail
from flows.cli_verify import DATA_ERRORS, require_run
from flows.launch import console
from xcore.errors import UsageError


def report(run_dir: Path,
           samples: Annotated[int, typer.Option(help="samples (rows) in the overlay grid")] = 6) -> None:
    """Write RUN_DIR/report.html: run facts, summary tables, deletion / insertion curves, the overlay grid (clips for
    video runs) and the run's analysis figures, all embedded in one file; print its path."""
    from xcore.report import write_report

    require_run(run_dir)  # one clear line (exit 2) for a path that is not a run
    try:
        path = write_report(run_dir, samples=samples)
    except UsageError as err:
        raise fail(err) from None
    except DATA_ERRORS as err:
        raise fail(RuntimeError(f"{str(err).splitlines()[0]} (check the run with: xai verify {run_dir})"),
                   1) from None
    except duckdb.Error as err:
        raise fail(UsageError(str(err).splitlines()[0])) from None
    console.print(str(path), highlight=False, soft_wrap=True)
