"""The Ray side: initialise Ray once, the shard actor, and the actor-pool executor of the driver loop.

- :func:`init_ray`: joins ``RAY_ADDRESS`` when set (cluster mode), else starts a local instance with explicit
  resources, no dashboard, a small object store and usage stats off. Called once per process.
- :class:`ShardActor`: a plain class (usable without Ray in tests); the executor wraps it with
  ``ray.remote(max_restarts=2, max_task_retries=0)``: Ray restarts a dead actor (re-running the constructor,
  which loads the model), the driver owns shard retries.
- :class:`RayExecutor`: one actor per GPU (``num_gpus=1``), or CPU actors with pinned torch threads.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
import ray.exceptions

from tasks.executors import WorkerLostError, apply_hints
from xcore.core.shards import Shard
from xcore.pipeline import open_job

log = logging.getLogger("xcore.runtime")
OBJECT_STORE_BYTES = 256 * 1024**2


def detect_gpus() -> int:
    """GPUs visible to this process (0 without CUDA); decided here, never by Ray's auto-detection."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def init_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, float]:
    """Start or join Ray once; return the cluster's resources (``CPU``, ``GPU``, ...).

    With ``RAY_ADDRESS`` set the driver joins that cluster (``address="auto"`` semantics); otherwise a local
    instance gets ``num_cpus`` (default: the machine's cores) and ``num_gpus`` (default: CUDA devices).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, ignore_reinit_error=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1,
                     num_gpus=detect_gpus() if num_gpus is None else num_gpus,
                     include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                     ignore_reinit_error=False, logging_level=logging.WARNING)
    resources = ray.cluster_resources()
    log.info("ray resources: %s", {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")})
    return resources


class ShardActor:
    """Builds the job's worker once (model on its device) and processes shards one at a time."""

    def __init__(self, kind: str, config: dict[str, Any], device: str | None = None,
                 threads: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.worker = open_job(kind, config).worker(device)

    def process(self, shard: Shard, hints: dict[str, Any] | None = None) -> dict[str, Any]:
        apply_hints(self.worker, hints or {})
        return self.worker.process(shard)

    def ping(self) -> str:
        return "ok"


class RayExecutor:
    """The driver loop's executor over a pool of :class:`ShardActor` actors."""

    def __init__(self, kind: str, config: dict[str, Any], *, actors: int | None = None,
                 cpus_per_actor: float | None = None, max_restarts: int = 2) -> None:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        if gpus:
            self.options: dict[str, Any] = {"num_gpus": 1, "num_cpus": cpus_per_actor or 1}
            self.threads = None
            self.size = actors or gpus
        else:  # one CPU actor per spare core, leaving one core to the driver, I/O and Prefect
            per = cpus_per_actor or max(1, cpus - 1)
            self.options = {"num_gpus": 0, "num_cpus": per}
            self.threads = int(per)
            self.size = actors or max(1, int((cpus - 1) // per) if cpus > 1 else 1)
        self.kind, self.config = kind, config
        self._cls = ray.remote(max_restarts=max_restarts, max_task_retries=0)(ShardActor)
        self.actors = [self._start() for _ in range(self.size)]
        log.info("started %d actor(s) with %s", self.size, self.options)

    def _start(self) -> Any:
        return self._cls.options(**self.options).remote(self.kind, self.config, None, self.threads)

    def submit(self, slot: int, shard: Shard, hints: dict[str, Any]) -> Any:
        return self.actors[slot].process.remote(shard, hints)

    def wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        return ready

    def result(self, handle: Any) -> dict[str, Any]:
        try:
            return ray.get(handle)
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as err:
            raise WorkerLostError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
        except ray.exceptions.RayTaskError as err:
            cause = err.as_instanceof_cause()
            raise cause from None

    def replace(self, slot: int) -> None:
        ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._start()

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
