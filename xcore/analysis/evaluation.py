"""The explain run's evaluation tables beside the thesis's: seconds per explanation (Tables 3.11, 4.4, 5.5), the
pointing game (Table 5.4) and the random-target sanity check (Table 3.5).

Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University,
2021 ("thesis"). Every table is read from the committed ``metrics`` view of a run (:func:`xcore.io.query.connect`)
over ``status = 'ok'`` rows; a table whose columns the run lacks is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from xcore.analysis.blocks import Block, table
from xcore.io.query import connect, rows

THESIS_SECONDS: dict[str, dict[str, float]] = {
    "gradcam": {"T3.11 VGG16": 0.03, "T3.11 ResNet50": 0.03, "T5.5 DenseNet": 0.07, "T4.4 R(2+1)D": 0.15},
    "gradcam_pp": {"T3.11 VGG16": 0.03, "T3.11 ResNet50": 0.03, "T5.5 DenseNet": 0.07, "T4.4 R(2+1)D": 0.15},
    "xgradcam": {"T5.5 ResNet50": 0.03, "T5.5 DenseNet": 0.07},
    "lime": {"T3.11 VGG16": 5.80, "T3.11 ResNet50": 4.76},
    "rise": {"T3.11 VGG16": 13.19, "T3.11 ResNet50": 17.48},
    "xrai": {"T3.11 VGG16": 31.10, "T3.11 ResNet50": 30.57},
    "swag": {"T3.11 VGG16": 0.07, "T3.11 ResNet50": 0.10},
    "swag_I": {"T3.11 VGG16": 0.12, "T3.11 ResNet50": 0.18},
    "swag_I+G": {"T3.11 VGG16": 0.12, "T3.11 ResNet50": 0.18},
    "swag_G": {"T3.11 VGG16": 0.07, "T3.11 ResNet50": 0.10},
    "swag_v": {"T4.4 C3D": 0.26, "T4.4 R(2+1)D": 0.40},
    "saliency_tubes": {"T4.4 R(2+1)D": 0.05},
    "scorecam": {"T5.5 ResNet50": 3.83, "T5.5 DenseNet": 1.92},
    "ablationcam": {"T5.5 ResNet50": 0.60, "T5.5 DenseNet": 0.30},
    "jitter_cam": {"T5.5 ResNet50": 0.37, "T5.5 DenseNet": 0.40},
}
"""Mean seconds per explanation in the thesis (one Titan X; Tables 3.11, 4.4 and 5.5; SWAG at its SWAG_G
default, and per superpixel variant; Jitter-, Score- and Ablation-CAM batched at 32)."""

THESIS_POINTING = {"centre": (24.61, 17.93), "gradcam": (53.47, 49.40)}
"""Thesis Table 5.4 (COCO, ResNet-50; all / difficult, %); TorchRay's ``docs/pointing.csv`` has 27.8 / 19.5 and
57.3 / 52.3."""


def thesis_seconds(method: str) -> str:
    """The thesis's seconds per explanation of ``method`` in brief: ``"0.03-0.15 (T3.11, T4.4, T5.5)"``."""
    got = THESIS_SECONDS.get(method)
    if not got:
        return "-"
    lo, hi = min(got.values()), max(got.values())
    tables = sorted({k.split()[0] for k in got})
    return f"{lo:.2f}{'' if lo == hi else f'-{hi:.2f}'} ({', '.join(tables)})"


def _columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("DESCRIBE metrics").fetchall()}


def efficiency_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Per method: mean seconds per explanation (``explain_ms``), the batch sizes and device it ran at, each
    metric's mean seconds per sample, and the thesis's seconds for the same method."""
    cols = _columns(con)
    if "explain_ms" not in cols:
        return []
    metric_cols = sorted(c for c in cols if c.endswith("_ms") and c != "explain_ms")
    extra = "".join(f", avg({c}) / 1000 AS {c[:-3]}_s" for c in metric_cols)
    names, data = rows(con, "SELECT method, count(*) AS n, avg(explain_ms) / 1000 AS explain_s, "
                       "string_agg(DISTINCT explain_batch::VARCHAR, '/') AS batch, "
                       f"string_agg(DISTINCT device, '/') AS device{extra} FROM metrics "
                       "WHERE status = 'ok' AND explain_ms IS NOT NULL GROUP BY method ORDER BY method")
    out = []
    for r in data:
        row = dict(zip(names, r, strict=True))
        row["thesis_s"] = thesis_seconds(row["method"])
        out.append(row)
    return out


def pointing_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Per method: the pointing game's accuracy as the mean over classes of per-class accuracy (TorchRay) and pooled
    (eq 5.7), over all samples and the difficult ones (the reader's ``difficult`` flag in ``meta``), in %."""
    if "pointing_hit" not in _columns(con):
        return []
    sql = """
        WITH p AS (SELECT method, label, pointing_hit AS hit,
                          coalesce(TRY_CAST(json_extract(meta, '$.difficult') AS BOOLEAN), false) AS difficult
                   FROM metrics WHERE status = 'ok' AND pointing_hit IS NOT NULL),
             c AS (SELECT method, label, avg(hit) AS acc, avg(hit) FILTER (WHERE difficult) AS acc_d
                   FROM p GROUP BY method, label),
             m AS (SELECT method, 100 * avg(acc) AS mean_class, 100 * avg(acc_d) AS mean_class_difficult
                   FROM c GROUP BY method),
             q AS (SELECT method, count(*) AS n, 100 * avg(hit) AS pooled, count(*) FILTER (WHERE difficult)
                          AS n_difficult, 100 * avg(hit) FILTER (WHERE difficult) AS pooled_difficult
                   FROM p GROUP BY method)
        SELECT q.method, n, mean_class, pooled, n_difficult, mean_class_difficult, pooled_difficult
        FROM q JOIN m USING (method) ORDER BY method"""
    names, data = rows(con, sql)
    out = []
    for r in data:
        row = dict(zip(names, r, strict=True))
        thesis = THESIS_POINTING.get(row["method"])
        row["thesis"] = f"{thesis[0]:.2f} / {thesis[1]:.2f}" if thesis else "-"
        out.append(row)
    return out


