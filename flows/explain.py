"""Prefect flows: any job kind through plan -> dispatch -> reduce, and the dataset explanation flow.

``run_job(kind, config)`` is the generic flow (later: ROAR retraining, per-class filter statistics);
``explain_dataset(...)`` spells out the explain job's parameters. Both end **Failed** when shards still
failed after their retries (the summary is in ``run.json`` either way); a rerun computes only missing shards.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.configure()

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402

from tasks.prefect_tasks import (  # noqa: E402
    dispatch_task,
    plan_task,
    reduce_task,
    skeleton_report_task,
    video_report_task,
)
from xcore.io.runs import read_json  # noqa: E402
from xcore.pipeline import explain_config, open_job  # noqa: E402
from xcore.pipeline.base import Job  # noqa: E402

DEFAULT_METRICS: dict[str, dict[str, Any]] = {"deletion_insertion": {}}
SKELETON_REPORTED = ("stg_gradcam", "stg_cam", "stg_gradient")  # methods with a joint-importance report
VIDEO_KINDS = ("ucf101", "hmdb51", "kinetics400")


class ShardsFailedError(RuntimeError):
    """Some shards failed after every retry; their ids are in ``_manifests/failed.json``."""


def run_pipeline(job: Job, *, executor: str = "ray", max_attempts: int = 3, shard_timeout: float | None = None,
                 actors: int | None = None) -> dict[str, Any]:
    """The three phases as Prefect tasks; raises :class:`ShardsFailedError` after writing the summary."""
    todo = plan_task(job)
    summaries, failed = dispatch_task(job, todo, executor=executor, max_attempts=max_attempts,
                                      timeout=shard_timeout, actors=actors)
    summary = reduce_task(job, summaries, failed)
    if failed:
        record = read_json(Path(job.run_dir) / "_manifests" / "failed.json") or {}
        last = next((f["errors"][-1] for f in record.get("failed", []) if f.get("errors")), "")
        raise ShardsFailedError(f"{len(failed)} shard(s) failed after {max_attempts} attempts: {failed[:20]}; "
                                f"last error: {last[:300]}")
    return summary


@flow(name="xcore-job")
def run_job(kind: str, config: dict[str, Any], executor: str = "ray", max_attempts: int = 3,
            shard_timeout: float | None = None, actors: int | None = None) -> dict[str, Any]:
    """Run job ``kind`` (a name in ``xcore.pipeline.JOBS``) with its plain ``config``."""
    return run_pipeline(open_job(kind, config), executor=executor, max_attempts=max_attempts,
                        shard_timeout=shard_timeout, actors=actors)


@flow(name="explain-dataset")
def explain_dataset(dataset: str, model: str, methods: dict[str, dict[str, Any]],
                    metrics: dict[str, dict[str, Any]] | None = None, shard_size: int = 256, out: str = "runs",
                    run_id: str | None = None, split: str = "val", dataset_kind: str | None = None,
                    batch_size: int = 16, device: str | None = None, seed: int = 0, executor: str = "ray",
                    max_attempts: int = 3, shard_timeout: float | None = None,
                    actors: int | None = None, target: str = "pred",
                    reader: dict[str, Any] | None = None) -> dict[str, Any]:
    """Explain every sample of ``dataset`` with ``methods`` and score the maps with ``metrics``.

    Plan shards (skipping complete ones) -> dispatch them to the Ray actor pool (or in process with
    ``executor="local"``) -> reduce into ``<out>/<run_id>/run.json`` and a Prefect artifact -> for skeleton
    data, the joint-importance / faithfulness / contrastivity report of each STG method; for video data, the
    video report (deletion / insertion, localisation error, mass in boxes, freeze frames).
    ``target="label"`` explains the ground-truth class; ``reader`` overrides reader options (e.g.
    ``{"clips": "localisation"}``).
    """
    config = explain_config({
        "dataset": dataset, "model": model, "methods": methods,
        "metrics": DEFAULT_METRICS if metrics is None else metrics, "shard_size": shard_size, "out": out,
        "run_id": run_id, "split": split, "dataset_kind": dataset_kind, "batch_size": batch_size,
        "device": device, "seed": seed, "target": target, "reader": reader})
    job = open_job("explain", config)
    summary = run_pipeline(job, executor=executor, max_attempts=max_attempts, shard_timeout=shard_timeout,
                           actors=actors)
    if job.config["dataset_kind"] == "ntu":
        for method in (m for m in job.config["methods"] if m in SKELETON_REPORTED):
            skeleton_report_task(job.run_dir, method)
    if job.config["dataset_kind"] in VIDEO_KINDS:
        video_report_task(job.run_dir)
    return summary
