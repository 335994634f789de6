"""The filter_scores run's reduce and report (Hartley 2021, §6.2–6.4, Table 6.1, Figs 6.8–6.14).

- ``analysis/filter_stats.parquet``: per (scorer, class, filter) count, mean, P0.1, P99.9, min, max and a
  fixed-bin histogram (:func:`xcore.filters.stats.filter_stats`, DuckDB, class chunk by class chunk).
- ``analysis/filter_ranking.parquet``: per scorer and ablation step the dataset accuracy, raw and normalised to
  the unablated accuracy, and the AUC of the normalised curve (§6.2.2, Table 6.1: lower is better).
- With a reference split: the β report (§6.3.1: within-class Spearman of β with the logit and the softmax, the
  shares of misclassified and correct samples with β < 0, beside the thesis' numbers), the mean numbers of
  surprising / expected filters, and the fixing counts (§6.4.1).
- ``analysis/filters.json`` holds all of it; ``filter_ranking.png`` and ``surprise.png`` are the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from xcore.analysis.blocks import Block, table
from xcore.io.atomic import atomic_open
from xcore.io.parquet import write_atomic

FIXES = ("fixed_filtered", "fixed_unfiltered", "fixed_guided")
RANKING = pa.schema([("scorer", pa.string()), ("step", pa.int64()), ("filters_zeroed", pa.int64()),
                     ("fraction", pa.float64()), ("accuracy", pa.float64()), ("normalised", pa.float64())])


def scorer_files(job: Any) -> dict[str, list[Path]]:
    """The committed ``filter_scores`` files of ``job``'s run, by scorer (hive partition ``scorer=<s>``)."""
    files = job.layout.committed_files(job.run_key).get("filter_scores", [])
    return {s: [p for p in files if p.parent.name == f"scorer={s}"] for s in job.scorers}


def _ok_rows(files: list[Path], columns: list[str]) -> pa.Table:
    t = pa.concat_tables([pq.read_table(str(p), columns=[*columns, "status"]) for p in files])
    return t.filter(pc.equal(t["status"], "ok"))


