"""Executors: what the driver loop submits shards to, and what it may hear back.

- :class:`Executor`: the protocol (``ready_slots`` / ``submit`` / ``wait`` / ``result`` / ``replace`` / ``close``
  over worker slots, and ``describe`` for ``run.json``);
- :class:`WorkerLostError`: a worker process died while it held a shard;
- :func:`apply_hints`: the driver's per-attempt hints to a worker (halve the batch after a host OOM death);
- :class:`Ledger`: which worker ran which shards where, and how long they waited for input (``run.json``);
- :class:`LocalExecutor`: one worker in this process (tests, ``--executor local``).
The Ray actor pool (:class:`tasks.actor_pool.RayExecutor`) implements the same protocol.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from xcore.core.shards import Shard
from xcore.pipeline.base import Job


class WorkerLostError(RuntimeError):
    """The worker process died (segfault, OOM kill, killed actor, lost node) while it held the shard."""


class Executor(Protocol):
    size: int

    def ready_slots(self) -> list[int]: ...

    def submit(self, slot: int, shard: Shard, hints: dict[str, Any]) -> Any: ...

    def wait(self, handles: list[Any], timeout: float | None) -> list[Any]: ...

    def result(self, handle: Any) -> dict[str, Any]: ...

    def replace(self, slot: int) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class Ledger:
    """The executor record of ``run.json``: one entry per worker that became ready (its node, device, threads,
    warning) with the shards it completed, shards per node, and the share of worker time spent waiting for input
    (``sum(input_wait_s) / sum(seconds)`` over the shard summaries that report it)."""

    kind: str
    extra: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    wait_s: float = 0.0
    busy_s: float = 0.0

    def started(self, slot: int, info: dict[str, Any]) -> dict[str, Any]:
        entry = {"slot": slot, **info, "shards": 0}
        self.workers.append(entry)
        return entry

    def finished(self, entry: dict[str, Any], summary: dict[str, Any]) -> None:
        entry["shards"] += 1
        if "input_wait_s" in summary:
            self.wait_s += float(summary["input_wait_s"])
            self.busy_s += float(summary.get("seconds", 0.0))

    def describe(self) -> dict[str, Any]:
        nodes: dict[str, int] = {}
        for w in self.workers:
            nodes[str(w.get("node_id"))] = nodes.get(str(w.get("node_id")), 0) + w["shards"]
        share = round(self.wait_s / self.busy_s, 4) if self.busy_s > 0 else None
        return {"kind": self.kind, **self.extra, "actors": self.workers, "nodes": nodes, "input_wait_share": share}


def process_info(device: str | None, threads: int) -> dict[str, Any]:
    """Where a worker runs, for the ledger (a Ray actor adds its node id and GPU ids)."""
    return {"node_id": socket.gethostname(), "node_ip": None, "pid": os.getpid(), "device": device,
            "gpu_ids": [], "threads": threads, "warning": None}


@dataclass(eq=False)
class _Done:
    value: Any = None
    error: BaseException | None = None


class LocalExecutor:
    """Runs shards in this process with one worker built lazily from ``job.worker(device)``."""

    size = 1

    def __init__(self, job: Job, device: str | None = None) -> None:
        self.job = job
        self.device = device
        self._worker: Any = None
        self._entry: dict[str, Any] | None = None
        self.ledger = Ledger("local", {"actors_requested": 1})

    def ready_slots(self) -> list[int]:
        return list(range(self.size))

    def submit(self, slot: int, shard: Shard, hints: dict[str, Any]) -> _Done:
        try:
            if self._worker is None:
                import torch

                self._worker = self.job.worker(self.device)
                dev = getattr(self._worker, "device", self.device)
                self._entry = self.ledger.started(0, process_info(str(dev) if dev else None,
                                                                  torch.get_num_threads()))
            apply_hints(self._worker, hints)
            return _Done(value=self._worker.process(shard))
        except Exception as err:
            return _Done(error=err)

    def wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        return list(handles)

    def result(self, handle: _Done) -> dict[str, Any]:
        if handle.error is not None:
            raise handle.error
        if self._entry is not None:
            self.ledger.finished(self._entry, handle.value)
        return handle.value

    def replace(self, slot: int) -> None:
        self._worker = None

    def describe(self) -> dict[str, Any]:
        return self.ledger.describe()

    def close(self) -> None:
        self._worker = None


def apply_hints(worker: Any, hints: dict[str, Any]) -> None:
    """Halve a worker's ``batch_size`` ``hints["shrink"]`` times (retry after a host OOM death)."""
    shrink = int(hints.get("shrink") or 0)
    if shrink and hasattr(worker, "batch_size"):
        worker.batch_size = max(1, int(worker.batch_size) >> shrink)
