"""Executors: what the driver loop submits shards to, and what it may hear back.

- :class:`Executor`: the protocol (``submit`` / ``wait`` / ``result`` / ``replace`` / ``close`` over worker slots);
- :class:`WorkerLostError`: a worker process died while it held a shard;
- :func:`apply_hints`: the driver's per-attempt hints to a worker (halve the batch after a host OOM death);
- :class:`LocalExecutor`: one worker in this process (tests, ``--executor local``).
The Ray actor pool (:class:`tasks.runtime.RayExecutor`) implements the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from xcore.core.shards import Shard
from xcore.pipeline.base import Job


class WorkerLostError(RuntimeError):
    """The worker process died (segfault, OOM kill, killed actor) while it held the shard."""


class Executor(Protocol):
    size: int

    def submit(self, slot: int, shard: Shard, hints: dict[str, Any]) -> Any: ...

    def wait(self, handles: list[Any], timeout: float | None) -> list[Any]: ...

    def result(self, handle: Any) -> dict[str, Any]: ...

    def replace(self, slot: int) -> None: ...

    def close(self) -> None: ...


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

    def submit(self, slot: int, shard: Shard, hints: dict[str, Any]) -> _Done:
        try:
            if self._worker is None:
                self._worker = self.job.worker(self.device)
            apply_hints(self._worker, hints)
            return _Done(value=self._worker.process(shard))
        except Exception as err:
            return _Done(error=err)

    def wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        return list(handles)

    def result(self, handle: _Done) -> dict[str, Any]:
        if handle.error is not None:
            raise handle.error
        return handle.value

    def replace(self, slot: int) -> None:
        self._worker = None

    def close(self) -> None:
        self._worker = None


def apply_hints(worker: Any, hints: dict[str, Any]) -> None:
    """Halve a worker's ``batch_size`` ``hints["shrink"]`` times (retry after a host out-of-memory death)."""
    shrink = int(hints.get("shrink") or 0)
    if shrink and hasattr(worker, "batch_size"):
        worker.batch_size = max(1, int(worker.batch_size) >> shrink)