def analyse(job: Any) -> dict[str, Any]:
    """Every reduced table of the run (module docstring), written atomically; returns the report dict."""
    from xcore.filters.stats import filter_stats

    cfg, root = job.config, Path(job.run_dir) / "analysis"
    root.mkdir(parents=True, exist_ok=True)
    files = scorer_files(job)
    stats = [filter_stats(fs, bins=cfg["bins"]) for fs in files.values()]
    stats = [t.append_column("scorer", pa.array([s] * len(t), pa.string())) for s, t in zip(files, stats, strict=True)]
    write_atomic(pa.concat_tables(stats), job.stats_path, run_key=job.run_key, shard_id=-1)
    report: dict[str, Any] = {"scorers": list(files), "layer": cfg["layer"], "tap": cfg["tap"]}
    if cfg["ranking_step"]:
        rows, report["ranking"] = ranking(files, cfg["ranking_step"])
        write_atomic(pa.Table.from_pylist(rows, schema=RANKING), root / "filter_ranking.parquet",
                     run_key=job.run_key, shard_id=-1)
    if job.reference is not None:
        report["surprise"], report["beta"] = surprise_rows(files)
        if cfg["suppression"]:
            from xcore.filters import primary_scorer

            report["suppression"] = suppression_counts(files[primary_scorer(job.scorers)])
    with atomic_open(root / "filters.json", "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=True, default=float)
    return report


def ranking(files: dict[str, list[Path]], step: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per scorer the dataset curve of §6.2.2 (accuracy per step, normalised to step 0) and its AUC."""
    import torch

    from xcore.filters.ranking import ranking_auc

    rows, aucs = [], []
    for s, fs in files.items():
        t = _ok_rows(fs, ["ranking", "scores"])
        if not len(t):
            continue
        curves = torch.tensor(t["ranking"].to_pylist(), dtype=torch.float64)
        n_filters = len(t["scores"][0].as_py())
        res = ranking_auc(curves, n_filters, step)
        for i, (acc, norm, frac) in enumerate(zip(res["accuracy"].tolist(), res["normalised"].tolist(),
                                                  res["fractions"].tolist(), strict=True)):
            rows.append({"scorer": s, "step": i, "filters_zeroed": min(i * step, n_filters), "fraction": frac,
                         "accuracy": acc, "normalised": norm})
        aucs.append({"scorer": s, "auc": float(res["auc"]), "accuracy": float(res["accuracy"][0]),
                     "samples": len(t)})
    return rows, aucs


def surprise_rows(files: dict[str, list[Path]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per scorer: mean surprising / expected filters of correct and misclassified samples, and the β report."""
    from xcore.filters.surprise import THESIS_BETA, beta_report

    surprise, beta = [], []
    for s, fs in files.items():
        t = _ok_rows(fs, ["label", "pred", "label_logit", "label_prob", "beta", "n_surprising", "n_expected"])
        if not len(t):
            continue
        col = {c: np.asarray(t[c].to_numpy(zero_copy_only=False), dtype=np.float64) for c in t.column_names
               if c != "status"}
        known = np.isfinite(col["beta"])  # a class the reference split never showed has no distributions
        col = {c: v[known] for c, v in col.items()}
        wrong = col["pred"] != col["label"]
        for name, sel in (("correct", ~wrong), ("misclassified", wrong)):
            surprise.append({"scorer": s, "samples": name, "n": int(sel.sum()),
                             "mean_surprising": float(col["n_surprising"][sel].mean()) if sel.any() else None,
                             "mean_expected": float(col["n_expected"][sel].mean()) if sel.any() else None})
        rep = beta_report(col["beta"], col["label"].astype(int), col["pred"].astype(int), col["label_logit"],
                          col["label_prob"])
        beta.append({"scorer": s, **rep, "thesis": THESIS_BETA})
    return surprise, beta


def suppression_counts(files: list[Path]) -> dict[str, Any]:
    """§6.4.1: of the misclassified samples, how many had a surprising filter and how many each variant fixed."""
    t = _ok_rows(files, ["label", "pred", "most_surprising", *FIXES])
    d = t.to_pydict()
    wrong = [i for i, (y, p) in enumerate(zip(d["label"], d["pred"], strict=True)) if y != p]
    cand = [i for i in wrong if (d["most_surprising"][i] or -1) >= 0]
    return {"misclassified": len(wrong), "with_surprise": len(cand),
            **{k: sum(bool(d[k][i]) for i in cand) for k in FIXES}}


def summary_blocks(report: dict[str, Any]) -> list[Block]:
    """The Table 6.1-style ranking AUCs, the β table beside the thesis' numbers, surprise and fixing counts."""
    out: list[Block] = []
    if report.get("ranking"):
        out.append(table("filter-ranking AUC (normalised accuracy, lower is better; thesis Table 6.1)",
                         [{"scorer": r["scorer"], "AUC": r["auc"], "unablated accuracy": r["accuracy"],
                           "samples": r["samples"]} for r in sorted(report["ranking"], key=lambda r: r["auc"])]))
    if report.get("surprise"):
        out.append(table("surprising / expected filters per sample (mean)", report["surprise"]))
    if report.get("beta"):
        th = report["beta"][0]["thesis"]
        out.append(table("β (eq 6.8) against the class score (§6.3.1)", [
            *({"scorer": b["scorer"], **{k: b.get(k) for k in ("spearman_logit", "spearman_prob",
                                                                 "misclassified_beta_neg", "correct_beta_neg")}}
              for b in report["beta"]),
            *({"scorer": f"thesis {m}", **{k: th[m].get(k) for k in ("spearman_logit", "spearman_prob",
                                                                      "misclassified_beta_neg", "correct_beta_neg")}}
              for m in th)]))
    if report.get("suppression"):
        out.append(table("fixing by suppression (§6.4.1): misclassified samples fixed", [report["suppression"]]))
    return out
