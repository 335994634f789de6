"""The ``explain`` job: explanations + metrics for every sample of a dataset, one Parquet shard at a time.

Config (a plain dict, so it crosses process boundaries): ``dataset`` (root path), ``dataset_kind``
("imagenet", "ntu"; default: the checkpoint's ``dataset_kind``, else "imagenet"), ``split`` ("val"; for NTU a
bare part means the checkpoint's benchmark, e.g. "xview/val"), ``model`` (checkpoint path), ``methods``
{name: params}, ``metrics`` {name: params}, ``shard_size``, ``out``, ``run_id`` (default: the run key),
``batch_size`` (samples per explain batch), ``device`` (``None``: CUDA when available), ``seed``, ``target``
("pred": the class predicted on the clean input, the default; "label": the ground-truth class, as weak
localisation and the pointing game define it, metrics.md §3-4) and ``reader`` (reader options over the
checkpoint's, e.g. ``{"clips": "localisation"}`` for the UCF101-24 localisation clips).

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
from xcore.core.shards import Shard, plan_shards
from xcore.data import ImageTransform, open_dataset
from xcore.data.base import Dataset
from xcore.errors import UsageError
from xcore.io.runs import RunLayout, git_sha, package_versions, read_json, run_key, write_json_atomic
from xcore.models import load_checkpoint, weights_digest
from xcore.pipeline.base import JOBS

DEFAULTS: dict[str, Any] = {"dataset_kind": None, "split": "val", "methods": None, "metrics": None,
                            "shard_size": 256, "run_id": None, "batch_size": 16, "device": None, "seed": 0,
                            "target": "pred", "reader": None}
REQUIRED = ("dataset", "model", "out")


def explain_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` completed with defaults and plain types; ``UsageError`` for a missing or bad value."""
    unknown = sorted(set(config) - set(DEFAULTS) - set(REQUIRED))
    if unknown:
        raise UsageError(f"unknown explain config key(s) {unknown}")
    missing = [k for k in REQUIRED if not config.get(k)]
    if missing:
        raise UsageError(f"explain config needs {', '.join(missing)}")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    for key in ("dataset", "model", "out"):  # absolute: actors may run with another working directory
        cfg[key] = str(Path(cfg[key]).expanduser().absolute())
    cfg["methods"] = {str(k): dict(v or {}) for k, v in (cfg["methods"] or {}).items()}
    cfg["metrics"] = {str(k): dict(v or {}) for k, v in (cfg["metrics"] or {}).items()}
    if not cfg["methods"]:
        raise UsageError("name at least one explanation method")
    for key in ("shard_size", "batch_size"):
        if int(cfg[key]) < 1:
            raise UsageError(f"{key} must be >= 1")
        cfg[key] = int(cfg[key])
    cfg["seed"] = int(cfg["seed"])
    if cfg["target"] not in ("pred", "label"):
        raise UsageError(f"target must be 'pred' or 'label', not {cfg['target']!r}")
    cfg["reader"] = dict(cfg["reader"] or {})
    return cfg


def resolve_device(device: str | None) -> str:
    """``device`` or, when ``None``, ``"cuda"`` if a GPU is visible else ``"cpu"``."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def reader_kwargs(kind: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The reader's preprocessing from the checkpoint: the image transform, or the skeleton frame count."""
    if kind == "imagenet":
        return {"transform": transform_of(meta)}
    if kind == "ntu":
        return {"max_frames": int(meta.get("max_frames") or 300)}
    if kind in ("ucf101", "hmdb51", "kinetics400"):
        from xcore.data.video_transforms import video_preset

        preset = video_preset(meta.get("preset") or "kinetics")
        return {"transform": preset, "clip_len": int(meta.get("clip_len") or 16)}
    return {}


def transform_of(meta: dict[str, Any]) -> ImageTransform:
    """The preprocessing recorded in a checkpoint's metadata (ImageNet mean / std when unrecorded)."""
    size = meta.get("input_size") or 224
    size = int(size[-1] if isinstance(size, list | tuple) else size)
    kw = {k: meta[k] for k in ("mean", "std") if meta.get(k)}
    return ImageTransform(size, meta.get("resize"), **kw)


