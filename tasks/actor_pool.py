"""The elastic actor pool: the driver loop's executor over :class:`~tasks.runtime.ShardActor` actors on Ray.

What each actor needs is declared once (``num_cpus`` = ``cpus_per_actor``, ``num_gpus`` = ``gpus_per_actor``) and
Ray does the placing; this class only feeds shards to the actors that are up:

- all ``actors`` are requested up front, and the same bundles go to ``ray.autoscaler.sdk.request_resources``, so
  an autoscaler sees the demand (a hint; withdrawn on close). A pending actor blocks nothing;
- an actor is *ready* when its ``info()`` call returns (``ray.wait`` with no timeout each time the driver looks);
  actors that become ready later (an autoscaled or newly joined node) start taking shards then;
- an actor that dies (its node left, OOM) costs its in-flight shards (the driver retries them elsewhere) and is
  replaced by a new request; an actor whose constructor fails is retried ``max_restarts`` times, then its slot is
  dropped; with every slot dropped, or no actor ready within ``start_timeout`` s, the run fails with one line
  naming the request and what the nodes offer;
- ``min_actors`` > 1 holds the first shards back until that many actors are ready (then the pool is elastic as
  above), so the first shards spread over that many actors and their nodes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions

from tasks.executors import Ledger, WorkerLostError
from tasks.runtime import ShardActor, ray_address
from xcore.core.shards import Shard

log = logging.getLogger("xcore.runtime")
LOST = (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError)
WAIT_SLICE_S = 1.0


@dataclass(eq=False)
class _Slot:
    actor: Any
    pending: Any  # the ObjectRef of info() until the actor is ready, then None
    entry: dict[str, Any] | None = None
    failures: int = 0
    dropped: bool = False


def pool_layout(resources: dict[str, float], actors: int | None, cpus_per_actor: float,
                gpus_per_actor: float | None) -> tuple[int, dict[str, float]]:
    """``(actor count, {"num_cpus", "num_gpus"})``: one GPU per actor when the cluster reports GPUs (unless
    ``gpus_per_actor`` says otherwise), and by default as many actors as the GPUs, or the CPUs, hold."""
    gpus = float(resources.get("GPU", 0.0))
    per_gpu = (1.0 if gpus > 0 else 0.0) if gpus_per_actor is None else float(gpus_per_actor)
    if actors is None:
        pool = gpus // per_gpu if per_gpu else float(resources.get("CPU", 1.0)) // cpus_per_actor
        actors = max(1, int(pool))
    return actors, {"num_cpus": float(cpus_per_actor), "num_gpus": per_gpu}


class RayExecutor:
    """The driver loop's executor over an elastic pool of at most ``actors`` shard actors (module docstring)."""

    def __init__(self, kind: str, config: dict[str, Any], *, actors: int | None = None,
                 cpus_per_actor: float = 1.0, gpus_per_actor: float | None = None,
                 min_actors: int = 1, start_timeout: float = 900.0, max_restarts: int = 2) -> None:
        self.size, self.options = pool_layout(ray.cluster_resources(), actors, cpus_per_actor, gpus_per_actor)
        self.threads = max(1, int(cpus_per_actor))
        self.kind, self.config = kind, config
        self.max_restarts, self.start_timeout = max_restarts, start_timeout
        self.min_actors = max(1, min(int(min_actors), self.size))  # reached once, then the pool is elastic
        self.bundle = {"CPU": self.options["num_cpus"], **({"GPU": self.options["num_gpus"]}
                                                           if self.options["num_gpus"] else {})}
        self.ledger = Ledger("ray", {"address": ray_address(), "actors_requested": self.size,
                                     "per_actor": dict(self.options)})
        self._cls = ray.remote(max_restarts=0, max_task_retries=0)(ShardActor)
        self._where: dict[Any, _Slot] = {}
        self._request([self.bundle] * self.size)
        self.slots = [self._start() for _ in range(self.size)]
        self._waiting_since = time.monotonic()
        self._warn_if_nothing_fits()
        log.info("requested %d actor(s) with %s", self.size, self.options)

    # --- pool -------------------------------------------------------------------------------------------

    def _request(self, bundles: list[dict[str, float]]) -> None:
        """Tell an autoscaler (if any) about the bundles the pool wants; best effort."""
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=bundles)
        except Exception as err:  # no autoscaler state to write to: nothing to tell
            log.debug("request_resources: %s", err)

    def _start(self) -> _Slot:
        actor = self._cls.options(**self.options).remote(self.kind, self.config, None, self.threads)
        return _Slot(actor, actor.info.remote())

    def _warn_if_nothing_fits(self) -> None:
        fits = [n for n in ray.nodes() if n.get("Alive") and all(
            n.get("Resources", {}).get(k, 0.0) >= v for k, v in self.bundle.items())]
        if not fits:
            log.warning("no node can hold an actor needing %s now; waiting up to %.0f s for one to join "
                        "(autoscaler or `ray start`)", self.bundle, self.start_timeout)

    def _offers(self) -> str:
        return "; ".join(f"{n.get('NodeManagerAddress')}: " + ", ".join(
            f"{k} {v:g}" for k, v in sorted(n.get("Resources", {}).items()) if k in ("CPU", "GPU"))
            for n in ray.nodes() if n.get("Alive")) or "no alive nodes"

    def ready_slots(self) -> list[int]:
        """Slots whose actor is up; collects actors that became ready since the last call (never blocks)."""
        pending = {s.pending: i for i, s in enumerate(self.slots) if s.pending is not None and not s.dropped}
        if pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in done:
                self._collect(pending[ref], ref)
        ready = [i for i, s in enumerate(self.slots) if s.pending is None and not s.dropped]
        live = sum(not s.dropped for s in self.slots)
        if self.min_actors > 1 and len(ready) < min(self.min_actors, live):
            ready = []  # the first shards wait for min_actors actors (a spread start)
        else:
            self.min_actors = 1
        if ready:
            self._waiting_since = time.monotonic()
        elif all(s.dropped for s in self.slots):
            raise RuntimeError("no actor could start: every slot failed its constructor "
                               f"{self.max_restarts + 1} times (see the errors above)")
        elif time.monotonic() - self._waiting_since > self.start_timeout:
            want = "no actor" if self.min_actors <= 1 else f"fewer than {self.min_actors} actors"
            raise TimeoutError(f"{want} became ready in {self.start_timeout:.0f} s: each needs "
                               f"{self.bundle}, alive nodes offer {self._offers()}")
        return ready

    def _collect(self, slot: int, ref: Any) -> None:
        s = self.slots[slot]
        try:
            info = ray.get(ref)
        except LOST as err:  # the constructor raised, or the actor's node died while it started
            s.failures += 1
            log.error("actor %d failed to start (%d/%d): %s", slot, s.failures, self.max_restarts + 1,
                      _first_line(err))
            ray.kill(s.actor, no_restart=True)
            if s.failures > self.max_restarts:
                s.dropped = True
            else:
                fresh = self._start()
                s.actor, s.pending = fresh.actor, fresh.pending
            return
        s.pending = None
        s.entry = self.ledger.started(slot, info)
        if info.get("warning"):
            log.warning("actor %d on %s: %s", slot, info.get("node_ip"), info["warning"])
        log.info("actor %d ready on node %s (%s, device %s)", slot, info.get("node_id"), info.get("node_ip"),
                 info.get("device"))

    # --- executor protocol ------------------------------------------------------------------------------

    def submit(self, slot: int, shard: Shard, hints: dict[str, Any]) -> Any:
        handle = self.slots[slot].actor.process.remote(shard, hints)
        self._where[handle] = self.slots[slot]
        return handle

    def wait(self, handles: list[Any], timeout: float | None) -> list[Any]:
        """Handles that finished within ``timeout`` s (``None``: until one does). Ray's wait runs no Python signal
        handler while it blocks, so it is called in slices of at most ``WAIT_SLICE_S``: a SIGTERM / SIGINT handler
        (:mod:`flows.shutdown`) runs within that long."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_SLICE_S if deadline is None else min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic()))
            ready, _ = _signal_safe(ray.wait, handles, num_returns=1, timeout=left)
            if ready or (deadline is not None and time.monotonic() >= deadline):
                return ready

    def result(self, handle: Any) -> dict[str, Any]:
        slot = self._where.pop(handle, None)
        try:
            summary = ray.get(handle)
        except LOST as err:
            raise WorkerLostError(f"{type(err).__name__}: {_first_line(err)}") from err
        except ray.exceptions.RayTaskError as err:
            raise err.as_instanceof_cause() from None
        if slot is not None and slot.entry is not None:
            self.ledger.finished(slot.entry, summary)
        return summary

    def replace(self, slot: int) -> None:
        """Kill the slot's actor and request a new one (it takes shards once it is ready)."""
        ray.kill(self.slots[slot].actor, no_restart=True)
        self.slots[slot] = self._start()

    def describe(self) -> dict[str, Any]:
        return self.ledger.describe()

    def close(self) -> None:
        for s in self.slots:
            ray.kill(s.actor, no_restart=True)
        self.slots = []
        self._request([])


def _signal_safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a signal handler that raised inside Ray's Cython code (Ray runs Python's signal
    handlers while it waits, then reports ``SystemError: ... returned a result with an exception set``) re-raises
    as the handler's own exception (the driver's ``Interrupted``, Prefect's ``TerminationSignal``), not as an
    error a task retry would catch."""
    try:
        return fn(*args, **kwargs)
    except SystemError as err:
        cause = err.__cause__ or err.__context__
        if cause is not None and not isinstance(cause, Exception):
            raise cause from None
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
