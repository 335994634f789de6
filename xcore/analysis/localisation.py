"""Weak-localisation error of a run (Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021: thesis §3.5.3, §4.5.3, §5.4.4).

Reads the per-sample IoU lists of the ``weak_localisation`` metric (``loc_val_iou``, ``loc_mean_iou``,
``loc_energy_iou``: one IoU per α of the family's grid) from the run's Parquet ``metrics`` tables through DuckDB
(``status = 'ok'`` rows only), and reports per method and threshold family the error % at every α and the best α.
The thesis reports "the best score" over the sweep (§5.4.4) — an optimistic choice made on the evaluated data
itself; the reference protocol (ruthcfong/perturb_explanations ``code/caffe/python/heatmaps.py``, after Fong &
Vedaldi, ICCV 2017) picks α on 5,000 held-out annotated training images instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xcore.analysis.joint_importance import query_rows
from xcore.io.query import connect
from xcore.metrics.localisation import DEFAULT_ALPHAS, FAMILIES, localisation_error

METRIC = "weak_localisation"


def _run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_alphas(info: dict[str, Any]) -> dict[str, list[float]]:
    """The α grid of each family as recorded in ``run.json`` (the defaults where absent or ``None``)."""
    params = info.get("resolved", {}).get("metrics", {}).get(METRIC, {}) or {}
    return {f: [float(a) for a in (params.get(f"{f}_alphas") or DEFAULT_ALPHAS[f])] for f in FAMILIES}


def is_video_run(info: dict[str, Any]) -> bool:
    """Whether the run explained clips: the modality its dataset kind recorded in ``run.json``."""
    return info.get("resolved", {}).get("modality") == "video"


def localisation_report(run_dir: Path | str, method: str | None = None, *, video: bool | None = None,
                        threshold: float = 0.5) -> list[dict[str, Any]]:
    """Per method and family: ``alphas``, ``error`` (% per α), ``best_alpha``, ``best_error`` and ``samples``.

    ``video`` picks the correctness rule (> 0.5 for clips, >= 0.5 for images); ``None`` infers it from the run's
    ``dataset_kind``. The best α is the first α of minimum error. A method without localisation rows is absent;
    a run without any raises ``ValueError``.
    """
    root = Path(run_dir)
    info = _run_info(root)
    grids = run_alphas(info)
    video = is_video_run(info) if video is None else video
    cols = [f"loc_{f}_iou" for f in FAMILIES]
    con = connect(root)
    try:
        have = {r[0] for r in con.execute("DESCRIBE metrics").fetchall()}
    finally:
        con.close()
    if not set(cols) <= have:
        raise ValueError(f"no {METRIC} columns in the metrics of {root}")
    where = "status = 'ok' AND " + " AND ".join(f"{c} IS NOT NULL" for c in cols)
    params: list[Any] = []
    if method is not None:
        where += " AND method = ?"
        params.append(method)
    rows = query_rows(root, f"SELECT method, {', '.join(cols)} FROM metrics WHERE {where} ORDER BY method, index",
                      params)
    if not rows:
        raise ValueError(f"no {METRIC} rows{'' if method is None else f' for {method}'} in {root}")
    out: list[dict[str, Any]] = []
    for name in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == name]
        for family, col in zip(FAMILIES, cols, strict=True):
            ious = np.array([r[col] for r in mine], dtype=np.float64)
            alphas = grids[family]
            if ious.ndim != 2 or ious.shape[1] != len(alphas):
                raise ValueError(f"{name}: {col} has {ious.shape[-1]} values per sample, the α grid {len(alphas)}")
            err = localisation_error(ious, threshold, video=video).tolist()
            best = int(np.nanargmin(err)) if not all(np.isnan(err)) else 0
            out.append({"method": name, "family": family, "samples": len(ious), "video": video,
                        "alphas": alphas, "error": err, "best_alpha": alphas[best], "best_error": err[best]})
    return out
