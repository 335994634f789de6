"""The ``filter_scores`` job: per-sample filter scores of one layer, per-class distributions, surprise and β.

Hartley 2021 (*An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff
University, §6.2–6.4). Per sample of a split, every configured scorer (:mod:`xcore.filters.scorers`, eqs 6.1–6.6)
gives one score per filter of ``layer`` for the ground-truth class (and for the predicted class); the worker
(:mod:`xcore.pipeline.filters_worker`) writes them to ``filter_scores/scorer=<s>/shard-*.parquet`` together with
the filter-ranking ablation curve (§6.2.2) and — when a *reference* split was scored first — the surprising and
expected filters and β (eqs 6.7–6.8) against the reference's per-class distributions, and whether suppressing the
surprise fixes a misclassified sample (§6.4.1).

The reduce step computes ``analysis/filter_stats.parquet`` — per (scorer, class, filter): count, mean, P0.1,
P99.9, min, max and a fixed-bin histogram — with DuckDB over the committed shards, class chunk by class chunk
(:func:`xcore.filters.stats.filter_stats`), so neither the sharding nor the number of actors changes it and memory
does not grow with the dataset. :meth:`FiltersJob.requires` names the reference split's job (same scorers, layer
and tap; no ablation, no suppression), so one flow scores the train split, then the evaluated split against it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from xcore.analysis.blocks import Block
from xcore.core.layers import default_layer, get_layer
from xcore.datasets import DATASETS, DatasetKind
from xcore.errors import UsageError
from xcore.io.lock import refuse_foreign
from xcore.io.runs import RunLayout, git_sha, package_versions, run_key, write_json_atomic
from xcore.pipeline.base import JOBS, SampleShardedJob, job_model, model_identity
from xcore.pipeline.config import MODEL_KEYS, FiltersConfig, parse_config
from xcore.pipeline.explain_job import resolve_device

TABLE = "filter_scores"


def validate_scorers(scorers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each scorer's full parameters (its defaults updated with the given ones); unknown names or parameters raise
    one-line usage errors. ``random`` gets its per-sample seeds from the worker, never from the config."""
    from xcore.filters.scorers import SCORERS
    from xcore.registry import keyword_defaults, merge_params

    out = {}
    for name, params in scorers.items():
        defaults = {k: v for k, v in keyword_defaults(SCORERS.get(name).fn).items() if k != "seeds"}
        out[name] = merge_params("filter scorer", name, defaults, {k: v for k, v in params.items() if k != "seeds"})
    return out


