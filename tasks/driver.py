"""The driver loop: plan shards, skip complete ones, feed workers, retry boundedly, record failures.

Runs in the flow process (never inside a Ray task). ``dispatch`` talks to an :class:`~tasks.executors.Executor`:
the Ray actor pool (:class:`tasks.actor_pool.RayExecutor`) or :class:`~tasks.executors.LocalExecutor` (in process,
same interface; tests and ``--executor local``); :func:`make_executor` builds either.
It keeps at most ``per_worker`` shards in flight per worker and handles:

- success: record the summary;
- a shard's exception: resubmit after ``backoff * 2**(attempt-1)`` s, up to ``max_attempts`` attempts;
- a dead worker (:class:`WorkerLostError`): the oldest shard in flight on it (the one it was running) is
  charged an attempt, the others are requeued free, the worker is replaced; a death that mentions memory
  halves the batch for the retried shard (``hints["shrink"]``);
- no progress on a worker for ``timeout`` s: the worker is killed and replaced, its running shard charged.

Shards that exhaust their attempts are written to ``<run_dir>/_manifests/failed.json`` (rewritten every run).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.executors import Executor, LocalExecutor, WorkerLostError
from xcore.core.shards import Shard
from xcore.io.parquet import clean_stale_temps
from xcore.io.runs import read_json, write_json_atomic
from xcore.pipeline.base import Job

log = logging.getLogger("xcore.driver")
Listener = Callable[[dict[str, Any], int, int], None]
_LISTENERS: list[Listener] = []
MAX_ERROR = 1000
POLL_S = 1.0


@contextlib.contextmanager
def progress_listener(fn: Listener) -> Iterator[None]:
    """Call ``fn(summary, done, total)`` after every finished shard of any ``dispatch`` in this process."""
    _LISTENERS.append(fn)
    try:
        yield
    finally:
        _LISTENERS.remove(fn)


def plan(job: Job) -> tuple[list[Shard], list[Shard]]:
    """``(todo, done)``: shards still to compute and those already complete; stale temps are removed first."""
    clean_stale_temps(job.run_dir)
    shards = job.shards()
    done = [s for s in shards if job.is_complete(s)]
    done_ids = {s.shard_id for s in done}
    todo = [s for s in shards if s.shard_id not in done_ids]
    write_json_atomic(Path(job.run_dir) / "_manifests" / "plan.json", {
        "kind": job.kind, "run_key": job.run_key, "total": len(shards),
        "todo": [s.shard_id for s in todo], "complete": sorted(done_ids), "planned_at": time.time()})
    return todo, done


@dataclass(eq=False)
class _Task:
    shard: Shard
    attempts: int = 0
    not_before: float = 0.0
    shrink: int = 0
    errors: list[str] = field(default_factory=list)


def dispatch(job: Job, shards: list[Shard], executor: Executor, *, max_attempts: int = 3,
             timeout: float | None = None, backoff: float = 1.0, per_worker: int = 2,
             on_result: Listener | None = None,
             logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
             ) -> tuple[list[dict[str, Any]], list[int]]:
    """Process ``shards`` on ``executor`` (module docstring); return ``(summaries, failed shard ids)``."""
    out = logger or log
    queue: deque[_Task] = deque(_Task(s) for s in shards)
    running: dict[Any, tuple[_Task, int]] = {}
    inflight: list[list[Any]] = [[] for _ in range(executor.size)]
    progress_at = [time.monotonic()] * executor.size
    summaries: list[dict[str, Any]] = []
    failed: list[_Task] = []
    total = len(shards)

    def retry(task: _Task, error: str, delay: bool = True) -> None:
        task.attempts += 1
        error = error[:MAX_ERROR]
        task.errors.append(error)
        if task.attempts >= max_attempts:
            out.error("shard %d failed after %d attempts: %s", task.shard.shard_id, task.attempts, error)
            failed.append(task)
            return
        out.warning("shard %d attempt %d failed, retrying: %s", task.shard.shard_id, task.attempts, error)
        task.not_before = time.monotonic() + (backoff * 2 ** (task.attempts - 1) if delay else 0.0)
        queue.append(task)

    def drop_worker(slot: int, culprit: Any, error: str) -> None:
        """Replace the worker of ``slot``: charge the shard it was running, requeue the rest for free."""
        for h in list(inflight[slot]):
            task, _ = running.pop(h)
            if h is culprit:
                retry(task, error, delay=False)
            else:
                queue.appendleft(task)
        inflight[slot].clear()
        executor.replace(slot)
        progress_at[slot] = time.monotonic()

    while queue or running:
        now = time.monotonic()
        ready = executor.ready_slots() if queue else []
        for _ in range(len(queue)):
            task = queue.popleft()
            slot = min(ready, key=lambda s: len(inflight[s]), default=None)
            if slot is None or task.not_before > now or len(inflight[slot]) >= per_worker:
                queue.append(task)
                continue
            hints = {"attempt": task.attempts + 1, "shrink": task.shrink}
            h = executor.submit(slot, task.shard, hints)
            if not inflight[slot]:
                progress_at[slot] = now
            inflight[slot].append(h)
            running[h] = (task, slot)
        if not running:  # waiting for a backoff to pass or for a first actor to come up
            due = min(t.not_before for t in queue) - time.monotonic()
            time.sleep(min(max(0.0, due), POLL_S) if not ready else max(0.0, due))
            continue
        wait_for = POLL_S if queue else None  # with shards queued, look for newly ready actors now and then
        if timeout is not None:
            oldest = min(progress_at[s] for s in range(executor.size) if inflight[s])
            left = max(0.0, oldest + timeout - time.monotonic())
            wait_for = left if wait_for is None else min(wait_for, left)
        for h in executor.wait(list(running), wait_for):
            if h not in running:  # dropped with its worker
                continue
            task, slot = running[h]
            try:
                summary = executor.result(h)
            except WorkerLostError as err:
                if "memory" in str(err).lower():
                    inflight_task = running[inflight[slot][0]][0]
                    inflight_task.shrink += 1
                drop_worker(slot, inflight[slot][0], f"worker lost: {err}")
                continue
            except Exception as err:
                running.pop(h)
                inflight[slot].remove(h)
                progress_at[slot] = time.monotonic()
                retry(task, f"{type(err).__name__}: {err}")
                continue
            running.pop(h)
            inflight[slot].remove(h)
            progress_at[slot] = time.monotonic()
            summaries.append(summary)
            for fn in [on_result, *_LISTENERS]:
                if fn is not None:
                    fn(summary, len(summaries), total)
        if timeout is not None:
            for slot in range(executor.size):
                if inflight[slot] and time.monotonic() - progress_at[slot] > timeout:
                    out.error("worker %d made no progress for %.0f s; replacing it", slot, timeout)
                    drop_worker(slot, inflight[slot][0], f"timeout after {timeout:.0f} s")
    write_failed(job, failed)
    return summaries, sorted(t.shard.shard_id for t in failed)


def write_failed(job: Job, failed: list[_Task]) -> None:
    """Rewrite ``_manifests/failed.json`` with the shards of this dispatch that exhausted their attempts."""
    write_json_atomic(Path(job.run_dir) / "_manifests" / "failed.json", {
        "kind": job.kind, "run_key": job.run_key, "written_at": time.time(),
        "failed": [{"shard_id": t.shard.shard_id, "start": t.shard.start, "stop": t.shard.stop,
                    "attempts": t.attempts, "errors": t.errors[-3:]}
                   for t in sorted(failed, key=lambda t: t.shard.shard_id)]})


def make_executor(job: Job, kind: str = "ray", **options: Any) -> Executor:
    """``"local"``: :class:`LocalExecutor`; ``"ray"``: start/join Ray and build the elastic actor pool (imports
    Ray); ``options`` are :class:`~tasks.options.RunOptions` fields (``actors``, ``cpus_per_actor``, ...)."""
    if kind == "local":
        return LocalExecutor(job, options.get("device"))
    if kind == "ray":
        from tasks.actor_pool import RayExecutor
        from tasks.runtime import init_ray

        init_ray()
        return RayExecutor(job.kind, job.config, actors=options.get("actors"),
                           cpus_per_actor=options.get("cpus_per_actor") or 1.0,
                           gpus_per_actor=options.get("gpus_per_actor"), min_actors=options.get("min_actors") or 1,
                           start_timeout=options.get("actor_start_timeout") or 900.0)
    raise ValueError(f"unknown executor {kind!r}; use 'ray' or 'local'")


def record_executor(job: Job, info: dict[str, Any]) -> None:
    """Write the executor record (kind, actors, their resources, nodes, input wait) into ``run.json``'s
    ``executor`` key, and keep it in ``_manifests/executor.json`` for runs whose reduce rewrites ``run.json``."""
    write_json_atomic(Path(job.run_dir) / "_manifests" / "executor.json", info)


def merge_executor(job: Job) -> None:
    """Copy ``_manifests/executor.json`` (the last dispatch's record) into ``run.json`` after the reduce."""
    info = read_json(Path(job.run_dir) / "_manifests" / "executor.json")
    run_json = Path(job.run_dir) / "run.json"
    if info:
        write_json_atomic(run_json, {**(read_json(run_json) or {}), "executor": info})
