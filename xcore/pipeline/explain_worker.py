"""The explain worker: one shard -> explanations, metrics and errors tables, written atomically, then committed.

Per shard: load the samples (a failure is one ``errors`` row, stage ``load``), predict the clean batch (the
target is the predicted class, or the label with config ``target="label"``; a NaN / inf model output is one
``predict`` error row and nothing more is computed for that sample), then per method explain the
batch, check the maps are finite, and compute every metric from the full-precision primary map (a multi-part
method, e.g. ``discriminative``, stores one explanations row per part and its per-sample extras in its metrics
rows). A metric that ``needs`` an annotation (``boxes``) gets it from the samples' ``meta`` and is computed on
the samples that have one. Batch failures fall back to one sample at a time; OOM halves the batch
(:mod:`xcore.core.batching`). Every sample gets one ``metrics`` row per method, ``status`` ok/error.

Samples are decoded ahead of the compute on a few threads (:func:`xcore.core.prefetch.prefetch`, ``loaders``
threads, at most two batches ahead), in sample order, so that decoding batch k + 1 overlaps the model on batch
k; batches are formed from the loaded samples exactly as if all were loaded first (the results do not depend on
the loading), and the shard summary records ``input_wait_s``, the seconds spent waiting for samples that were
not decoded yet.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import xcore.core.timing as timing
import xcore.explain
import xcore.metrics
from xcore.core.batching import BatchSize, SampleOOMError, is_oom, robust_map
from xcore.core.maps import map_grid, resize_to
from xcore.core.prefetch import prefetch
from xcore.core.shards import Shard
from xcore.core.targets import random_target, stable_seed
from xcore.data.base import Dataset
from xcore.explain.base import METHODS
from xcore.io.parquet import encode_heatmap
from xcore.pipeline.base import BatchedWorker
from xcore.pipeline.tables import build_tables

MAX_MESSAGE = 2000


@dataclass
class Item:
    """One sample of the shard as it moves through the stages."""

    index: int
    sample_id: str
    label: int
    x: Tensor | None = None
    pred: int | None = None
    score: float | None = None
    failed: bool = False
    meta: str = "{}"
    ann: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """One sample × method: its full-precision maps by part (None if any is not finite), per-sample metric
    values and the method's extras."""

    map: dict[str, Tensor] | None
    native_shape: dict[str, list[int]]
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[tuple[str, BaseException]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """JSON for a meta value's numpy / torch leaves (e.g. int64 box corners): their Python value, else text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


class ExplainWorker(BatchedWorker):
    """Holds the model on one device; ``process(shard)`` implements ``xcore.pipeline.base.Worker``."""

    def __init__(self, job: Any, model: nn.Module, dataset: Dataset, device: str) -> None:
        self.job = job
        self.model = model
        self.dataset = dataset
        self.device = device
        self.batch = BatchSize(job.config["batch_size"])
        # decoding threads (0: load each sample inline when it is needed); the actor sets torch's threads first
        self.loaders = max(1, torch.get_num_threads())
        # sample annotations the configured metrics declare they need (e.g. boxes, mask), passed per sample
        self.annotations = {n for m in job.metrics for n in xcore.metrics.METRICS.get(m).needs}
        self.num_classes = 0  # the model's number of outputs, known after the first prediction
        self.warm: set[str] = set()  # methods whose untimed warm-up explanation has run on this worker

    def process(self, shard: Shard) -> dict[str, Any]:
        t0 = time.perf_counter()
        torch.manual_seed(self.job.config["seed"] + shard.shard_id)
        self.errors: list[dict[str, Any]] = []
        self.results: dict[str, list[tuple[Item, Outcome | None]]] = {m: [] for m in self.job.methods}
        items, waited = self._load_and_run(shard)
        # load errors first, in sample order, then the compute errors in batch order (as if loaded up front)
        self.errors = ([e for e in self.errors if e["stage"] == "load"]
                       + [e for e in self.errors if e["stage"] != "load"])
        for it in items:
            if it.failed:
                for m in self.job.methods:
                    self.results[m].append((it, None))
        tables, counts = build_tables(self.job.layout, shard, self.job.run_key, self._rows(), self.errors,
                                      self.job.methods, self.job.metrics)
        summary = {"shard_id": shard.shard_id, "samples": shard.size, **counts,
                   "errors": len(self.errors), "seconds": round(time.perf_counter() - t0, 3),
                   "input_wait_s": round(waited, 3),
                   "error_examples": [f"{e['sample_id']}: {e['stage']}: {e['message'][:200]}"
                                      for e in self.errors[:3]]}
        self.job.layout.write_shard(shard, self.job.run_key, tables, summary)
        return summary

    # --- stages ---------------------------------------------------------------------------------------

    def _load_and_run(self, shard: Shard) -> tuple[list[Item], float]:
        """Every sample of ``shard`` (in order) and the seconds spent waiting for them; each batch of
        ``self.batch.value`` loaded samples is computed as soon as it is complete, while the next ones load."""
        items: list[Item] = []
        chunk: list[Item] = []
        waited = 0.0
        loads = prefetch(self._load, range(shard.start, shard.stop), self.loaders, 2 * self.batch.value)
        try:
            for _index, res, wait_s in loads:
                waited += wait_s
                if isinstance(res, Exception):  # the dataset could not even name the sample: not a sample error
                    raise res
                it, err = res
                items.append(it)
                if err is not None:
                    self._fail(it, "load", None, err)
                    continue
                if chunk and chunk[0].x.shape != it.x.shape:  # a batch holds one input shape (COCO keeps aspect)
                    self._run_chunk(chunk)
                    chunk = []
                chunk.append(it)
                if len(chunk) >= self.batch.value:  # the size after the previous batch (OOM may halve it)
                    self._run_chunk(chunk)
                    chunk = []
            if chunk:
                self._run_chunk(chunk)
        finally:
            loads.close()  # joins the loading threads, also when a batch raised
        return items, waited

    def _load(self, index: int) -> tuple[Item, Exception | None]:
        """One sample (on a loading thread: touches no shared state) and the exception its load raised."""
        it = Item(index, str(self.dataset.sample_id(index)), int(self.dataset.label(index)))
        try:
            sample = self.dataset.load(index)
            it.x = sample.x
            it.ann = {k: v for k, v in sample.meta.items() if k in self.annotations}
            it.meta = json.dumps({k: v for k, v in sample.meta.items()
                                  if isinstance(v, int | float | str | bool | list)}, sort_keys=True,
                                 default=_plain)
        except Exception as err:
            return it, err
        return it, None

    def _run_chunk(self, chunk: list[Item]) -> None:
        """Predict, explain and measure one batch; its inputs are dropped after (only the rows need the items)."""
        preds = robust_map(self._predict, chunk, self.batch)
        for it, res in zip(chunk, preds, strict=True):
            if isinstance(res, BaseException):
                self._fail(it, "predict", None, res)
            else:
                it.pred, it.score = res
        live = [it for it in chunk if not it.failed]
        for method in self.job.methods:
            outs = robust_map(lambda sub, m=method: self._explain(m, sub), live, self.batch)
            for it, out in zip(live, outs, strict=True):
                if isinstance(out, BaseException):
                    self._error(it, "explain", method, out)
                    out = None
                else:
                    for stage, err in out.errors:
                        self._error(it, stage, method, err)
                self.results[method].append((it, out))
        for it in chunk:
            it.x = None  # memory: at most the batches in flight and the prefetched ones, not the whole shard

    @torch.no_grad()
    def _predict(self, items: list[Item]) -> list[tuple[int, float] | FloatingPointError]:
        """(pred, score) per sample; a sample whose model output is NaN / inf fails here, naming that output."""
        x = torch.stack([it.x for it in items]).to(self.device)
        out = self.model(x).float()
        self.num_classes = out.shape[1]
        score, pred = out.softmax(dim=1).max(dim=1)
        bad = [" and ".join(f"{int(n)} {k}" for k, n in (("NaN", r.isnan().sum()), ("inf", r.isinf().sum())) if n)
               for r in out.flatten(1)]
        return [FloatingPointError(f"model output is not finite ({b} among its {out[0].numel()} logits)") if b
                else (int(p), float(s)) for p, s, b in zip(pred.tolist(), score.tolist(), bad, strict=True)]

    def _maps(self, method: str, x: Tensor, targets: Tensor, items: list[Item]) -> tuple[Any, dict[str, Tensor]]:
        """The method's native output and its parts at full resolution (what ``explain_ms`` times)."""
        params = dict(self.job.methods[method])
        if "seeds" in params and params["seeds"] is None:
            params["seeds"] = [stable_seed(params.get("seed", self.job.config["seed"]), it.index) for it in items]
        native = xcore.explain.run(method, self.model, x, targets, resize=False, parts=True, **params)
        mode = METHODS.get(method).resize_mode
        return native, {k: resize_to(v, map_grid(x, v), mode).float() for k, v in native.maps.items()}

    def _explain(self, method: str, items: list[Item]) -> list[Outcome]:
        x = torch.stack([it.x for it in items]).to(self.device)
        targets = torch.tensor([self._target(it) for it in items], dtype=torch.long)
        if method not in self.warm:  # untimed warm-up: first-call allocations, kernel selection, lazy imports
            self._maps(method, x[:1], targets[:1], items[:1])
            self.warm.add(method)
        timing.synchronize(self.device)
        t0 = timing.clock()
        native, parts = self._maps(method, x, targets, items)
        explain_ms = timing.elapsed_ms(t0, self.device, len(items))
        maps = parts[native.primary]
        finite = torch.stack([torch.isfinite(p.flatten(1)).all(dim=1) for p in parts.values()]).all(dim=0).tolist()
        shapes = {k: list(v.shape[1:]) for k, v in native.maps.items()}
        outs = [Outcome({k: p[i].cpu() for k, p in parts.items()} if ok else None, shapes,
                        errors=[] if ok else [("explain", FloatingPointError("map contains NaN or inf"))],
                        timing={"explain_ms": explain_ms, "explain_batch": len(items)})
                for i, ok in enumerate(finite)]
        for key, val in native.extras.items():
            for o, v in zip(outs, val.detach().float().cpu(), strict=True):
                o.values[key] = v.reshape(-1).tolist()
        keep = [i for i, ok in enumerate(finite) if ok]
        scored = targets if self.job.config["target"] != "random" else torch.tensor([it.pred for it in items])
        for name in self.job.metrics:
            metric = xcore.metrics.METRICS.get(name)
            idx = [i for i in keep if all(items[i].ann.get(n) is not None for n in metric.needs)]
            if idx:
                extra = {n: [items[i].ann[n] for i in idx] for n in metric.needs}
                params = {**self.job.metric_params(method, name), **extra}
                self._metric(name, params, x[idx], maps[idx], scored[idx], [outs[i] for i in idx],
                             single=len(items) == 1)
        return outs

    def _metric(self, name: str, params: dict[str, Any], x: Tensor, maps: Tensor, targets: Tensor,
                outs: list[Outcome], *, single: bool) -> None:
        metric = xcore.metrics.METRICS.get(name)
        timing.synchronize(self.device)
        t0 = timing.clock()
        try:
            res = metric.fn(self.model, x, maps, targets, **params)
            metric_ms = timing.elapsed_ms(t0, self.device, len(outs))
        except Exception as err:
            if not single or isinstance(err, SampleOOMError) or is_oom(err):
                raise  # let robust_map attribute it sample by sample (or halve the batch)
            outs[0].errors.append(("metric", err))
            return
        for o in outs:
            o.timing[f"{name}_ms"] = metric_ms
        for key in metric.per_sample_keys:
            vals = res[key].detach().cpu()
            for i, o in enumerate(outs):
                v = vals[i]
                if not bool(torch.isfinite(v).all()):
                    o.errors.append(("metric", FloatingPointError(f"{name}.{key} is NaN or inf")))
                o.values[key] = v.tolist() if v.ndim else float(v)

    def _target(self, it: Item) -> int | None:
        """The explained class: the prediction on the clean input, the label with ``target="label"``, or a seeded
        random class other than the prediction with ``target="random"``."""
        mode = self.job.config["target"]
        if mode == "label":
            return it.label
        if mode == "random" and it.pred is not None:
            return random_target(self.job.config["seed"], it.index, it.pred, self.num_classes)
        return it.pred

    # --- rows -----------------------------------------------------------------------------------------

    def _fail(self, it: Item, stage: str, method: str | None, err: BaseException) -> None:
        it.failed = True
        self._error(it, stage, method, err)

    def _error(self, it: Item, stage: str, method: str | None, err: BaseException) -> None:
        etype = "oom" if isinstance(err, SampleOOMError) else type(err).__name__
        msg = str(err) or etype
        if stage != "load" and not isinstance(err, FloatingPointError | SampleOOMError):
            msg += " | " + "".join(traceback.format_exception_only(err)).strip()
        self.errors.append({"sample_id": it.sample_id, "index": it.index, "stage": stage, "method": method,
                            "error_type": etype, "message": msg[:MAX_MESSAGE]})

    def _rows(self) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Per method: (explanation rows, metric rows), in sample order."""
        out: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for method, results in self.results.items():
            params = json.dumps(self.job.methods[method], sort_keys=True, default=str)
            expl, mets = [], []
            for it, o in sorted(results, key=lambda r: r[0].index):
                base = {"sample_id": it.sample_id, "index": it.index, "label": it.label, "target": self._target(it),
                        "pred": it.pred, "meta": it.meta, "method": method}
                ok = o is not None and o.map is not None and not o.errors
                if o is not None and o.map is not None:
                    for part, m in o.map.items():
                        expl.append({**base, "part": part, "score": it.score, "params": params,
                                     **encode_heatmap(m), "native_shape": o.native_shape[part]})
                mets.append({**base, "pred_score": it.score, **(o.values if o is not None else {}),
                             "status": "ok" if ok else "error",
                             "error_type": None if ok else self._first_error(it, method),
                             "device": str(self.device), **(o.timing if o is not None else {})})
            out[method] = (expl, mets)
        return out

    def _first_error(self, it: Item, method: str) -> str | None:
        for e in self.errors:
            if e["index"] == it.index and e["method"] in (None, method):
                return f"{e['stage']}:{e['error_type']}"
        return None
