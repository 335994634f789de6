"""The roar worker: one unit -> one ``roar`` row (and its ``errors`` rows), written atomically, then committed.

Per unit (:class:`~xcore.pipeline.roar_job.Unit`): the degraded test split (and, when retraining, the degraded
train split) stream from :class:`~xcore.pipeline.roar_data.DegradedDataset`; a fresh model of the checkpoint's
architecture is seeded by the unit's seed and trained by :func:`xcore.models.train_loop.fit_dataset` inside
:func:`xcore.models.train.reproducible` (the actor's thread count, deterministic algorithms), so a rerun of a unit on
the same device and thread count gives the same accuracy; without retraining the original model is evaluated. A
sample that cannot be degraded is left out of the loss and the accuracy and becomes an ``errors`` row (stage
``roar_test`` / ``roar_train``); a training whose loss is not finite makes the unit's row ``status = "error"``.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

import pyarrow as pa
import torch

from xcore.core.shards import Shard
from xcore.models.checkpoint import build_from_meta
from xcore.models.train import reproducible
from xcore.models.train_loop import evaluate_dataset, fit_dataset
from xcore.pipeline.base import job_model
from xcore.pipeline.roar_data import DegradedDataset, MapStore
from xcore.pipeline.tables import ERRORS

ROAR = pa.schema([
    pa.field("unit", pa.int64()), pa.field("method", pa.string()), pa.field("mode", pa.string()),
    pa.field("fraction", pa.float64()), pa.field("repeat", pa.int64()), pa.field("retrain", pa.bool_()),
    pa.field("ranking", pa.string()), pa.field("imputation", pa.string()), pa.field("seed", pa.int64()),
    pa.field("accuracy", pa.float64()), pa.field("correct", pa.int64()), pa.field("n_test", pa.int64()),
    pa.field("n_train", pa.int64()), pa.field("train_loss", pa.float64()), pa.field("skipped", pa.int64()),
    pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("seconds", pa.float64()),
    pa.field("device", pa.string()), pa.field("threads", pa.int64()), pa.field("run_key", pa.string())])


class RoarWorker:
    """Holds the readers (and, without retraining, the original model) on one device; implements
    ``xcore.pipeline.base.Worker``."""

    def __init__(self, job: Any, device: str) -> None:
        self.job = job
        self.device = device
        self.readers = {split: job.open_dataset(split) for split in job.splits}
        self._maps: dict[tuple[str, str], MapStore] = {}
        self.clean = None if job.config["retrain"] else job_model(job.config, device)[0]
        self.eval_batch = max(1, int(job.config["batch_size"]))

    @property
    def batch_size(self) -> int:
        return self.eval_batch

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.eval_batch = max(1, int(value))

    def maps(self, split: str, method: str) -> MapStore | str | None:
        """Where the unit's maps come from: the explain run of ``split``, the oracle, or none (i.i.d.)."""
        if method == "oracle":
            return "oracle"
        if self.job.iid and method == "random":
            return None
        if (split, method) not in self._maps:
            run = self.job.explain[split]
            self._maps[split, method] = MapStore(run.run_dir, run.run_key, method)
        return self._maps[split, method]

    def process(self, shard: Shard) -> dict[str, Any]:
        t0 = time.perf_counter()
        unit = self.job.units[shard.shard_id]
        cfg = self.job.config
        seed = self.job.seed_of(unit)
        deg = self.job.degradation(unit)
        test_split = cfg["test_split"]
        test = DegradedDataset(self.readers[test_split], self.maps(test_split, unit.method), deg, seed=seed)
        row: dict[str, Any] = {"unit": unit.unit, "method": unit.method, "mode": unit.mode,
                               "fraction": unit.fraction, "repeat": unit.repeat, "retrain": cfg["retrain"],
                               "ranking": cfg["ranking"], "imputation": cfg["imputation"], "seed": seed,
                               "device": self.device, "threads": torch.get_num_threads(), "status": "ok"}
        train = None
        model = self.clean
        if cfg["retrain"]:
            split = cfg["train_split"]
            train = DegradedDataset(self.readers[split], self.maps(split, unit.method), deg, seed=seed,
                                    shift=self.job.shift)
            meta = self.job.model_meta
            with reproducible(seed, torch.get_num_threads()):
                model = build_from_meta(meta)  # the zoo's architecture or the user's model factory
                model = model.to(self.device)
                try:
                    info = fit_dataset(model, train, self.job.recipe, seed=seed, device=self.device)
                    row["train_loss"] = info.get("loss")
                    row["n_train"] = info.get("samples")
                except FloatingPointError as err:
                    row.update(status="error", error=f"training: {err}")
        if row["status"] == "ok":
            assert model is not None
            correct, count = evaluate_dataset(model, test, batch_size=self.eval_batch, device=self.device)
            row.update(correct=correct, n_test=count, accuracy=correct / count if count else None)
            if not count:
                row.update(status="error", error="no test sample could be degraded")
        errors = self._errors(unit, test, "roar_test") + (self._errors(unit, train, "roar_train") if train else [])
        row["skipped"] = len({e["index"] for e in errors if e["stage"] == "roar_test"})
        row["seconds"] = round(time.perf_counter() - t0, 3)
        key = self.job.run_key
        layout = self.job.layout
        tables = {layout.table_path("roar", shard): pa.Table.from_pylist([{**row, "run_key": key}], schema=ROAR),
                  layout.table_path("errors", shard): pa.Table.from_pylist([{**e, "run_key": key} for e in errors],
                                                                         schema=ERRORS)}
        summary = {"shard_id": shard.shard_id, "unit": unit.unit, "samples": 1, "method": unit.method,
                   "mode": unit.mode, "fraction": unit.fraction, "repeat": unit.repeat,
                   "accuracy": row.get("accuracy"), "status": row["status"], "errors": len(errors),
                   "seconds": row["seconds"]}
        layout.write_shard(shard, key, tables, summary)
        return summary

    @staticmethod
    def _errors(unit: Any, data: DegradedDataset | None, stage: str) -> list[dict[str, Any]]:
        """One row per distinct sample that failed in this process (with DataLoader workers, the test split's)."""
        seen: dict[int, dict[str, Any]] = {}
        for index, sample_id, err in data.failures if data is not None else []:
            if index not in seen:
                msg = str(err) or type(err).__name__
                if not isinstance(err, FloatingPointError | KeyError | ValueError):
                    msg += " | " + "".join(traceback.format_exception_only(err)).strip()
                seen[index] = {"sample_id": sample_id, "index": index, "stage": stage, "method": unit.method,
                               "error_type": type(err).__name__, "message": f"unit {unit.unit}: {msg}"[:2000]}
        return list(seen.values())
