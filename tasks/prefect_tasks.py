"""Thin Prefect tasks around the plain driver functions: plan -> dispatch -> reduce (+ a markdown artifact).

Import :mod:`flows.prefect_env` (``configure()``) before this module in a fresh process. Nothing here caches:
completeness is decided by the shard files (``Job.is_complete``), never by Prefect's cache.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.driver import dispatch, make_executor, plan
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
def dispatch_task(job: Job, shards: list[Shard], executor: str = "ray", max_attempts: int = 3,
                  timeout: float | None = None, actors: int | None = None) -> tuple[list[dict[str, Any]], list[int]]:
    """Run the driver loop over ``shards`` on a fresh executor; ``(summaries, failed ids)``."""
    logger = get_run_logger()
    if not shards:
        logger.info("nothing to compute")
        return [], []
    pool = make_executor(job, executor, actors=actors)

    def report(summary: dict[str, Any], done: int, total: int) -> None:
        logger.info("shard %s done (%d/%d): %s ok, %s errors, %.1f s", summary.get("shard_id"), done, total,
                    summary.get("ok"), summary.get("errors"), summary.get("seconds", 0.0))

    try:
        return dispatch(job, shards, pool, max_attempts=max_attempts, timeout=timeout, on_result=report,
                        logger=logger)
    finally:
        pool.close()


@task(name="reduce-shards", cache_policy=NO_CACHE)
def reduce_task(job: Job, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
    """``job.reduce`` (writes ``run.json``) and a markdown artifact of the summary."""
    summary = job.reduce(summaries, failed)
    key = re.sub(r"[^a-z0-9-]+", "-", f"xcore-{job.kind}-{summary.get('run_key', '')}".lower()).strip("-")
    create_markdown_artifact(markdown=summary_markdown(job, summary), key=key[:100],
                             description=f"{job.kind} run {job.run_dir}")
    get_run_logger().info("summary written to %s/run.json", job.run_dir)
    return summary


@task(name="skeleton-report", cache_policy=NO_CACHE)
def skeleton_report_task(run_dir: str, method: str) -> dict[str, Any]:
    """ψ, faithfulness, contrastivity and figures of ``method`` from the run's tables (``<run>/analysis``)."""
    from xcore.analysis.skeleton_report import write_report

    report = write_report(run_dir, method)
    get_run_logger().info("skeleton report for %s: contrastivity %s", method, report.get("contrastivity"))
    return report


@task(name="video-report", cache_policy=NO_CACHE)
def video_report_task(run_dir: str) -> dict[str, Any]:
    """Per-method deletion / insertion and localisation error, mass in boxes, freeze frames (``<run>/analysis``)."""
    from xcore.analysis.video import write_video_report

    report = write_video_report(run_dir)
    get_run_logger().info("video report written to %s/analysis/video.json", run_dir)
    return report


def summary_markdown(job: Job, summary: dict[str, Any]) -> str:
    """A short markdown report: counts, failed shards and the per-method table when present."""
    lines = [f"# {job.kind} run `{summary.get('run_key', '')}`", "", f"- directory: `{job.run_dir}`"]
    for k in ("samples", "shards", "shards_complete", "shards_computed", "ok_rows", "error_rows", "errors"):
        if k in summary:
            lines.append(f"- {k.replace('_', ' ')}: {summary[k]}")
    if summary.get("shards_failed"):
        lines.append(f"- **failed shards**: {summary['shards_failed']}")
    methods = summary.get("methods") or []
    if methods:
        cols = list(methods[0])
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in methods:
            lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v)
                                          for v in row.values()) + " |")
    return "\n".join(lines) + "\n"
