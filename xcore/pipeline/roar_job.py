"""The ``roar`` job: ROAR / KAR retraining units and ROAD's retrain-free check, one unit per shard.

Hooker et al. 2019 (*A Benchmark for Interpretability Methods in Deep Neural Networks*) and Hartley 2021 (*An
Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, §2.4.2.3,
§3.5.2, §3.7.2.2, Table 3.8): remove (ROAR) or keep (KAR) the top-t fraction of every train and test image by an
explanation, train a fresh model of the checkpoint's architecture on the degraded train split, and measure its
accuracy on the degraded test split; repeated, the mean accuracy against t is the method's curve and its area the
AUC (ROAR: lower is better; KAR: higher). Rong et al. 2022 (*A Consistent and Efficient Evaluation Strategy for
Attribution Methods*, ROAD) add noisy linear imputation and the retrain-free variant (``retrain=False``: the
original model on the degraded test split, MoRF = ``roar`` and LeRF = ``lerf`` orders).

The job *requires* one explain run per split (:meth:`RoarJob.requires`, run first by the flow and reused when
complete: same key, same directory ``<out>/<explain key>``). Each unit — (method, mode, t, repeat) — is one shard
``Shard(u, u, u + 1)`` of the ROAR run: its worker degrades the data on the fly
(:mod:`xcore.pipeline.roar_data`), trains (:mod:`xcore.models.train_loop`), evaluates and commits one ``roar``
row (:mod:`xcore.pipeline.roar_worker`). Pseudo-methods: ``oracle`` (the ground-truth mask, where the dataset has
masks) and, in the reference-code mode (``ranking="value"``), ``random`` = i.i.d. selection with probability t.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xcore.analysis.blocks import Block
from xcore.core.shards import Shard
from xcore.datasets import DATASETS, DatasetKind
from xcore.errors import UsageError
from xcore.io.lock import refuse_foreign
from xcore.io.runs import RunLayout, git_sha, package_versions, run_key, write_json_atomic
from xcore.models.train_loop import Recipe
from xcore.pipeline.base import JOBS, BaseJob, job_model_meta, model_identity
from xcore.pipeline.config import MODEL_KEYS, RoarConfig, parse_config
from xcore.pipeline.explain_job import ExplainJob, resolve_device
from xcore.pipeline.roar_data import Degradation, unit_seed

ORACLE = "oracle"


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``method`` degraded in ``mode`` at ``fraction``, repetition ``repeat``."""

    unit: int
    method: str
    mode: str
    fraction: float
    repeat: int


