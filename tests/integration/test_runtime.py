"""The Ray side: the actor class without Ray, and the full flow on Ray actors against direct xcore calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

import xcore.explain
import xcore.metrics
from xcore.io.parquet import decode_heatmap
from xcore.models import load_checkpoint
from xcore.pipeline import open_job

pytestmark = pytest.mark.slow


def test_shard_actor_plain_class(explain_cfg):
    from tasks.runtime import ShardActor

    actor = ShardActor("explain", explain_cfg, "cpu", threads=1)
    job = open_job("explain", explain_cfg)
    shard = job.shards()[2]
    summary = actor.process(shard, {"shrink": 1})
    assert actor.worker.batch_size == 1  # 3 >> 1
    assert summary["shard_id"] == 2 and summary["samples"] == 2 and summary["ok"] == 6
    assert job.is_complete(shard) and not job.is_complete(job.shards()[0])


def test_ray_flow_matches_direct_xcore(explain_cfg, ray_session, prefect_harness):
    from flows.explain import explain_dataset
    from tasks.options import RunOptions
    from xcore.pipeline import ExplainConfig

    cfg = {**explain_cfg, "methods": {"gradient": {}, "gradcam": {"layer": "features"}}}
    summary = explain_dataset(ExplainConfig(**cfg), RunOptions(executor="ray"))["summary"]
    assert summary["shards_complete"] == 3 and summary["shards_failed"] == [] and summary["errors"] == 0
    run = Path(summary["run_dir"])
    metrics = {(r["sample_id"], r["method"]): r for r in pads.dataset(
        str(run / "metrics"), format="parquet", partitioning="hive").to_table().to_pylist()}
    expl = {(r["sample_id"], r["method"]): r for r in pads.dataset(
        str(run / "explanations"), format="parquet", partitioning="hive").to_table().to_pylist()}
    assert len(metrics) == len(expl) == 20
    # the default CPU layout: one 1-CPU, 1-thread actor per cluster CPU, recorded with the shards each ran
    record = json.loads((run / "run.json").read_text())["executor"]
    assert record["kind"] == "ray" and record["actors_requested"] == 2
    assert record["per_actor"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert all(a["threads"] == 1 and a["device"] == "cpu" and a["gpu_ids"] == [] for a in record["actors"])
    assert sum(a["shards"] for a in record["actors"]) == 3 == sum(record["nodes"].values())

    job = open_job("explain", cfg)
    ds = job.open_dataset()
    model, _ = load_checkpoint(cfg["model"])
    # The direct side computes what each actor computed, in the same float layout: the same batches (a shard's
    # samples in chunks of batch_size) on as many intra-op threads as a CPU actor gets (one per reserved CPU,
    # cpus_per_actor=1 by default). Another batch or thread count can change a map by float32 rounding (~1e-6 relative),
    # and a rounding-level change can swap two nearly tied pixels of the deletion / insertion ranking, which
    # moves a curve point by far more than any float32 tolerance (1.3e-5 against atol 1e-5 was seen). With the
    # same layout both sides run the same float operations in the same order: the values agree exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for shard in job.shards():
            for lo in range(shard.start, shard.stop, cfg["batch_size"]):
                samples = [ds.load(i) for i in range(lo, min(lo + cfg["batch_size"], shard.stop))]
                x = torch.stack([s.x for s in samples])
                with torch.no_grad():
                    target = model(x).argmax(1)
                for method, params in cfg["methods"].items():
                    maps = xcore.explain.run(method, model, x, target, **params)
                    ref = xcore.metrics.run("deletion_insertion", model, x, maps, target, steps=8)
                    for j, sample in enumerate(samples):
                        row, er = metrics[(sample.sample_id, method)], expl[(sample.sample_id, method)]
                        assert row["status"] == "ok" and row["pred"] == int(target[j])
                        assert row["deletion_auc"] == pytest.approx(float(ref["deletion_auc"][j]), abs=1e-5)
                        assert row["insertion_auc"] == pytest.approx(float(ref["insertion_auc"][j]), abs=1e-5)
                        assert np.allclose(row["insertion_curve"], ref["insertion_curve"][j].numpy(), atol=1e-5)
                        m = maps[j].numpy()
                        assert np.abs(decode_heatmap(er) - m).max() <= 2.0**-10 * np.abs(m).max()
    finally:
        torch.set_num_threads(threads)


def test_a_dead_ray_actor_is_replaced_and_its_shard_rerun(ray_session, tmp_path):
    """A real actor process dies mid-shard (os._exit): Ray reports it, the driver replaces the actor and
    reruns only that shard; every shard ends complete, none failed."""
    from tasks.driver import dispatch, make_executor, plan

    cfg = {"out": str(tmp_path / "crash"), "n": 4, "crash": [1]}
    job = open_job("tests.integration.crashjob:CrashJob", cfg)
    todo, done = plan(job)
    assert len(todo) == 4 and not done
    executor = make_executor(job, "ray", actors=1)
    try:
        summaries, failed = dispatch(job, todo, executor, max_attempts=3, backoff=0.0)
    finally:
        executor.close()
    assert failed == [] and sorted(s["shard_id"] for s in summaries) == [0, 1, 2, 3]
    assert all(job.is_complete(s) for s in job.shards())
    crashed_pid = int((tmp_path / "crash" / "attempted-1").read_text())
    by_shard = {s["shard_id"]: s["pid"] for s in summaries}
    assert by_shard[1] != crashed_pid  # shard 1 finished in a new actor process
    assert job.reduce(summaries, failed) == {"done": [0, 1, 2, 3], "failed": []}
