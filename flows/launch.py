"""Launch a job through its Prefect flow from the command line: validate, progress bar, summary and report.

Shared by ``xai run``, ``xai job`` and ``xai demo``. Nothing here imports Prefect or Ray before the configuration
is valid and a ``RAY_ADDRESS`` cluster is known to accept this process, so a usage error costs no server start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from flows.cli_options import fail
from flows.progress import ShardProgress, print_blocks
from tasks.options import RunOptions
from xcore.errors import UsageError
from xcore.pipeline.config import parse_config

console = Console()


def execute(kind: str, config: dict[str, Any], options: dict[str, Any] | RunOptions) -> int:
    """Validate (exit 2 on a usage error), run job ``kind`` through its flow with a progress bar, print the
    job's summary and report blocks; 0, or 1 when shards failed."""
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
    shards = job.shards()
    console.print(f"{job.kind} run [bold]{job.run_key}[/] -> {job.run_dir} ({len(shards)} shards, "
                  f"executor {opts.executor})")
    from flows.explain import run_job  # imports Prefect; Ray starts inside the dispatch task

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
