"""The explain job and the driver loop, in process (no Ray, no Prefect)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import torch

import xcore.explain
from tasks.driver import dispatch, plan
from tasks.executors import LocalExecutor, WorkerLostError
from xcore.core.batching import BatchSize, robust_map
from xcore.core.shards import Shard, plan_shards
from xcore.errors import UsageError
from xcore.io.parquet import decode_heatmap
from xcore.pipeline import BaseJob, open_job
from xcore.pipeline.tables import is_timing


def _run(job, executor=None):
    todo, _done = plan(job)
    summaries, failed = dispatch(job, todo, executor or LocalExecutor(job), backoff=0)
    job.reduce(summaries, failed)
    return summaries, failed


def _table(run_dir: str, name: str):
    t = pads.dataset(str(Path(run_dir) / name), format="parquet", partitioning="hive").to_table()
    drop = [c for c in t.column_names if is_timing(c)]
    return t.drop_columns(drop).sort_by([("method", "ascending"), ("index", "ascending")]).to_pylist()


def test_resume_recomputes_only_the_missing_shard(explain_cfg):
    job = open_job("explain", explain_cfg)
    assert [s.size for s in job.shards()] == [4, 4, 2]
    summaries, failed = _run(job)
    assert failed == [] and sorted(s["shard_id"] for s in summaries) == [0, 1, 2]
    assert all(job.is_complete(s) for s in job.shards())
    first = {t: _table(job.run_dir, t) for t in ("metrics", "explanations")}
    assert len(first["metrics"]) == 10 * 3 and all(r["status"] == "ok" for r in first["metrics"])
    mtimes = {p: p.stat().st_mtime_ns for p in Path(job.run_dir).rglob("*.parquet")}

    victim = Path(job.run_dir) / "explanations" / "method=gradcam" / "shard-000001.parquet"
    victim.unlink()
    job2 = open_job("explain", explain_cfg)
    assert job2.run_key == job.run_key and not job2.is_complete(Shard(1, 4, 8))
    summaries2, failed2 = _run(job2)
    assert failed2 == [] and [s["shard_id"] for s in summaries2] == [1]
    for p, t in mtimes.items():  # shards 0 and 2 untouched
        if "shard-000001" not in p.name:
            assert p.stat().st_mtime_ns == t, p
    assert {t: _table(job.run_dir, t) for t in ("metrics", "explanations")} == first
    info = json.loads((Path(job.run_dir) / "run.json").read_text())
    assert info["run_key"] == job.run_key and info["summary"]["shards_complete"] == 3
    assert {m["method"] for m in info["summary"]["methods"]} == {"gradient", "gradcam", "random"}
    assert json.loads((Path(job.run_dir) / "_manifests" / "plan.json").read_text())["todo"] == [1]


def test_rows_heatmaps_and_per_sample_failures(explain_cfg, monkeypatch):
    """OOM halves the batch; a failing sample and a NaN map become error rows; the rest is intact."""
    real = xcore.explain.run
    calls: list[int] = []

    def flaky(name, model, x, targets=None, **kw):
        calls.append(x.shape[0])
        if x.shape[0] > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        maps = real(name, model, x, targets, **kw)
        if name == "gradient" and float(x.sum()) == float(bad_x.sum()):
            raise ValueError("boom on one sample")
        if name == "gradcam" and float(x.sum()) == float(nan_x.sum()):
            maps = maps.apply(lambda m: m * float("nan"))  # the worker asks for parts=True
        return maps

    job = open_job("explain", {**explain_cfg, "shard_size": 10})
    ds = job.open_dataset()
    bad_x, nan_x = ds.load(2).x, ds.load(5).x
    monkeypatch.setattr(xcore.explain, "run", flaky)
    worker = job.worker("cpu")
    summary = worker.process(job.shards()[0])
    assert worker.batch_size == 1 and max(calls) == 3  # tried the whole batch (after the 1-sample warm-up)
    assert summary["errors"] == 2 and summary["failed"] == 2 and summary["ok"] == 28
    errors = _table(job.run_dir, "errors")
    assert [(e["index"], e["stage"], e["method"], e["error_type"]) for e in errors] == [
        (5, "explain", "gradcam", "FloatingPointError"), (2, "explain", "gradient", "ValueError")]
    metrics = _table(job.run_dir, "metrics")
    assert len(metrics) == 30
    bad = [(m["index"], m["method"]) for m in metrics if m["status"] == "error"]
    assert sorted(bad) == [(2, "gradient"), (5, "gradcam")]
    ok = [m for m in metrics if m["status"] == "ok"]
    assert all(len(m["deletion_curve"]) == 9 and 0 <= m["deletion_auc"] <= 1 for m in ok)
    assert all(m["target"] == m["pred"] for m in metrics)
    expl = _table(job.run_dir, "explanations")
    assert len(expl) == 28
    row = next(e for e in expl if e["method"] == "gradcam")
    assert decode_heatmap(row).shape == (32, 32) and row["native_shape"] == [16, 16]
    assert json.loads(row["params"])["layer"] == "features"


def test_job_validation_errors(explain_cfg, tmp_path):
    for change, match in [({"methods": {"nope": {}}}, "nope"),
                          ({"methods": {"gradcam": {"layer": "featurez"}}}, "featurez"),
                          ({"metrics": {"pointing": {}}}, "unknown metric .pointing.; known: .*pointing_game"),
                          ({"metrics": {"pointing": {}}}, "pointing"),
                          ({"dataset": str(tmp_path / "missing")}, "does not exist"),
                          ({"shard_size": 0}, "shard_size")]:
        with pytest.raises(UsageError, match=match):
            open_job("explain", {**explain_cfg, **change})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    bad.with_suffix(".json").write_text(Path(explain_cfg["model"]).with_suffix(".json").read_text())
    with pytest.raises(UsageError, match=r"bad\.pt"):
        open_job("explain", {**explain_cfg, "model": str(bad)})


def test_robust_map_halves_on_oom_and_attributes_errors():
    size = BatchSize(8)

    def fn(items):
        if len(items) > 2:
            raise RuntimeError("out of memory")
        if 5 in items:
            raise KeyError(5)
        return [i * 10 for i in items]

    out = robust_map(fn, list(range(8)), size, on_oom=lambda: None)
    assert size.value == 2
    assert [o for i, o in enumerate(out) if i != 5] == [0, 10, 20, 30, 40, 60, 70]
    assert isinstance(out[5], KeyError)


class FlakyWorker:
    def __init__(self, log: dict[int, int]) -> None:
        self.log = log

    def process(self, shard: Shard) -> dict:
        self.log[shard.shard_id] = self.log.get(shard.shard_id, 0) + 1
        if shard.shard_id == 1 and self.log[1] <= 2:
            raise RuntimeError("transient")
        if shard.shard_id == 3:
            raise RuntimeError("always broken")
        return {"shard_id": shard.shard_id, "samples": shard.size}


class FakeJob(BaseJob):
    kind = "fake"
    run_key = "fake-key"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = str(run_dir)
        self.calls: dict[int, int] = {}
        self.done: set[int] = set()

    def shards(self) -> list[Shard]:
        return plan_shards(10, 2)

    def is_complete(self, shard: Shard) -> bool:
        return shard.shard_id in self.done

    def worker(self, device=None) -> FlakyWorker:
        return FlakyWorker(self.calls)


def test_driver_retries_then_records_failures(tmp_path):
    job = FakeJob(tmp_path)
    job.done = {4}
    todo, done = plan(job)
    assert [s.shard_id for s in done] == [4]
    summaries, failed = dispatch(job, todo, LocalExecutor(job), max_attempts=3, backoff=0)
    assert sorted(s["shard_id"] for s in summaries) == [0, 1, 2]
    assert job.calls == {0: 1, 1: 3, 2: 1, 3: 3}
    assert failed == [3]
    record = json.loads((tmp_path / "_manifests" / "failed.json").read_text())
    assert [(f["shard_id"], f["attempts"]) for f in record["failed"]] == [(3, 3)]
    assert "always broken" in record["failed"][0]["errors"][-1]


class DyingExecutor(LocalExecutor):
    """The worker 'dies' the first time it holds shard 2; a hung worker never returns shard 0 once."""

    size = 2

    def __init__(self, job) -> None:
        super().__init__(job)
        self.replaced: list[int] = []
        self.died = self.hung = False

    def submit(self, slot, shard, hints):
        if shard.shard_id == 2 and not self.died:
            self.died = True
            return ("dead", shard)
        if shard.shard_id == 0 and not self.hung:
            self.hung = True
            return ("hung", shard)
        return super().submit(slot, shard, hints)

    def wait(self, handles, timeout):
        return [h for h in handles if not (isinstance(h, tuple) and h[0] == "hung")]

    def result(self, handle):
        if isinstance(handle, tuple):
            raise WorkerLostError("ActorDiedError: killed by the out-of-memory monitor")
        return super().result(handle)

    def replace(self, slot):
        self.replaced.append(slot)


def test_driver_replaces_dead_and_hung_workers(tmp_path):
    job = FakeJob(tmp_path)
    ex = DyingExecutor(job)
    todo = [s for s in job.shards() if s.shard_id in (0, 2, 4)]
    summaries, failed = dispatch(job, todo, ex, max_attempts=2, timeout=0.5, backoff=0)
    assert failed == [] and sorted(s["shard_id"] for s in summaries) == [0, 2, 4]
    assert len(ex.replaced) == 2  # one dead, one hung


def test_xcore_never_imports_ray_or_prefect():
    code = ("import importlib, pkgutil, sys, xcore\n"
            "for m in pkgutil.walk_packages(xcore.__path__, 'xcore.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'prefect'))\n"
            "print(len([m for m in sys.modules if m.startswith('xcore.')]), bad)\n")
    env = {**os.environ, "RAY_ENABLE_AUTO_CONNECT": "0"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    count, bad = res.stdout.strip().split(" ", 1)
    assert int(count) > 10 and bad == "[]"


def test_seeded_methods_are_stable_across_batches(explain_cfg):
    """``random`` gets per-sample seeds, so batch size and sharding do not change its maps."""
    a = open_job("explain", {**explain_cfg, "methods": {"random": {}}, "batch_size": 4})
    b = open_job("explain", {**explain_cfg, "methods": {"random": {}}, "batch_size": 1,
                             "out": explain_cfg["out"] + "-b"})
    for job in (a, b):
        _run(job)
    ra, rb = (_table(j.run_dir, "explanations") for j in (a, b))
    assert [decode_heatmap(r).tobytes() for r in ra] == [decode_heatmap(r).tobytes() for r in rb]
    assert not torch.equal(torch.from_numpy(decode_heatmap(ra[0])), torch.from_numpy(decode_heatmap(ra[1])))