@JOBS.register("roar")
class RoarJob(BaseJob):
    """Driver side of the roar job (module docstring); implements ``xcore.pipeline.base.Job``."""

    kind = "roar"

    def __init__(self, config: dict[str, Any] | RoarConfig) -> None:
        self.created = time.time()
        self.config = cfg = parse_config(RoarConfig, config).model_dump()
        self.model_meta = job_model_meta(cfg)
        cfg["dataset_kind"] = cfg["dataset_kind"] or self.model_meta.get("dataset_kind") or "imagenet"
        self.dataset_kind: DatasetKind = DATASETS.get(cfg["dataset_kind"])
        if self.dataset_kind.modality != "image":
            raise UsageError(f"roar needs an image dataset kind; {cfg['dataset_kind']!r} is "
                             f"{self.dataset_kind.modality}")
        cfg["modes"] = cfg["modes"] or (["roar", "kar"] if cfg["retrain"] else ["roar", "lerf"])
        cfg["repeats"] = cfg["repeats"] or (5 if cfg["retrain"] else 1)
        cfg["imputation"] = cfg["imputation"] or ("mean" if cfg["retrain"] else "noisy_linear")
        self.iid = cfg["ranking"] == "value"  # the reference code's random baseline: i.i.d. selection
        explained = {m: p for m, p in cfg["methods"].items() if m != ORACLE and not (self.iid and m == "random")}
        self.splits = [cfg["train_split"], cfg["test_split"]] if cfg["retrain"] else [cfg["test_split"]]
        self.explain: dict[str, ExplainJob] = {
            split: ExplainJob({**{k: cfg[k] for k in ("dataset", "model", *MODEL_KEYS, "out", "dataset_kind",
                                                     "shard_size", "batch_size", "device", "seed", "reader")},
                               "split": split, "methods": explained, "metrics": {}})
            for split in (self.splits if explained else [])}
        self.reader_kwargs = {**self.dataset_kind.options(self.model_meta), **cfg["reader"]}
        if ORACLE in cfg["methods"]:
            self._check_masks()
        self.recipe = self._recipe()
        self.units = [Unit(i, m, mode, t, r) for i, (m, mode, t, r) in enumerate(
            (m, mode, t, r) for m in cfg["methods"] for mode in cfg["modes"] for t in cfg["fractions"]
            for r in range(cfg["repeats"]))]
        self.run_key = run_key({
            "job": "roar", "explain": {s: j.run_key for s, j in self.explain.items()},
            "dataset": {"root": str(Path(cfg["dataset"]).resolve()), "kind": cfg["dataset_kind"],
                        "splits": self.splits, "preprocessing": sorted(map(str, self.reader_kwargs.items()))},
            "model": model_identity(cfg, self.model_meta),
            "methods": {m: (self.explain_params(m) if m in explained else p) for m, p in cfg["methods"].items()},
            **{k: cfg[k] for k in ("fractions", "modes", "repeats", "retrain", "ranking", "imputation", "seed")},
            "noise": cfg["noise"] if cfg["imputation"] == "noisy_linear" else None,
            "recipe": self.recipe.__dict__ if cfg["retrain"] else None, "shift": self.shift})
        self.run_id = cfg["run_id"] or self.run_key
        self.run_dir = str(Path(cfg["out"]) / self.run_id)
        self.layout = RunLayout(self.run_dir)
        refuse_foreign(self.run_dir, self.run_key)

    # --- configuration ---------------------------------------------------------------------------------

    def explain_params(self, method: str) -> dict[str, Any]:
        job = next(iter(self.explain.values()))
        return job.methods[method]

    def _recipe(self) -> Recipe:
        cfg, train = self.config, dict(self.model_meta.get("train") or {})
        given = {"epochs": cfg["epochs"], "batch_size": cfg["train_batch_size"], "lr": cfg["lr"],
                 "weight_decay": cfg["weight_decay"]}
        missing = [k for k, v in given.items() if v is None and train.get(k) is None]
        if cfg["retrain"] and missing:
            raise UsageError(f"the checkpoint records no training recipe for {', '.join(missing)}; pass "
                             + ", ".join(f"--{k.replace('_', '-')}" for k in missing))
        values = {k: (v if v is not None else train.get(k, 1)) for k, v in given.items()}
        return Recipe(epochs=int(values["epochs"]), batch_size=int(values["batch_size"]), lr=float(values["lr"]),
                      weight_decay=float(values["weight_decay"]), optimizer=cfg["optimizer"],
                      loader_workers=cfg["loader_workers"])

    @property
    def shift(self) -> int:
        """Training augmentation shift in pixels: the clean recipe's 8 px at 112 px, scaled to the input size."""
        size = self.model_meta.get("input_size") or 112
        size = int(size[-1] if isinstance(size, list | tuple) else size)
        return max(1, round(8 * size / 112))

    def open_dataset(self, split: str) -> Any:
        return self.dataset_kind.open(self.config["dataset"], split, **self.reader_kwargs)

    def _check_masks(self) -> None:
        for split in self.splits:
            sample = self.open_dataset(split).load(0)
            if sample.meta.get("mask") is None:
                raise UsageError(f"the oracle needs ground-truth masks; the {split} split of "
                                 f"{self.config['dataset']} has none (sample {sample.sample_id})")

    def degradation(self, unit: Unit) -> Degradation:
        cfg = self.config
        std = [float(s) for s in self.model_meta.get("std") or (1.0, 1.0, 1.0)]
        return Degradation(unit.fraction, unit.mode, cfg["ranking"], cfg["imputation"],
                           tuple(cfg["noise"] / s for s in std), iid=self.iid and unit.method == "random")

    def seed_of(self, unit: Unit) -> int:
        """The unit's seed: the run seed and (method, mode, t, repeat) — rerunning a unit repeats it exactly."""
        return unit_seed(self.config["seed"], unit.method, unit.mode, unit.fraction, unit.repeat)

    # --- the Job protocol ------------------------------------------------------------------------------

    def requires(self) -> list[tuple[str, dict[str, Any]]]:
        """The explain runs (one per split) whose maps the units read; the flow runs them first."""
        return [("explain", job.config) for job in self.explain.values()]

    def shards(self) -> list[Shard]:
        return [Shard(u.unit, u.unit, u.unit + 1) for u in self.units]

    def worker(self, device: str | None = None) -> Any:
        from xcore.pipeline.roar_worker import RoarWorker

        return RoarWorker(self, resolve_device(device or self.config["device"]))

    def reduce(self, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
        """Curves and AUCs over every committed unit -> ``run.json``; returns the summary."""
        from xcore.analysis.roar import analyse

        records = [r for r in self.layout.commit_records() if r.get("run_key") == self.run_key]
        report = analyse(self.run_dir, self.run_key, self.config["auc"]) if records else {}
        wall = time.time() - self.created
        computed = sum(s.get("seconds", 0.0) for s in summaries)
        summary = {"run_key": self.run_key, "run_dir": self.run_dir, "units": len(self.units),
                   "units_complete": len(records), "units_computed": len(summaries), "units_failed": sorted(failed),
                   "errors": sum(r.get("summary", {}).get("errors", 0) for r in records),
                   "units_per_hour": round(len(summaries) * 3600 / wall, 2) if summaries and wall > 0 else None,
                   "curves": report.get("curves", []), "auc": report.get("auc", []),
                   "notes": report.get("notes", [])}
        write_json_atomic(self.layout.run_json, {
            "run_key": self.run_key, "run_id": self.run_id, "kind": self.kind, "config": self.config,
            "resolved": {"recipe": self.recipe.__dict__, "shift": self.shift, "model": self.model_meta,
                         "model_digest": model_identity(self.config, self.model_meta)["weights"],
                         "explain_runs": {s: j.run_dir for s, j in self.explain.items()},
                         "preprocessing": sorted(map(str, self.reader_kwargs.items())), "modality": "image"},
            "versions": package_versions(), "git_sha": git_sha(),
            "timings": {"wall_s": round(wall, 3), "unit_compute_s": round(computed, 3)},
            "summary": summary, "finished_at": time.time()})
        return summary

    def report(self, methods: list[str] | None = None) -> list[Block]:
        """``analysis/roar.json``, ``roar_curves.parquet`` and ``roar.png`` from the committed units; the method × t
        tables with the AUC per mode (only ``methods`` when given) and the notes, as blocks."""
        from xcore.analysis.roar import blocks, write_report

        if not self.layout.committed_files(self.run_key).get("roar"):
            return []
        rep = write_report(self.run_dir, self.run_key, self.config["auc"])
        keep = set(methods or self.config["methods"])
        return blocks([c for c in rep["curves"] if c["method"] in keep],
                      [a for a in rep["auc"] if a["method"] in keep], rep["notes"])

    def describe(self, summary: dict[str, Any]) -> list[Block]:
        """Unit counts and rate, failed units and the error count (the tables are the report's)."""
        lines: list[Block] = [f"{k.replace('_', ' ')}: {summary[k]}" for k in
                              ("units", "units_complete", "units_computed", "units_per_hour", "errors")
                              if summary.get(k) is not None]
        if summary.get("units_failed"):
            lines.append(f"failed units: {summary['units_failed']}")
        return lines
