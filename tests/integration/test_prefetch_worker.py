"""The explain worker decodes samples ahead of the compute (xcore.core.prefetch) without changing a bit of its
output: the same tables, rows in the same order and the same error rows as loading each sample when needed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import xcore.explain
from xcore.pipeline import open_job
from xcore.pipeline.tables import is_timing

DEADLINE = 60.0  # seconds; only a deadline for an event that must happen, never a measured quantity


class Flaky:
    """The tiny dataset with unreadable samples and a log of which thread loaded what."""

    def __init__(self, inner: Any, bad: set[int]) -> None:
        self.inner, self.bad = inner, bad
        self.loaded: dict[int, threading.Event] = {}
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def load(self, index: int) -> Any:
        self.threads.add(threading.current_thread().name)
        try:
            if index in self.bad:
                raise OSError(f"corrupt file for sample {index}")
            return self.inner.load(index)
        finally:
            self.loaded.setdefault(index, threading.Event()).set()


def _files(run_dir: str) -> dict[str, list[dict[str, Any]]]:
    """Every Parquet file of the run, rows in file order (timings dropped)."""
    out = {}
    for path in sorted(Path(run_dir).rglob("*.parquet")):
        t = pq.read_table(path)
        out[path.relative_to(run_dir).as_posix()] = t.drop_columns(
            [c for c in t.column_names if is_timing(c)]).to_pylist()
    return out


def _process(cfg: dict[str, Any], out: Path, loaders: int) -> tuple[dict[str, Any], dict[str, list], Any]:
    job = open_job("explain", {**cfg, "out": str(out), "shard_size": 10, "batch_size": 3})
    worker = job.worker("cpu")
    worker.loaders = loaders
    worker.dataset = Flaky(worker.dataset, bad={4, 7})
    summary = worker.process(job.shards()[0])
    return summary, _files(job.run_dir), worker


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("xcore-prefetch")]


@pytest.mark.parametrize("oom", [False, True], ids=["plain", "oom-halving"])
def test_prefetch_gives_the_tables_of_one_by_one_loading(explain_cfg, tmp_path, monkeypatch, oom):
    real = xcore.explain.run
    bad_x = open_job("explain", explain_cfg).open_dataset().load(1).x

    def tight(name, model, x, targets=None, **kw):
        if oom and x.shape[0] > 1:  # the worker halves its batch size 3 -> 1 mid-shard
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        if name == "gradient" and any(bool((s == bad_x).all()) for s in x):
            raise ValueError("boom on sample 1")  # a compute error: recorded after the load errors
        return real(name, model, x, targets, **kw)

    monkeypatch.setattr(xcore.explain, "run", tight)
    runs = {n: _process(explain_cfg, tmp_path / f"loaders-{n}", n) for n in (0, 1, 3)}
    base_summary, base_files, base_worker = runs[0]
    assert base_worker.dataset.threads == {threading.current_thread().name}  # 0: inline, no threads
    assert base_worker.batch_size == (1 if oom else 3)
    assert len(base_files) == 7  # 3 methods x (explanations, metrics) + errors
    errors = base_files["errors/shard-000000.parquet"]
    assert [(e["index"], e["stage"], e["error_type"]) for e in errors] == [
        (4, "load", "OSError"), (7, "load", "OSError"), (1, "explain", "ValueError")]
    assert base_summary["ok"] == 8 * 3 - 1 and base_summary["failed"] == 2 * 3 + 1
    for n in (1, 3):
        summary, files, worker = runs[n]
        assert files == base_files, f"loaders={n}"
        assert worker.batch_size == base_worker.batch_size
        assert all(t.startswith("xcore-prefetch") for t in worker.dataset.threads)
        drop = ("seconds", "input_wait_s")
        assert {k: v for k, v in summary.items() if k not in drop} == {
            k: v for k, v in base_summary.items() if k not in drop}
    for summary, *_ in runs.values():
        assert 0.0 <= summary["input_wait_s"] <= summary["seconds"]
    assert _pool_threads() == []


def test_next_batch_loads_while_the_current_one_computes(explain_cfg, tmp_path):
    """Batch 0 (samples 0-2) does not finish computing until sample 3, the first of batch 1, has loaded:
    possible only if samples load ahead of the compute (loading each when needed would wait out the deadline)."""
    job = open_job("explain", {**explain_cfg, "out": str(tmp_path), "shard_size": 10, "batch_size": 3})
    worker = job.worker("cpu")
    worker.loaders = 1
    worker.dataset = data = Flaky(worker.dataset, bad=set())
    data.loaded[3] = threading.Event()
    run_chunk = worker._run_chunk
    seen: list[tuple[list[int], bool]] = []

    def chunk_waiting_for_sample_3(chunk):
        first = not seen
        seen.append(([it.index for it in chunk], data.loaded[3].wait(DEADLINE) if first else True))
        run_chunk(chunk)

    worker._run_chunk = chunk_waiting_for_sample_3
    summary = worker.process(job.shards()[0])
    assert seen[0] == ([0, 1, 2], True)
    assert [c for c, _ in seen] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert summary["ok"] == 30 and _pool_threads() == []


def test_threads_are_joined_when_a_shard_raises(explain_cfg, tmp_path):
    """A failure outside any sample (here the dataset cannot name sample 5) ends ``process``; no thread stays."""
    job = open_job("explain", {**explain_cfg, "out": str(tmp_path), "shard_size": 10, "batch_size": 2})
    worker = job.worker("cpu")
    worker.loaders = 2
    inner = worker.dataset

    class Unnamed(Flaky):
        def sample_id(self, index: int) -> str:
            if index == 5:
                raise LookupError("no sample 5")
            return inner.sample_id(index)

    worker.dataset = Unnamed(inner, bad=set())
    with pytest.raises(LookupError, match="no sample 5"):
        worker.process(job.shards()[0])
    assert _pool_threads() == []
    assert not job.is_complete(job.shards()[0])