@JOBS.register(TABLE)
class FiltersJob(SampleShardedJob):
    """Driver side of the filter_scores job (module docstring); implements ``xcore.pipeline.base.Job``."""

    kind = TABLE

    def __init__(self, config: dict[str, Any] | FiltersConfig) -> None:
        self.created = time.time()
        self.config = cfg = parse_config(FiltersConfig, config).model_dump()
        model, self.model_meta = job_model(cfg, "cpu")
        cfg["layer"] = cfg["layer"] or default_layer(model)
        get_layer(model, cfg["layer"])  # an unknown layer fails here, in the driver
        del model
        self.scorers = validate_scorers(cfg["methods"])
        cfg["dataset_kind"] = cfg["dataset_kind"] or self.model_meta.get("dataset_kind") or "imagenet"
        self.dataset_kind: DatasetKind = DATASETS.get(cfg["dataset_kind"])
        if self.dataset_kind.modality != "image":
            raise UsageError(f"filter_scores needs an image dataset kind; {cfg['dataset_kind']!r} is "
                             f"{self.dataset_kind.modality}")
        self.reader_kwargs = {**self.dataset_kind.options(self.model_meta), **cfg["reader"]}
        self.n_samples = len(self.open_dataset())
        self.reference = self._reference_job()
        self.run_key = run_key({
            "job": TABLE, "dataset": {"root": str(Path(cfg["dataset"]).resolve()), "kind": cfg["dataset_kind"],
                                      "split": cfg["split"], "n": self.n_samples,
                                      "preprocessing": sorted(map(str, self.reader_kwargs.items()))},
            "model": model_identity(cfg, self.model_meta),
            "scorers": self.scorers, "reference": self.reference.run_key if self.reference else None,
            **{k: cfg[k] for k in ("layer", "tap", "softmax", "bins", "ranking_step", "shard_size", "seed",
                                   "pred_scores")},
            "suppression": bool(cfg["suppression"] and self.reference)})
        self.run_id = cfg["run_id"] or self.run_key
        self.run_dir = str(Path(cfg["out"]) / self.run_id)
        self.layout = RunLayout(self.run_dir)
        refuse_foreign(self.run_dir, self.run_key)

    def _reference_job(self) -> FiltersJob | None:
        """The job scoring the reference split (its distributions flag surprise), or None without one."""
        cfg = self.config
        ref_root = cfg["reference_dataset"] or cfg["dataset"]
        if not cfg["reference_split"] or (cfg["reference_split"] == cfg["split"]
                                          and Path(ref_root).resolve() == Path(cfg["dataset"]).resolve()):
            return None
        keep = ("model", *MODEL_KEYS, "out", "dataset_kind", "shard_size", "batch_size", "device", "seed", "reader",
                "methods", "layer", "tap", "softmax", "bins")
        return FiltersJob({**{k: cfg[k] for k in keep}, "dataset": ref_root, "split": cfg["reference_split"],
                           "reference_split": None, "ranking_step": 0, "suppression": False, "top_images": 0})

    def open_dataset(self) -> Any:
        return self.dataset_kind.open(self.config["dataset"], self.config["split"], **self.reader_kwargs)

    @property
    def stats_path(self) -> Path:
        return Path(self.run_dir) / "analysis" / "filter_stats.parquet"

    # --- the Job protocol ------------------------------------------------------------------------------

    def requires(self) -> list[tuple[str, dict[str, Any]]]:
        """The reference split's scores (their per-class distributions), scored first when there is one."""
        return [(TABLE, self.reference.config)] if self.reference else []

    def worker(self, device: str | None = None) -> Any:
        from xcore.pipeline.filters_worker import FiltersWorker

        dev = resolve_device(device or self.config["device"])
        model, _meta = job_model(self.config, dev)
        return FiltersWorker(self, model, dev)

    def reduce(self, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
        """``analysis/filter_stats.parquet`` over every committed shard, the reference-free report numbers, and
        ``run.json``; returns the summary."""
        from xcore.analysis.filters import analyse

        records = [r for r in self.layout.commit_records() if r.get("run_key") == self.run_key]
        report = analyse(self) if records else {}
        wall = time.time() - self.created
        done = sum(s.get("samples", 0) for s in summaries)
        summary = {"run_key": self.run_key, "run_dir": self.run_dir, "samples": self.n_samples,
                   "shards": len(self.shards()), "shards_complete": len(records), "shards_computed": len(summaries),
                   "shards_failed": sorted(failed),
                   "ok_rows": sum(r.get("summary", {}).get("ok", 0) for r in records),
                   "errors": sum(r.get("summary", {}).get("errors", 0) for r in records),
                   "samples_per_s": round(done / wall, 3) if done and wall > 0 else None, **report}
        write_json_atomic(self.layout.run_json, {
            "run_key": self.run_key, "run_id": self.run_id, "kind": self.kind, "config": self.config,
            "resolved": {"scorers": self.scorers, "model": self.model_meta,
                         "model_digest": model_identity(self.config, self.model_meta)["weights"], "modality": "image",
                         "reference_run": self.reference.run_dir if self.reference else None,
                         "preprocessing": sorted(map(str, self.reader_kwargs.items()))},
            "versions": package_versions(), "git_sha": git_sha(),
            "timings": {"wall_s": round(wall, 3),
                        "shard_compute_s": round(sum(s.get("seconds", 0.0) for s in summaries), 3)},
            "summary": summary, "finished_at": time.time()})
        return summary

    def report(self, methods: list[str] | None = None) -> list[Block]:
        """Figures under ``analysis/`` (ranking curves, surprise with its top-activating reference images) and the
        Table 6.1-style, β and suppression tables, as blocks."""
        from xcore.analysis.filters_figures import write_report

        if not self.layout.committed_files(self.run_key).get(TABLE):
            return []
        return write_report(self, methods)

    def describe(self, summary: dict[str, Any]) -> list[Block]:
        """Counts, rate and failed shards (the tables are the report's; ``xai summary`` prints them from run.json)."""
        lines: list[Block] = [f"{k.replace('_', ' ')}: {summary[k]}" for k in
                              ("samples", "shards", "shards_complete", "shards_computed", "ok_rows", "errors",
                               "samples_per_s") if summary.get(k) is not None]
        if summary.get("shards_failed"):
            lines.append(f"failed shards: {summary['shards_failed']}")
        return lines
