"""The Ray side: initialise Ray once, and the shard actor the pool (:mod:`tasks.actor_pool`) is made of.

- :func:`init_ray`: joins ``RAY_ADDRESS`` when set (cluster mode; an auth or connection failure is one clear
  line, :mod:`tasks.ray_connect`), else starts a private local instance (``address="local"``: never attaches to
  another Ray node on the host or a stale cluster file) with explicit resources, no dashboard, a small object
  store and usage stats off. Called once per process.
- :class:`ShardActor`: a plain class (usable without Ray in tests); the pool wraps it with ``ray.remote``. Its
  device is what Ray assigned (``ray.get_gpu_ids()``): an assigned GPU that torch cannot use falls back to the
  CPU with a logged warning, which ``info()`` reports for ``run.json``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from tasks.executors import apply_hints, process_info
from xcore.core.shards import Shard
from xcore.pipeline import open_job

log = logging.getLogger("xcore.runtime")
OBJECT_STORE_BYTES = 256 * 1024**2


def detect_gpus() -> int:
    """GPUs visible to this process (0 without CUDA); decided here, never by Ray's auto-detection."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ray_address() -> str:
    """The cluster this process joins: ``RAY_ADDRESS``, or ``"local"`` (a private instance)."""
    return os.environ.get("RAY_ADDRESS") or "local"


def init_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, float]:
    """Start or join Ray once; return the cluster's resources (``CPU``, ``GPU``, ...).

    With ``RAY_ADDRESS`` set the driver joins that cluster; otherwise a private local instance gets ``num_cpus``
    (default: the cores this process may run on) and ``num_gpus`` (default: CUDA devices).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        address = ray_address()
        if address != "local":
            from tasks.ray_connect import connect

            connect(address)
        else:
            ray.init(address="local", num_cpus=num_cpus or len(os.sched_getaffinity(0)),
                     num_gpus=detect_gpus() if num_gpus is None else num_gpus,
                     include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                     logging_level=logging.WARNING)
    resources = ray.cluster_resources()
    log.info("ray resources: %s", {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")})
    return resources


def assigned_device() -> tuple[str | None, str | None]:
    """``(device, warning)`` from Ray's assignment: ``"cuda"`` for an assigned usable GPU, ``"cpu"`` with a
    warning for an assigned GPU torch cannot use, ``"cpu"`` for an actor without GPUs; ``(None, None)`` outside
    a Ray worker (the job's configured device applies)."""
    import torch

    if not ray.is_initialized():
        return None, None
    ids = ray.get_gpu_ids()
    if not ids:
        return "cpu", None
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return "cuda", None
    warning = (f"Ray assigned GPU {list(ids)} but torch cannot use it (CUDA available: "
               f"{torch.cuda.is_available()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
               "running on CPU")
    log.warning(warning)
    return "cpu", warning


class ShardActor:
    """Builds the job's worker once (model on its device) and processes shards one at a time."""

    def __init__(self, kind: str, config: dict[str, Any], device: str | None = None,
                 threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.warning: str | None = None
        if device is None:
            device, self.warning = assigned_device()
        self.worker = open_job(kind, config).worker(device)
        self.device = str(getattr(self.worker, "device", device))

    def info(self) -> dict[str, Any]:
        """Where this actor runs: node id and IP, pid, device, assigned GPU ids, torch threads, any warning."""
        import torch

        info = process_info(self.device, torch.get_num_threads())
        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            ips = [n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == node_id]
            info.update(node_id=node_id, node_ip=ips[0] if ips else None,  # the node's address, not the host's
                        gpu_ids=[str(i) for i in ray.get_gpu_ids()])
        info["warning"] = self.warning
        return info

    def process(self, shard: Shard, hints: dict[str, Any] | None = None) -> dict[str, Any]:
        apply_hints(self.worker, hints or {})
        return self.worker.process(shard)

    def ping(self) -> str:
        return "ok"
