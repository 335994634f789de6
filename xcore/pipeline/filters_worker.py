"""The filter_scores worker: one shard -> ``filter_scores`` (one file per scorer) and ``errors``, then committed.

Per batch (Hartley 2021, §6.2–6.4): one forward + one backward give every scorer's (B, K) scores for the
ground-truth class (:func:`xcore.filters.scorers.score_many`); the misclassified samples get a second pass for their
predicted class. Then, as configured: the filter-ranking curve per scorer (§6.2.2; all ablation steps of a batch in
a few forwards, :func:`xcore.filters.ranking.ablation_curves`), surprise / expectation / β against the reference
split's distributions (eqs 6.7–6.8, :func:`xcore.filters.surprise.surprise`), and the fixing sweep (§6.4.1) for the
misclassified samples with a surprising filter of the primary scorer — filtered vanilla gradients, unfiltered
vanilla gradients and filtered guided backprop. A sample that fails to load, or whose output or scores are not
finite, is an ``errors`` row (stage ``load`` / ``score``) and an error row of every scorer; the shard goes on.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor, nn

from xcore.core.batching import BatchSize, robust_map
from xcore.core.prefetch import prefetch
from xcore.core.shards import Shard
from xcore.core.targets import stable_seed
from xcore.errors import UsageError
from xcore.filters import primary_scorer
from xcore.pipeline.base import BatchedWorker
from xcore.pipeline.tables import ERRORS

_F32 = pa.list_(pa.float32())
_I32 = pa.list_(pa.int32())
FILTER_SCORES = pa.schema([
    pa.field("sample_id", pa.string()), pa.field("index", pa.int64()), pa.field("label", pa.int64()),
    pa.field("pred", pa.int64()), pa.field("label_logit", pa.float64()), pa.field("pred_logit", pa.float64()),
    pa.field("label_prob", pa.float64()), pa.field("pred_prob", pa.float64()), pa.field("scores", _F32),
    pa.field("scores_pred", _F32), pa.field("activation", _F32), pa.field("ranking", _F32),
    pa.field("n_surprising", pa.int64()), pa.field("n_expected", pa.int64()), pa.field("beta", pa.float64()),
    pa.field("surprising", _I32), pa.field("expected", _I32), pa.field("most_surprising", pa.int64()),
    pa.field("fixed_filtered", pa.bool_()), pa.field("fixed_unfiltered", pa.bool_()),
    pa.field("fixed_guided", pa.bool_()), pa.field("scorer", pa.string()), pa.field("layer", pa.string()),
    pa.field("tap", pa.string()), pa.field("status", pa.string()), pa.field("run_key", pa.string())])
"""One row per (sample, scorer); the filter vectors are ``list<float32>`` of length K (module docstring of
:mod:`xcore.pipeline.filters_job`; docs/filters.md says why one row per sample and not per filter)."""


class FiltersWorker(BatchedWorker):
    """Holds the model (and the reference distributions) on one device; implements ``xcore.pipeline.base.Worker``."""

    def __init__(self, job: Any, model: nn.Module, device: str) -> None:
        self.job = job
        self.cfg = job.config
        self.model = model
        self.device = device
        self.dataset = job.open_dataset()
        self.batch = BatchSize(self.cfg["batch_size"])
        self.loaders = max(1, torch.get_num_threads())
        self.primary = primary_scorer(job.scorers)
        self.stats: dict[str, Any] = {}  # scorer -> xcore.filters.surprise.ClassStats of the reference split
        if job.reference is not None:
            from xcore.filters.surprise import ClassStats

            if not job.reference.stats_path.is_file():
                raise UsageError(f"the reference run {job.reference.run_dir} has no filter_stats yet; run it first "
                                 "(the filters flow does: job.requires())")
            table = pq.read_table(job.reference.stats_path)
            n_classes = int(job.model_meta.get("num_classes") or 0) or None
            for s in job.scorers:
                rows = table.filter(pc.equal(table["scorer"], s))
                self.stats[s] = ClassStats.from_table(rows, n_classes)
        meta = job.model_meta
        self.norm = {"mean": tuple(meta.get("mean") or (0.485, 0.456, 0.406)),
                     "std": tuple(meta.get("std") or (0.229, 0.224, 0.225))}

    def process(self, shard: Shard) -> dict[str, Any]:
        t0 = time.perf_counter()
        errors: list[dict[str, Any]] = []
        done: list[tuple[dict[str, Any], dict[str, Any] | None]] = []  # (identity, values by scorer) per sample
        chunk: list[tuple[dict[str, Any], Tensor]] = []

        def run(items: list[tuple[dict[str, Any], Tensor]]) -> None:
            for (ident, _x), res in zip(items, robust_map(self._score, items, self.batch), strict=True):
                if isinstance(res, BaseException):
                    errors.append(self._error(ident, "score", res))
                    res = None
                done.append((ident, res))

        loads = prefetch(self._load, range(shard.start, shard.stop), self.loaders, 2 * self.batch.value)
        try:
            for _i, res, _wait in loads:
                if isinstance(res, Exception):
                    raise res
                ident, x, err = res
                if err is not None:
                    errors.append(self._error(ident, "load", err))
                    done.append((ident, None))
                    continue
                chunk.append((ident, x))
                if len(chunk) >= self.batch.value:
                    run(chunk)
                    chunk = []
            if chunk:
                run(chunk)
        finally:
            loads.close()
        return self._commit(shard, sorted(done, key=lambda d: d[0]["index"]), errors, time.perf_counter() - t0)

    def _load(self, index: int) -> tuple[dict[str, Any], Tensor | None, Exception | None]:
        ident = {"sample_id": str(self.dataset.sample_id(index)), "index": index,
                 "label": int(self.dataset.label(index))}
        try:
            return ident, self.dataset.load(index).x, None
        except Exception as err:
            return ident, None, err

    def _params(self, idents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        seed = self.cfg["seed"]
        return {s: ({**p, "seeds": [stable_seed(seed, d["index"]) for d in idents]} if s == "random" else p)
                for s, p in self.job.scorers.items()}

    def _score(self, items: list[tuple[dict[str, Any], Tensor]]) -> list[dict[str, Any] | Exception]:
        from xcore.filters.ranking import ablation_curves, rank_order
        from xcore.filters.scorers import score_many

        cfg, idents = self.cfg, [d for d, _ in items]
        x = torch.stack([t for _, t in items]).to(self.device)
        labels = torch.tensor([d["label"] for d in idents], dtype=torch.long, device=self.device)
        common = {"layer": cfg["layer"], "tap": cfg["tap"], "softmax": cfg["softmax"]}
        scores, fp = score_many(self._params(idents), self.model, x, labels, labels=labels, **common)
        out = fp.out.float()
        pred = out.argmax(1)
        wrong = (pred != labels).nonzero().flatten()
        pred_scores = {s: v.clone() for s, v in scores.items()}
        if len(wrong) and cfg["pred_scores"]:
            sub = [idents[i] for i in wrong.tolist()]
            again, _ = score_many(self._params(sub), self.model, x[wrong], pred[wrong], labels=labels[wrong], **common)
            for s, v in again.items():
                pred_scores[s][wrong] = v
        act = fp.act.float().mean(dim=tuple(range(2, fp.act.ndim)))
        prob = out.softmax(1)
        values: dict[str, dict[str, Any]] = {s: {"scores": scores[s].float().cpu()} for s in scores}
        if cfg["pred_scores"]:  # else null: the predicted class' scores were not computed
            for s in scores:
                values[s]["scores_pred"] = pred_scores[s].float().cpu()
        if cfg["ranking_step"]:
            for s in scores:
                values[s]["ranking"] = ablation_curves(self.model, x, labels, rank_order(scores[s]), layer=cfg["layer"],
                                                       tap=cfg["tap"], step=cfg["ranking_step"]).float().cpu()
        fixes = self._surprise(values, labels, pred, x) if self.stats else {}
        finite = torch.isfinite(out).all(1) & torch.stack(
            [torch.isfinite(v["scores"]).all(1) for v in values.values()]).all(0).to(out.device)
        res: list[dict[str, Any] | Exception] = []
        for i, d in enumerate(idents):
            if not bool(finite[i]):
                res.append(FloatingPointError("model output or filter scores are not finite"))
                continue
            c, p = d["label"], int(pred[i])
            base = {"pred": p, "label_logit": float(out[i, c]), "pred_logit": float(out[i, p]),
                    "label_prob": float(prob[i, c]), "pred_prob": float(prob[i, p]),
                    "activation": act[i].cpu().tolist()}
            res.append({s: {**base, **{k: self._cell(v, i) for k, v in vals.items()},
                            **({k: bool(f[i]) if f[i] >= 0 else None for k, f in fixes.items()}
                               if s == self.primary else {})}
                        for s, vals in values.items()})
        return res

    @staticmethod
    def _cell(v: Any, i: int) -> Any:
        if isinstance(v, Tensor):
            return v[i].tolist()
        item = v[i]
        return item.tolist() if isinstance(item, np.ndarray | np.generic) else item

    def _surprise(self, values: dict[str, dict[str, Any]], labels: Tensor, pred: Tensor, x: Tensor
                  ) -> dict[str, np.ndarray]:
        """Surprise columns into ``values``; the fixing sweep's outcome per sample (−1: not a candidate)."""
        from xcore.filters.suppression import suppression_sweep
        from xcore.filters.surprise import surprise

        y = labels.cpu().numpy()
        for s, vals in values.items():
            res = surprise(vals["scores"].numpy().astype(np.float64), y, self.stats[s])
            vals.update({k: res[k] for k in ("n_surprising", "n_expected", "beta", "most_surprising")},
                        surprising=[np.asarray(a, np.int32) for a in res["surprising"]],
                        expected=[np.asarray(a, np.int32) for a in res["expected"]])
        if not self.cfg["suppression"]:
            return {}
        ms = torch.as_tensor(np.asarray(values[self.primary]["most_surprising"]), device=x.device)
        cand = ((pred != labels) & (ms >= 0)).nonzero().flatten()
        fixes = {k: np.full(len(labels), -1) for k in ("fixed_filtered", "fixed_unfiltered", "fixed_guided")}
        if len(cand):
            common = {"layer": self.cfg["layer"], "tap": self.cfg["tap"], **self.norm}
            xc, yc, keep = x[cand], labels[cand], ms[cand]
            idx = cand.cpu().numpy()
            for key, k, guided in (("fixed_filtered", keep, False), ("fixed_unfiltered", None, False),
                                   ("fixed_guided", keep, True)):
                fixes[key][idx] = suppression_sweep(self.model, xc, yc, k, guided=guided,
                                                    **common)["fixed"].cpu().numpy().astype(int)
        return fixes

    def _error(self, ident: dict[str, Any], stage: str, err: BaseException) -> dict[str, Any]:
        return {**ident, "stage": stage, "method": None, "error_type": type(err).__name__,
                "message": (str(err) or type(err).__name__)[:2000]}

    def _commit(self, shard: Shard, done: list[tuple[dict[str, Any], dict[str, Any] | None]],
                errors: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        layout, key, cfg = self.job.layout, self.job.run_key, self.cfg
        tables = {}
        for s in self.job.scorers:
            rows = [{**ident, **(vals[s] if vals else {}), "scorer": s, "layer": cfg["layer"], "tap": cfg["tap"],
                     "status": "ok" if vals else "error", "run_key": key} for ident, vals in done]
            tables[layout.table_path("filter_scores", shard, s, partition="scorer")] = pa.Table.from_pylist(
                rows, schema=FILTER_SCORES)
        tables[layout.table_path("errors", shard)] = pa.Table.from_pylist(
            [{k: e.get(k) for k in ERRORS.names} | {"run_key": key} for e in errors], schema=ERRORS)
        ok = sum(v is not None for _, v in done)
        summary = {"shard_id": shard.shard_id, "samples": shard.size, "ok": ok, "failed": len(done) - ok,
                   "errors": len(errors), "seconds": round(seconds, 3)}
        layout.write_shard(shard, key, tables, summary)
        return summary
