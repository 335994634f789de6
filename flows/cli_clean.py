"""``xai clean RUN_DIR``: stop what a killed driver of a run directory left, and remove its stale lock.

The same steps every driver takes before it plans (:func:`tasks.processes.own_run`), without running anything:
take the directory's owner lock (a stale one is taken over, one line), stop each process recorded in
``_manifests/processes.json`` by a driver that is gone and that still runs as the same process (one line each),
release the lock. A directory owned by a live driver is left alone: one line, exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flows.cli_options import fail
from flows.launch import console, say
from tasks.processes import stop_left
from xcore.errors import UsageError
from xcore.io.lock import RunLock


def clean(run_dir: Path = typer.Argument(..., help="a run directory (OUT/RUN_ID)")) -> None:
    """Stop the processes a killed driver of RUN_DIR left (temporary Prefect server, local Ray instance, actors)
    and remove its stale lock; exit 2 while a live driver owns RUN_DIR."""
    if not (run_dir / "_manifests").is_dir():
        raise fail(UsageError(f"{run_dir} is not a run directory (no _manifests folder)"))
    lock = RunLock(run_dir, None)
    try:
        taken = lock.acquire()
    except UsageError as err:
        raise fail(err) from None
    try:
        if taken:
            say(taken)
        stopped = stop_left(run_dir, say)
    finally:
        lock.release()
    console.print(f"{run_dir}: " + (f"stopped {len(stopped)} process(es) left by its last driver" if stopped
                                    else "no process left by its last driver is running"), highlight=False)
