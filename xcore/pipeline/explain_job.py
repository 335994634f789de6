"""The ``explain`` job: explanations + metrics for every sample of a dataset, one Parquet shard at a time.

Its config is :class:`~xcore.pipeline.config.ExplainConfig` (plain dict across processes). Everything that
depends on the dataset kind — the reader, its options from the checkpoint, the split rule, the report after the
flow — comes from the kind's descriptor in :mod:`xcore.datasets`; nothing here branches on a kind's name.

The driver builds the job (cheap: validates paths, methods, layers and metrics; indexes the dataset); each
actor builds it again and calls :meth:`ExplainJob.worker` once to hold the model on its device.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

import xcore.explain
import xcore.metrics
from xcore.analysis.blocks import Block, table
from xcore.data.base import Dataset
from xcore.data.subset import Spread
from xcore.datasets import DATASETS, DatasetKind
from xcore.io.lock import refuse_foreign
from xcore.io.runs import RunLayout, git_sha, package_versions, run_key, write_json_atomic
from xcore.pipeline.base import JOBS, SampleShardedJob, job_model, model_identity
from xcore.pipeline.config import ExplainConfig, parse_config


def resolve_device(device: str | None) -> str:
    """``device`` or, when ``None``, ``"cuda"`` if a GPU is visible else ``"cpu"``."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


@JOBS.register("explain")
class ExplainJob(SampleShardedJob):
    """Driver side of the explain job (see the module docstring); implements ``xcore.pipeline.base.Job``."""

    kind = "explain"

    def __init__(self, config: dict[str, Any] | ExplainConfig) -> None:
        self.created = time.time()
        self.config = cfg = parse_config(ExplainConfig, config).model_dump()
        model, self.model_meta = job_model(cfg, "cpu")
        self.methods = {m: xcore.explain.validate(m, model, p) for m, p in cfg["methods"].items()}
        self.metrics = {m: xcore.metrics.validate(m, p) for m, p in cfg["metrics"].items()}
        del model
        cfg["dataset_kind"] = cfg["dataset_kind"] or self.model_meta.get("dataset_kind") or "imagenet"
        self.dataset_kind: DatasetKind = DATASETS.get(cfg["dataset_kind"])
        cfg["split"] = self.dataset_kind.split(cfg["split"], self.model_meta)
        self.reader_kwargs = {**self.dataset_kind.options(self.model_meta), **cfg["reader"]}
        self.n_samples = len(self.open_dataset())
        self.run_key = run_key({
            "dataset": {"root": str(Path(cfg["dataset"]).resolve()), "kind": cfg["dataset_kind"],
                        "split": cfg["split"], "n": self.n_samples},
            "model": model_identity(cfg, self.model_meta),
            "methods": self.methods, "metrics": self.metrics, "preprocessing": self.preprocessing,
            "shard_size": cfg["shard_size"], "seed": cfg["seed"],
            **({"target": cfg["target"]} if cfg["target"] != "pred" else {}),
            **({"samples": cfg["samples"]} if cfg["samples"] is not None else {})})
        self.run_id = cfg["run_id"] or self.run_key
        self.run_dir = str(Path(cfg["out"]) / self.run_id)
        self.layout = RunLayout(self.run_dir)
        self._check_run_dir()

    def metric_params(self, method: str, name: str) -> dict[str, Any]:
        """Metric ``name``'s parameters for maps of ``method``: the user's, then the metric's method-dependent
        defaults (e.g. the pointing game smooths gradient maps), then its published defaults."""
        given = self.config["metrics"][name]
        by_method = xcore.metrics.METRICS.get(name).method_defaults(method)
        return {**self.metrics[name], **{k: v for k, v in by_method.items() if k not in given}}

    @property
    def preprocessing(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in sorted(self.reader_kwargs.items()))

    def open_dataset(self) -> Dataset:
        """The configured split, or its evenly spaced subset of ``samples`` (:class:`xcore.data.subset.Spread`)."""
        cfg = self.config
        dataset = self.dataset_kind.open(cfg["dataset"], cfg["split"], **self.reader_kwargs)
        return dataset if cfg["samples"] is None else Spread(dataset, cfg["samples"])

    def _check_run_dir(self) -> None:
        """Refuse a run directory that holds another configuration (its shards would mix with ours); the driver
        checks again once it holds the directory's lock (:mod:`xcore.io.lock`)."""
        refuse_foreign(self.run_dir, self.run_key)

    def worker(self, device: str | None = None) -> Any:
        """Load the model once on ``device`` and return the shard processor."""
        from xcore.pipeline.explain_worker import ExplainWorker

        dev = resolve_device(device or self.config["device"])
        model, _meta = job_model(self.config, dev)
        return ExplainWorker(self, model, self.open_dataset(), dev)

    def reduce(self, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
        """Totals over every committed shard (this run's and earlier ones) -> ``run.json``; returns the summary."""
        from xcore.io.query import method_summary

        records = [r for r in self.layout.commit_records() if r.get("run_key") == self.run_key]
        shard_summaries = [r.get("summary", {}) for r in records]
        total = len(self.shards())
        summary = {
            "run_key": self.run_key, "run_dir": self.run_dir, "samples": self.n_samples,
            "shards": total, "shards_complete": len(records), "shards_computed": len(summaries),
            "shards_failed": sorted(failed),
            "ok_rows": sum(s.get("ok", 0) for s in shard_summaries),
            "error_rows": sum(s.get("failed", 0) for s in shard_summaries),
            "errors": sum(s.get("errors", 0) for s in shard_summaries),
            "methods": method_summary(self.run_dir, self.run_key) if records else [],
        }
        compute = sum(s.get("seconds", 0.0) for s in summaries)
        wall = time.time() - self.created
        samples_now = sum(s.get("samples", 0) for s in summaries)
        timings = {"wall_s": round(wall, 3), "shard_compute_s": round(compute, 3),
                   "samples_per_s": round(samples_now / wall, 3) if wall > 0 else None}
        write_json_atomic(self.layout.run_json, {
            "run_key": self.run_key, "run_id": self.run_id, "kind": self.kind, "config": self.config,
            "resolved": {"methods": self.methods, "metrics": self.metrics, "model": self.model_meta,
                         "model_digest": model_identity(self.config, self.model_meta)["weights"],
                         "preprocessing": self.preprocessing, "modality": self.dataset_kind.modality},
            "versions": package_versions(), "git_sha": git_sha(), "timings": timings, "summary": summary,
            "finished_at": time.time()})
        return {**summary, "timings": timings}

    def report(self, methods: list[str] | None = None) -> list[Block]:
        """The dataset kind's report over this run's tables (e.g. skeleton joint importance, the video report)."""
        if self.dataset_kind.report is None or not (Path(self.run_dir) / "explanations").is_dir():
            return []
        return self.dataset_kind.report(self.run_dir, self.config, methods)

    def describe(self, summary: dict[str, Any]) -> list[Block]:
        """Counts, failed shards and the per-method table (mean deletion / insertion AUC over ok rows)."""
        lines: list[Block] = [f"{k.replace('_', ' ')}: {summary[k]}" for k in
                              ("samples", "shards", "shards_complete", "shards_computed", "ok_rows", "error_rows")
                              if k in summary]
        if summary.get("shards_failed"):
            lines.append(f"failed shards: {summary['shards_failed']}")
        return [*lines, table(self.run_dir, summary.get("methods") or []),
                f"errors: {summary.get('errors', 0)} (query them with: xai query {self.run_dir} "
                '"SELECT * FROM errors")']