def localisation_rows(run_dir: Path | str) -> list[dict[str, Any]]:
    """Per method and threshold family: the weak-localisation error % with α chosen on the evaluated samples (the
    thesis's "best score", §5.4.4) beside α chosen on a seeded held-out half and scored on the other half."""
    from xcore.analysis.localisation import localisation_report

    try:
        rep = localisation_report(run_dir)
    except ValueError:  # no weak_localisation columns or rows
        return []
    return [{k: r[k] for k in ("method", "family", "samples", "best_alpha", "best_error", "heldout_alpha",
                               "heldout_error", "select_samples", "eval_samples")} for r in rep]


def evaluation_blocks(con: duckdb.DuckDBPyConnection, run_dir: Path | str | None = None) -> list[Block]:
    """The efficiency, pointing-game and (with ``run_dir``) weak-localisation tables of a run, where its metrics
    have the columns."""
    blocks: list[Block] = []
    loc = localisation_rows(run_dir) if run_dir is not None else []
    if loc:
        blocks.append(table("weak localisation error % (best α on the same data vs α chosen on a held-out half)",
                            loc))
    eff = efficiency_rows(con)
    if eff:
        blocks.append(table("seconds per explanation (thesis: Tables 3.11 / 4.4 / 5.5, one Titan X)", eff))
    point = pointing_rows(con)
    if point:
        blocks.append(table("pointing game, % (mean over classes / pooled; thesis Table 5.4: all / difficult)",
                            point))
    return blocks


def _ok_rows(run: Path | str, columns: str) -> list[tuple[Any, ...]]:
    """``columns`` of the ``ok`` metrics rows of a committed run."""
    con = connect(run)
    try:
        return rows(con, f"SELECT {columns} FROM metrics WHERE status = 'ok'")[1]
    finally:
        con.close()


def random_target_rows(pred_run: Path | str, random_run: Path | str) -> list[dict[str, Any]]:
    """The sanity check of thesis §3.6.4 / Table 3.5: per method, the mean deletion AUC of the run that explains the
    prediction beside that of the run that explains a random other class (``target="random"``; deletion tracks the
    prediction in both), over the samples ``ok`` in both runs. A method in only one run is left out."""
    pred, rand = ({(m, s): v for m, s, v in _ok_rows(run, "method, sample_id, deletion_auc") if v is not None}
                  for run in (pred_run, random_run))
    out = []
    for method in sorted({m for m, _ in pred} & {m for m, _ in rand}):
        both = sorted(s for m, s in pred if m == method and (m, s) in rand)
        if not both:
            continue
        p = sum(pred[(method, s)] for s in both) / len(both)
        r = sum(rand[(method, s)] for s in both) / len(both)
        out.append({"method": method, "n": len(both), "deletion_pred": p, "deletion_random": r,
                    "random_minus_pred": r - p})
    return out


THESIS_MCS = {"gradcam": 0.312, "gradcam_pp": 0.326, "xgradcam": 0.312, "lime": 0.210, "rise": 0.202, "xrai": 0.243,
              "swag": 0.194, "guided_backprop": 0.044}
"""Thesis Table 3.12 (BAM model contrast score, ResNet-50; SWAG at SWAG_G)."""


def model_contrast_rows(object_run: Path | str, scene_run: Path | str) -> list[dict[str, Any]]:
    """BAM's model contrast score per method (thesis §3.5.4, eqs 3.7–3.9; :func:`xcore.metrics.bam.model_contrast`)
    from a run of the object model and a run of the scene model over the same BAM images, each with the
    ``bam_attribution`` metric, beside Table 3.12."""
    from xcore.metrics.bam import model_contrast

    cols = "method, sample_id, label, pred, region_attribution"
    per_run = []
    for run in (object_run, scene_run):
        got: dict[str, list[dict[str, Any]]] = {}
        for method, sample_id, label, pred, g in _ok_rows(run, cols):
            got.setdefault(method, []).append({"sample_id": sample_id, "label": label, "pred": pred,
                                               "region_attribution": g})
        per_run.append(got)
    obj, scene = per_run
    return [{"method": m, **model_contrast(obj[m], scene[m]), "thesis": THESIS_MCS.get(m, "-")}
            for m in sorted(set(obj) & set(scene))]
