"""Thin Prefect tasks around the plain driver functions: plan -> dispatch -> reduce -> report, for any job kind.

Import :mod:`flows.prefect_env` (``configure()``) before this module in a fresh process. Nothing here caches:
completeness is decided by the shard files (``Job.is_complete``), never by Prefect's cache. Nothing here knows a
job kind: summaries and reports reach the artifact as the job's own blocks (``Job.describe`` / ``Job.report``).
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.driver import dispatch, make_executor, merge_executor, plan, record_executor
from tasks.options import RunOptions
from xcore.analysis.blocks import Block, markdown
from xcore.core.shards import Shard
from xcore.pipeline.base import Job


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_task(job: Job) -> list[Shard]:
    """Shards still to compute (complete ones skipped, stale temp files removed)."""
    todo, done = plan(job)
    get_run_logger().info("%s: %d shards, %d complete, %d to compute", job.run_dir, len(todo) + len(done),
                          len(done), len(todo))
    return todo


@task(name="dispatch-shards", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def dispatch_task(job: Job, shards: list[Shard], options: RunOptions) -> tuple[list[dict[str, Any]], list[int]]:
    """Run the driver loop over ``shards`` on a fresh executor; ``(summaries, failed ids)``."""
    logger = get_run_logger()
    if not shards:
        logger.info("nothing to compute")
        return [], []
    pool = make_executor(job, options.executor, **options.model_dump(exclude={"executor"}))

    def report(summary: dict[str, Any], done: int, total: int) -> None:
        logger.info("shard %s done (%d/%d): %s", summary.get("shard_id"), done, total,
                    ", ".join(f"{k} {v}" for k, v in summary.items() if k != "shard_id" and isinstance(v, int | float)))

    try:
        return dispatch(job, shards, pool, max_attempts=options.max_attempts, timeout=options.shard_timeout,
                        on_result=report, logger=logger)
    finally:
        record_executor(job, pool.describe())
        pool.close()


@task(name="reduce-shards", cache_policy=NO_CACHE)
def reduce_task(job: Job, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
    """``job.reduce`` and a markdown artifact of ``job.describe(summary)``."""
    summary = job.reduce(summaries, failed)
    merge_executor(job)
    publish(job, f"{job.kind} run `{job.run_key}`", job.describe(summary), "summary")
    get_run_logger().info("%s run reduced: %s", job.kind, job.run_dir)
    return summary


@task(name="report", cache_policy=NO_CACHE)
def report_task(job: Job) -> list[Block]:
    """``job.report()`` (the job's analyses over its tables) and a markdown artifact of its blocks."""
    blocks = job.report()
    if blocks:
        publish(job, f"{job.kind} report `{job.run_key}`", blocks, "report")
        get_run_logger().info("%s report of %s: %d blocks", job.kind, job.run_dir, len(blocks))
    return blocks


def publish(job: Job, title: str, blocks: list[Block], what: str) -> None:
    """A markdown artifact ``# title`` + the blocks, keyed by job kind, run key and ``what``."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"xcore-{job.kind}-{what}-{job.run_key}".lower()).strip("-")
    create_markdown_artifact(markdown=f"# {title}\n\n- directory: `{job.run_dir}`\n{markdown(blocks)}",
                             key=key[:100], description=f"{job.kind} {what} {job.run_dir}")
