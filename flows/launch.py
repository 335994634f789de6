"""Launch a job through its Prefect flow from the command line: validate, own the run directory, progress bar,
summary and report.

Shared by ``xai run``, ``xai job`` and ``xai demo``. Nothing here imports Prefect or Ray before the configuration
is valid, a ``RAY_ADDRESS`` cluster is known to accept this process and the run directory is this driver's
(:func:`tasks.processes.own_run`: a directory another live driver holds, or holding another run key, is one line and
exit code 2), so a usage error costs no server start. SIGTERM / SIGINT stop what the driver started and exit
143 / 130 (:mod:`flows.shutdown`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from flows.cli_options import fail
from flows.progress import ShardProgress, print_blocks
from flows.shutdown import Interrupted, interrupts, stop_after_interrupt
from tasks.options import RunOptions
from tasks.processes import own_run
from xcore.errors import UsageError
from xcore.pipeline.config import parse_config

console = Console()


def execute(kind: str, config: dict[str, Any], options: dict[str, Any] | RunOptions) -> int:
    """Validate (exit 2 on a usage error), own the run directory (exit 2 when another driver does), run job
    ``kind`` through its flow with a progress bar, print the job's summary and report blocks; 0, or 1 when shards
    failed; raises ``typer.Exit(128 + signal)`` after a clean stop on SIGTERM / SIGINT."""
    from xcore.pipeline import open_job

    try:
        opts = parse_config(RunOptions, options)
        job = open_job(kind, config)
        address = os.environ.get("RAY_ADDRESS")
        if opts.executor == "ray" and address and address != "local":
            from tasks.ray_connect import check  # a cluster this process cannot join: one line, before Prefect

            check(address)
    except UsageError as err:
        raise fail(err) from None
    with interrupts():
        try:
            return _own_and_run(kind, job, opts)
        except (Interrupted, KeyboardInterrupt) as err:
            sig = err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)
            print(f"error: interrupted by {sig.name}: stopped the actors, Ray and the Prefect server this run "
                  "started; rerun the same command to resume", file=sys.stderr)
            raise typer.Exit(sig.exit_code) from None


def say(line: str) -> None:
    """One line of the driver's own bookkeeping (a taken-over lock, a stopped leftover process)."""
    console.print(line, highlight=False, markup=False)


def _own_and_run(kind: str, job: Any, opts: RunOptions) -> int:
    with contextlib.ExitStack() as stack:
        try:
            book = stack.enter_context(own_run(job.run_dir, job.run_key, say))
        except UsageError as err:
            raise fail(err) from None
        except OSError as err:  # an --out that cannot hold the run directory
            raise fail(UsageError(f"cannot write the run directory {job.run_dir}: {err.strerror or err}")) from None
        try:
            return _run_flow(kind, job, opts)
        except (Interrupted, KeyboardInterrupt):
            stop_after_interrupt(book, say)
            raise


def _run_flow(kind: str, job: Any, opts: RunOptions) -> int:
    shards = job.shards()
    console.print(f"{job.kind} run [bold]{job.run_key}[/] -> {job.run_dir} ({len(shards)} shards, "
                  f"executor {opts.executor})")
    from flows.explain import run_job  # imports Prefect; Ray starts inside the flow, after the plan

    with ShardProgress(console):
        state = run_job(kind, job.config, opts, return_state=True)
    if state.is_failed():
        from xcore.io.runs import read_json

        info = read_json(Path(job.run_dir) / "run.json") or {}
        print_blocks(console, job.describe(info["summary"]) if info.get("summary") else [])
        print(f"error: run failed: {' '.join(str(state.message).split())}", file=sys.stderr)
        return 1
    result = state.result()
    print_blocks(console, [*job.describe(result["summary"]), *result["report"]])
    return 0
