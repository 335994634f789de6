"""Weak-localisation error of a run (Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021: thesis §3.5.3, §4.5.3, §5.4.4).

Reads the per-sample IoU lists of the ``weak_localisation`` metric (``loc_val_iou``, ``loc_mean_iou``,
``loc_energy_iou``: one IoU per α of the family's grid) from the run's Parquet ``metrics`` tables through DuckDB
(``status = 'ok'`` rows only), and reports per method and threshold family the error % at every α and the best α.
The thesis reports "the best score" over the sweep (§5.4.4) — an optimistic choice made on the evaluated data
itself; the reference protocol (ruthcfong/perturb_explanations ``code/caffe/python/heatmaps.py``, after Fong &
Vedaldi, ICCV 2017) picks α on 5,000 held-out annotated training images instead. Both are reported: ``best_*`` is
the thesis's choice, ``heldout_*`` picks α on a select part — a seeded fraction of the samples (the same samples
for every method: a hash of the seed and the sample id) or another run (e.g. annotated training images) — and
gives the error on the rest.
"""

from __future__ import annotations

import hashlib
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


def in_select(sample_id: str, seed: int, fraction: float) -> bool:
    """Whether a sample belongs to the seeded select part: a uniform hash of (seed, sample id) below ``fraction``
    (independent of the method, the sharding and the row order)."""
    digest = hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def _best(err: list[float]) -> int:
    """The first α of minimum error (0 when every error is NaN)."""
    return int(np.nanargmin(err)) if not all(np.isnan(err)) else 0


def localisation_report(run_dir: Path | str, method: str | None = None, *, video: bool | None = None,
                        threshold: float = 0.5, select: float = 0.5, seed: int = 0,
                        select_run: Path | str | None = None) -> list[dict[str, Any]]:
    """Per method and family: ``alphas``, ``error`` (% per α), ``best_alpha``, ``best_error`` and ``samples`` (α
    chosen on the evaluated samples, the thesis's §5.4.4 number), and the held-out protocol's ``heldout_alpha``
    (chosen on the select part), ``heldout_error`` (on the rest), ``select_samples`` and ``eval_samples``.

    The select part is the seeded fraction ``select`` of the samples (:func:`in_select`), or, with ``select_run``,
    every sample of that run (e.g. annotated training images; then the whole of this run is evaluated). A part
    without samples gives ``None``. ``video`` picks the correctness rule (> 0.5 for clips, >= 0.5 for images);
    ``None`` infers it from the run's ``dataset_kind``. The best α is the first α of minimum error. A method without
    localisation rows is absent; a run without any raises ``ValueError``.
    """
    root = Path(run_dir)
    video = is_video_run(_run_info(root)) if video is None else video
    held = (None if select_run is None else
            {(r["method"], r["family"]): r for r in _iou_rows(Path(select_run), method, video, threshold)})
    out = []
    for r in _iou_rows(root, method, video, threshold):
        ious, ids, alphas = r.pop("ious"), r.pop("ids"), r["alphas"]
        if held is None:  # a seeded fraction of this run selects, the rest is evaluated
            pick = np.array([in_select(i, seed, select) for i in ids], dtype=bool)
            sel = localisation_error(ious[pick], threshold, video=video).tolist() if pick.any() else None
            n_select, rest = int(pick.sum()), ious[~pick]
        else:  # another run selects, all of this one is evaluated
            other = held.get((r["method"], r["family"]))
            sel = other["error"] if other is not None and other["alphas"] == alphas else None
            n_select, rest = (other["samples"] if sel is not None else 0), ious
        alpha = _best(sel) if sel is not None and len(rest) else None
        r.update({"heldout_alpha": None if alpha is None else alphas[alpha],
                  "heldout_error": None if alpha is None else float(localisation_error(rest, threshold,
                                                                                       video=video)[alpha]),
                  "select_samples": n_select, "eval_samples": len(rest)})
        out.append(r)
    return out


def _iou_rows(root: Path, method: str | None, video: bool, threshold: float) -> list[dict[str, Any]]:
    """The per-α errors of every (method, family) of the run at ``root``, with the IoU matrix and sample ids."""
    grids = run_alphas(_run_info(root))
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
    rows = query_rows(root, f"SELECT method, sample_id, {', '.join(cols)} FROM metrics WHERE {where} "
                      "ORDER BY method, index", params)
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
            best = _best(err)
            out.append({"method": name, "family": family, "samples": len(ious), "video": video,
                        "alphas": alphas, "error": err, "best_alpha": alphas[best], "best_error": err[best],
                        "ious": ious, "ids": [str(r["sample_id"]) for r in mine]})
    return out
