"""Prefect flows: any job kind through plan -> dispatch -> reduce -> report, and the dataset explanation flow.

``run_job(kind, config, options)`` runs any registered job kind, after the jobs it requires (``Job.requires``: e.g.
ROAR's explain runs, each reused when complete) (``xcore.pipeline.JOBS``, or a plug-in
``"module:factory"``); ``explain_dataset(config, options)`` is the same pipeline for the explain job, with its
typed config as the flow's parameter (deployments pass ``config:`` and ``options:`` mappings). Both end **Failed**
when shards still failed after their retries (the summary is in ``run.json`` either way); a rerun computes only
the missing shards. Both return ``{"summary": ..., "report": [blocks]}``.

Every entry point passes through :func:`run_pipeline`, which owns the run directory for the whole pipeline
(:func:`tasks.processes.own_run`: one driver per directory, checked before the plan; a dead driver's leftovers
stopped; the processes it starts recorded; on a signal, Ray shut down) and starts Ray itself, after the plan and
only when shards are left, so its own SIGTERM handler does not replace Prefect's and the driver's.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.configure()

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402

from tasks.options import RunOptions  # noqa: E402
from tasks.prefect_tasks import dispatch_task, plan_task, reduce_task, report_task  # noqa: E402
from tasks.processes import own_run, start_ray  # noqa: E402
from xcore.io.runs import read_json  # noqa: E402
from xcore.pipeline import ExplainConfig, open_job  # noqa: E402
from xcore.pipeline.base import Job  # noqa: E402


class ShardsFailedError(RuntimeError):
    """Some shards failed after every retry; their ids are in ``_manifests/failed.json``."""


def run_pipeline(job: Job, options: RunOptions) -> dict[str, Any]:
    """The four phases as Prefect tasks in the owned run directory (module docstring); raises
    :class:`ShardsFailedError` after writing the summary, :class:`~xcore.io.lock.RunOwnedError` (a usage error)
    when another driver owns the directory."""
    with own_run(job.run_dir, job.run_key, get_run_logger().warning) as book:
        todo = plan_task(job)
        if todo and options.executor == "ray":
            start_ray(book)
        summaries, failed = dispatch_task(job, todo, options)
        summary = reduce_task(job, summaries, failed)
        if failed:
            record = read_json(Path(job.run_dir) / "_manifests" / "failed.json") or {}
            last = next((f["errors"][-1] for f in record.get("failed", []) if f.get("errors")), "")
            raise ShardsFailedError(f"{len(failed)} shard(s) failed after {options.max_attempts} attempts: "
                                    f"{failed[:20]}; last error: {last[:300]}")
        return {"summary": summary, "report": report_task(job)}


@flow(name="xcore-job")
def run_job(kind: str, config: dict[str, Any], options: RunOptions | None = None) -> dict[str, Any]:
    """Run job ``kind`` with its config (validated by the job) and the runtime ``options``, after the jobs it
    requires."""
    return run_chain(open_job(kind, config), options or RunOptions())


def run_chain(job: Job, options: RunOptions) -> dict[str, Any]:
    """Every job ``job`` requires (each through :func:`run_pipeline`, in order; a failed one stops the chain),
    then ``job`` itself; returns the last result."""
    for kind, config in job.requires():
        run_pipeline(open_job(kind, config), options)
    return run_pipeline(job, options)


@flow(name="explain-dataset")
def explain_dataset(config: ExplainConfig, options: RunOptions | None = None) -> dict[str, Any]:
    """Explain every sample of ``config.dataset`` with ``config.methods`` and score the maps with
    ``config.metrics``: plan shards (skipping complete ones) -> dispatch them to the Ray actor pool (or in process
    with ``options.executor="local"``) -> reduce into ``<out>/<run_id>/run.json`` and a Prefect artifact -> the
    dataset kind's report (e.g. the skeleton or video report)."""
    return run_pipeline(open_job("explain", config.model_dump()), options or RunOptions())