@JOBS.register("explain")
class ExplainJob:
    """Driver side of the explain job (see the module docstring); implements ``xcore.pipeline.base.Job``."""

    kind = "explain"

    def __init__(self, config: dict[str, Any]) -> None:
        self.created = time.time()
        self.config = cfg = explain_config(config)
        model_path = Path(cfg["model"])
        try:
            model, self.model_meta = load_checkpoint(model_path, "cpu")
        except UsageError:
            raise
        except Exception as err:  # a corrupt .pt, a missing architecture, ...
            raise UsageError(f"unreadable checkpoint {model_path}: {type(err).__name__}: {err}") from None
        self.methods = {m: xcore.explain.validate(m, model, p) for m, p in cfg["methods"].items()}
        self.metrics = {m: xcore.metrics.validate(m, p) for m, p in cfg["metrics"].items()}
        del model
        kind = cfg["dataset_kind"] = cfg["dataset_kind"] or self.model_meta.get("dataset_kind") or "imagenet"
        if kind == "ntu" and "/" not in cfg["split"] and cfg["split"] != "all":
            cfg["split"] = f"{self.model_meta.get('benchmark') or 'xsub'}/{cfg['split']}"
        self.reader_kwargs = {**reader_kwargs(kind, self.model_meta), **cfg["reader"]}
        self.n_samples = len(self.open_dataset())
        self.run_key = run_key({
            "dataset": {"root": str(Path(cfg["dataset"]).resolve()), "kind": cfg["dataset_kind"],
                        "split": cfg["split"], "n": self.n_samples},
            "model": {"arch": self.model_meta.get("arch"), "weights": weights_digest(model_path)},
            "methods": self.methods, "metrics": self.metrics, "preprocessing": self.preprocessing,
            "shard_size": cfg["shard_size"], "seed": cfg["seed"],
            **({"target": cfg["target"]} if cfg["target"] != "pred" else {})})
        self.run_id = cfg["run_id"] or self.run_key
        self.run_dir = str(Path(cfg["out"]) / self.run_id)
        self.layout = RunLayout(self.run_dir)
        self._check_run_dir()

    @property
    def preprocessing(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in sorted(self.reader_kwargs.items()))

    def open_dataset(self) -> Dataset:
        cfg = self.config
        return open_dataset(cfg["dataset_kind"], cfg["dataset"], cfg["split"], **self.reader_kwargs)

    def _check_run_dir(self) -> None:
        """Refuse a run directory that holds another configuration (its shards would mix with ours)."""
        info = read_json(self.layout.run_json)
        keys = {info.get("run_key")} if info else set()
        records = self.layout.commit_records()
        keys |= {r.get("run_key") for r in records[:1]}
        other = sorted(k for k in keys if k and k != self.run_key)
        if other:
            raise UsageError(f"{self.run_dir} holds run {other[0]}, not {self.run_key}; choose another --run-id")

    def shards(self) -> list[Shard]:
        return plan_shards(self.n_samples, self.config["shard_size"])

    def is_complete(self, shard: Shard) -> bool:
        return self.layout.is_complete(shard, self.run_key)

    def worker(self, device: str | None = None) -> Any:
        """Load the model once on ``device`` and return the shard processor."""
        from xcore.pipeline.explain_worker import ExplainWorker

        dev = resolve_device(device or self.config["device"])
        model, _meta = load_checkpoint(self.config["model"], dev)
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
            "methods": method_summary(self.run_dir) if records else [],
        }
        compute = sum(s.get("seconds", 0.0) for s in summaries)
        wall = time.time() - self.created
        samples_now = sum(s.get("samples", 0) for s in summaries)
        timings = {"wall_s": round(wall, 3), "shard_compute_s": round(compute, 3),
                   "samples_per_s": round(samples_now / wall, 3) if wall > 0 else None}
        write_json_atomic(self.layout.run_json, {
            "run_key": self.run_key, "run_id": self.run_id, "kind": self.kind, "config": self.config,
            "resolved": {"methods": self.methods, "metrics": self.metrics, "model": self.model_meta,
                         "preprocessing": self.preprocessing},
            "versions": package_versions(), "git_sha": git_sha(), "timings": timings, "summary": summary,
            "finished_at": time.time()})
        return {**summary, "timings": timings}
