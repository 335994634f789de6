"""Video analyses over a run's tables: where a map's positive relevance lies relative to the moving object, and
what the discriminative (spatial / temporal) split and its freeze-frame clips say (Hiley, Taylor, Preece,
Hicks, Marshall, *Discriminating Spatial and Temporal Relevance in Deep Taylor Decompositions for Explainable
Activity Recognition*, §3.2, §4.4, §5).

- Mass in boxes: ``Σ_{t, (i,j) ∈ B_t} max(R_tij, 0) / Σ_{t,i,j} max(R_tij, 0)`` — the share of a clip map's positive
  relevance that falls inside the per-frame ground-truth boxes ``B_t`` (inclusive pixel coordinates of the clip;
  frames without a box contribute only to the denominator). A map with no positive mass has no share (NaN, left
  out of means). The share of box voxels in the clip is reported next to it: a map uniform over the clip scores
  exactly that share, so it is the chance level.
- The discriminative report, per part (``temporal`` / ``spatial`` / ``full``), gives the mean share over the clips,
  and from the metrics rows' extras the freeze-frame accuracy (freeze clips predicted as the clip's label) and
  the mean probability of the explained class on a freeze clip.

Everything reads the committed Parquet shards through DuckDB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xcore.analysis.joint_importance import query_rows
from xcore.io.parquet import decode_heatmap

Boxes = list[list[list[float]]]  # per frame, a list of [x1, y1, x2, y2]


def box_mask(boxes: Boxes, shape: tuple[int, int, int]) -> np.ndarray:
    """Bool (T, H, W): the voxels inside any of frame t's boxes (inclusive pixel coordinates, clipped)."""
    T, H, W = shape
    mask = np.zeros(shape, dtype=bool)
    for t, frame in enumerate(boxes[:T]):
        for x1, y1, x2, y2 in frame:
            c0, r0 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
            c1, r1 = min(W - 1, int(np.ceil(x2))), min(H - 1, int(np.ceil(y2)))
            if c1 >= c0 and r1 >= r0:
                mask[t, r0 : r1 + 1, c0 : c1 + 1] = True
    return mask


def mass_in_boxes(heatmap: np.ndarray, boxes: Boxes) -> float:
    """Share of the positive mass of a (T, H, W) map inside the per-frame boxes; NaN without positive mass."""
    pos = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = pos.sum()
    if total <= 0:
        return float("nan")
    return float(pos[box_mask(boxes, pos.shape)].sum() / total)


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def box_mass_report(run_dir: Path | str, method: str) -> dict[str, Any]:
    """Per part of ``method``'s explanations: mean share of positive mass in the boxes, clips counted, and the
    chance level (mean share of box voxels). Only clips whose meta carries per-frame boxes count."""
    rows = query_rows(run_dir, "SELECT part, meta, heatmap, scale, shape, dtype FROM explanations "
                               "WHERE method = ? ORDER BY index", [method])
    shares: dict[str, list[float]] = {}
    chance: dict[str, list[float]] = {}
    for r in rows:
        boxes = json.loads(r["meta"] or "{}").get("boxes")
        heat = decode_heatmap(r)
        if not boxes or heat.ndim != 3:
            continue
        part = r["part"] or "map"
        shares.setdefault(part, []).append(mass_in_boxes(heat, boxes))
        chance.setdefault(part, []).append(float(box_mask(boxes, heat.shape).mean()))
    return {part: {"mass_in_boxes": _mean(v), "chance": _mean(chance[part]), "clips": len(v)}
            for part, v in shares.items()}


def freeze_frame_report(run_dir: Path | str, method: str = "discriminative") -> dict[str, Any]:
    """Freeze-frame clips of ``method`` (extras ``freeze_preds`` / ``freeze_scores``): the share predicted as the
    clip's label, the share predicted as the clip's own prediction, and the mean probability of the explained class."""
    if "freeze_preds" not in _columns(run_dir):
        return {"clips": 0}
    rows = query_rows(run_dir, "SELECT label, pred, freeze_preds, freeze_scores FROM metrics "
                               "WHERE method = ? AND status = 'ok' AND freeze_preds IS NOT NULL", [method])
    if not rows:
        return {"clips": 0}
    preds = [np.asarray(r["freeze_preds"], dtype=np.int64) for r in rows]
    return {"clips": len(rows),
            "freeze_accuracy": float(np.mean([np.mean(p == r["label"]) for p, r in zip(preds, rows, strict=True)])),
            "freeze_agreement": float(np.mean([np.mean(p == r["pred"]) for p, r in zip(preds, rows, strict=True)])),
            "freeze_score": float(np.mean([np.mean(r["freeze_scores"]) for r in rows]))}


def discriminative_report(run_dir: Path | str, method: str = "discriminative") -> dict[str, Any]:
    """Mass in boxes per part plus the freeze-frame predictions (the issue's acceptance numbers)."""
    return {"method": method, "parts": box_mass_report(run_dir, method), "freeze": freeze_frame_report(run_dir, method)}


def method_table(run_dir: Path | str) -> list[dict[str, Any]]:
    """Per method: ok clips, mean deletion / insertion AUC, and the best weak-localisation error % per family
    (the thesis's Tables 4.2 / 4.3 layout), from whichever of those metrics the run computed."""
    from xcore.analysis.localisation import localisation_report
    from xcore.io.query import method_summary

    rows = {r["method"]: {"method": r["method"], "clips": r["ok"], "deletion_auc": r.get("deletion_auc"),
                          "insertion_auc": r.get("insertion_auc")} for r in method_summary(run_dir)}
    try:
        loc = localisation_report(run_dir)
    except ValueError:  # the run has no weak_localisation rows
        loc = []
    for r in loc:
        row = rows.setdefault(r["method"], {"method": r["method"]})
        row[f"loc_{r['family']}_error"] = r["best_error"]
        row[f"loc_{r['family']}_alpha"] = r["best_alpha"]
        row[f"loc_{r['family']}_heldout_error"] = r["heldout_error"]
    return [rows[m] for m in sorted(rows)]


def write_video_report(run_dir: Path | str) -> dict[str, Any]:
    """The video report of a run -> ``<run>/analysis/video.json`` (atomic): the method table, the share of
    positive relevance inside the boxes per method and part, and the freeze-frame report of multi-part methods."""
    from xcore.io.runs import write_json_atomic

    run_dir = Path(run_dir)
    methods = [r[0] for r in _distinct(run_dir)]
    report = {"methods": method_table(run_dir),
              "mass_in_boxes": {m: box_mass_report(run_dir, m) for m in methods},
              "freeze_frames": {m: rep for m in methods if (rep := freeze_frame_report(run_dir, m))["clips"]}}
    write_json_atomic(run_dir / "analysis" / "video.json", report)
    return report


def _distinct(run_dir: Path) -> list[tuple[Any, ...]]:
    return _sql(run_dir, "SELECT DISTINCT method FROM explanations ORDER BY 1")


def _columns(run_dir: Path | str) -> set[str]:
    return {r[0] for r in _sql(run_dir, "DESCRIBE metrics")}


def _sql(run_dir: Path | str, sql: str) -> list[tuple[Any, ...]]:
    from xcore.io.query import connect, rows

    con = connect(run_dir)
    try:
        return rows(con, sql)[1]
    finally:
        con.close()
