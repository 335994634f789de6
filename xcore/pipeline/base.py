"""Jobs: what the runtime fans out. A job is planned by the driver and executed shard by shard by workers.

The runtime in ``tasks/`` and ``flows/`` knows only this protocol, so a flow can run any per-shard function
(explain + metrics, ROAR retraining, per-class filter statistics) on Ray actors, let it write its own tables,
and end with a reduce step over shards. Only small plain values (shard ids, dicts, paths) cross process
boundaries.

- ``Job`` lives in the driver: cheap to build (indexes the dataset, loads no model), answers which shards
  exist and which are already complete, and reduces the per-shard summaries at the end.
- ``Worker`` lives in an actor: built once per actor by ``job.worker(device)``, holds the model, and
  processes one shard at a time, writing its files atomically and returning a small summary dict.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from xcore.analysis.blocks import Block
from xcore.core.batching import BatchSize
from xcore.core.shards import Shard, plan_shards
from xcore.errors import UsageError
from xcore.io.runs import RunLayout
from xcore.pipeline.config import model_overrides
from xcore.registry import Registry


class Worker(Protocol):
    batch_size: int  # samples per batch; the driver halves it when a worker died of host OOM

    def process(self, shard: Shard) -> dict[str, Any]:
        """Compute and atomically write every table file of ``shard``; return a small plain summary.

        Per-sample failures become rows of the ``errors`` table; an exception escaping ``process`` means the
        whole shard failed (the driver retries it a bounded number of times).
        """
        ...


class Job(Protocol):
    """What the runtime (``tasks/``, ``flows/``) knows of a job; it never asks for a job's kind-specific fields."""

    kind: str
    config: dict[str, Any]  # plain values: actors rebuild the job from (kind, config)
    run_dir: str
    run_key: str  # identifies the configuration; shards of another key never count as complete

    def shards(self) -> list[Shard]: ...

    def is_complete(self, shard: Shard) -> bool: ...

    def worker(self, device: str | None = None) -> Worker: ...

    def reduce(self, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]: ...

    def requires(self) -> list[tuple[str, dict[str, Any]]]:
        """Jobs ``(kind, config)`` to run, in order, before this one (e.g. the explain runs whose maps ROAR
        reads); each goes through the same pipeline, so a complete one is reused as it is."""
        ...

    def report(self, methods: list[str] | None = None) -> list[Block]:
        """Analyses after the shards are reduced (files under ``<run_dir>/analysis``), as blocks to show."""
        ...

    def describe(self, summary: dict[str, Any]) -> list[Block]:
        """The reduced ``summary`` as blocks (the CLI prints them; the Prefect artifact is their markdown)."""
        ...


class BaseJob:
    """Defaults for the optional parts of :class:`Job`: nothing required first, no report, the summary's scalar
    values as lines, and completeness as the run layout's rule (a job has ``layout`` and ``run_key``)."""

    layout: RunLayout
    run_key: str

    def requires(self) -> list[tuple[str, dict[str, Any]]]:
        return []

    def is_complete(self, shard: Shard) -> bool:
        return self.layout.is_complete(shard, self.run_key)

    def report(self, methods: list[str] | None = None) -> list[Block]:
        return []

    def describe(self, summary: dict[str, Any]) -> list[Block]:
        return [f"{k.replace('_', ' ')}: {v}" for k, v in summary.items() if isinstance(v, int | float | str)]


class SampleShardedJob(BaseJob):
    """A job over a dataset split, ``config["shard_size"]`` samples per shard (``n_samples`` of them)."""

    n_samples: int
    config: dict[str, Any]

    def shards(self) -> list[Shard]:
        return plan_shards(self.n_samples, self.config["shard_size"])


class BatchedWorker:
    """A worker whose batch size is a :class:`~xcore.core.batching.BatchSize` (``self.batch``), which the driver
    sets through ``batch_size`` (halved after a host OOM) and OOM handling halves in place."""

    batch: BatchSize

    @property
    def batch_size(self) -> int:
        return self.batch.value

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.batch.value = max(1, int(value))


def job_model(config: Mapping[str, Any], device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A dataset job's model (eval mode, on ``device``) and metadata: the checkpoint ``config["model"]`` with the
    config's model keys (``arch``, ``model_factory``, ``num_classes``, ``input_size``, ``mean``, ``std``) replacing
    its sidecar's (:func:`xcore.models.checkpoint.load_checkpoint`). Every job loads its model here, in the driver
    and in each actor (the config travels as a dict; a factory module is imported by name there). Any failure is a
    one-line :class:`UsageError`."""
    from xcore.models.checkpoint import load_checkpoint

    try:
        return load_checkpoint(config["model"], device, model_overrides(config))
    except UsageError:
        raise
    except Exception as err:  # a corrupt .pt, a missing architecture, ...
        raise UsageError(f"unreadable checkpoint {config['model']}: {type(err).__name__}: {err}") from None


def job_model_meta(config: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata :func:`job_model` would return, without building the model."""
    from xcore.models.checkpoint import read_meta
    from xcore.models.zoo import require_file

    return read_meta(require_file(config["model"]), model_overrides(config))


def model_identity(config: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The run key's ``model`` entry: architecture and weights digest, plus the config's model keys when given
    (they change the model or its inputs; absent, earlier run keys stay as they were)."""
    from xcore.models.checkpoint import weights_digest

    overrides = model_overrides(config)
    return {"arch": meta.get("arch"), "weights": weights_digest(config["model"]),
            **({"overrides": overrides} if overrides else {})}


JobFactory = Callable[[dict[str, Any]], Job]
JOBS: Registry[JobFactory] = Registry("job kind")


def open_job(kind: str, config: dict[str, Any]) -> Job:
    """Build the driver-side job of ``kind`` from a plain config dict (validates; raises UsageError).

    ``kind`` is a name in :data:`JOBS` or a plug-in ``"package.module:factory"``, imported on demand — in the
    driver and again in every actor, so the module must be importable there (installed, or under the
    driver's working directory, which Ray puts on its local workers' ``sys.path``).
    """
    if kind not in JOBS and ":" in kind:
        module, _, attr = kind.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise UsageError(f"cannot load job kind {kind!r}: {err}") from None
        return factory(config)
    return JOBS.get(kind)(config)
