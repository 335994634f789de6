"""Skeleton analyses over a run's tables (Das, Ortega, *Gradient-weighted Class Activation Mapping for Spatio
Temporal Graph Convolutional Network*: eq 6 in §2.2, eq 7 and contrastivity in §3.2).

- Joint importance (eq 6): ``ψ^C_n = (1/M^C) Σ_{m ∈ correct(C)} (1/T^C_m) Σ_t H(n, t)`` over the correctly
  classified samples of class C, each heatmap averaged over the sample's valid frames at the layer's
  resolution (``ceil(T_valid / s)`` cells of s input frames), then min–max normalised over joints to [0, 1].
- ``β_faithful = Σ_i m_i |α_0 − α_{m_i}| / α_0`` from the ``node_masking`` metric's per-sample predictions
  (α = accuracy against the label), for important and for unimportant masking.
- ``β_contrast = 1 − mean_{C ≠ C'} Pearson(ψ^C, ψ^{C'})``.

Everything reads the committed Parquet shards through DuckDB, so the result does not depend on how many actors
wrote them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xcore.io.parquet import decode_heatmap
from xcore.io.query import connect

DEFAULT_FRACTIONS = (0.1, 0.5, 0.9)


def query_rows(run_dir: Path | str, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    con = connect(run_dir)
    try:
        rel = con.execute(sql, params)
        cols = [d[0] for d in rel.description or []]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    finally:
        con.close()


def time_average(heatmap: np.ndarray, native_frames: int, valid_frames: int | None) -> np.ndarray:
    """(T, V) map -> (V,): mean over the frames covering the valid layer cells, ``min(T, ceil(T_valid/s)·s)``."""
    frames = heatmap.shape[0]
    if valid_frames is None:
        return heatmap.mean(axis=0)
    stride = frames / max(1, native_frames)
    used = min(frames, max(1, math.ceil(math.ceil(valid_frames / stride) * stride)))
    return heatmap[:used].mean(axis=0)


@dataclass(frozen=True)
class JointImportance:
    """ψ (classes × joints, rows min–max normalised; NaN for a class without correct samples) and counts M^C."""

    psi: np.ndarray
    raw: np.ndarray
    counts: np.ndarray


def joint_importance(run_dir: Path | str, method: str = "stg_gradcam", num_classes: int | None = None
                     ) -> JointImportance:
    """Eq 6 from the ``explanations`` table of ``method`` (correct predictions only)."""
    rows = query_rows(run_dir, "SELECT label, pred, meta, heatmap, scale, shape, dtype, native_shape "
                           "FROM explanations WHERE method = ? AND label = pred", [method])
    if not rows:
        raise ValueError(f"no correctly classified {method} explanations in {run_dir}")
    k = int(num_classes or max(r["label"] for r in rows) + 1)
    total: np.ndarray | None = None
    counts = np.zeros(k, dtype=np.int64)
    for r in rows:
        meta = json.loads(r["meta"] or "{}")
        heat = decode_heatmap(r)
        if heat.ndim == 3:  # a per-person-slot map (T, V, M), e.g. a generic baseline: the max over slots
            heat = heat.max(axis=-1)
        if total is None:
            total = np.zeros((k, heat.shape[1]))
        total[r["label"]] += time_average(heat, int(r["native_shape"][0]), meta.get("valid_frames"))
        counts[r["label"]] += 1
    assert total is not None
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = total / counts[:, None]
        lo, hi = raw.min(axis=1, keepdims=True), raw.max(axis=1, keepdims=True)
        psi = np.where(hi > lo, (raw - lo) / (hi - lo), 0.0)
    psi[counts == 0] = np.nan
    raw[counts == 0] = np.nan
    return JointImportance(psi, raw, counts)


def contrastivity(psi: np.ndarray) -> float:
    """``1 − mean Pearson(ψ^C, ψ^{C'})`` over ordered pairs of distinct classes with a finite ψ row."""
    rows = psi[np.isfinite(psi).all(axis=1)]
    if len(rows) < 2:
        raise ValueError("contrastivity needs at least two classes with a joint-importance map")
    corr = np.corrcoef(rows)
    off = ~np.eye(len(rows), dtype=bool)
    return float(1.0 - np.nan_to_num(corr[off]).mean())


def beta(alpha0: float, alphas: list[float], fractions: list[float]) -> float:
    """``Σ_i m_i |α_0 − α_{m_i}| / α_0`` (eq 7)."""
    return float(sum(m * abs(alpha0 - a) for m, a in zip(fractions, alphas, strict=True)) / alpha0)


def run_fractions(run_dir: Path | str) -> list[float]:
    """The ``node_masking`` fractions recorded in ``run.json`` (the defaults when absent)."""
    path = Path(run_dir) / "run.json"
    if path.is_file():
        metrics = json.loads(path.read_text()).get("resolved", {}).get("metrics", {})
        if "node_masking" in metrics:
            return [float(f) for f in metrics["node_masking"]["fractions"]]
    return list(DEFAULT_FRACTIONS)


def faithfulness(run_dir: Path | str, method: str = "stg_gradcam",
                 fractions: list[float] | None = None) -> dict[str, Any]:
    """Accuracy with no / important / unimportant masking at each fraction, and β_faithful for both."""
    rows = query_rows(run_dir, "SELECT label, pred, important_preds, unimportant_preds FROM metrics "
                           "WHERE method = ? AND status = 'ok'", [method])
    if not rows:
        raise ValueError(f"no node_masking rows for {method} in {run_dir}")
    fr = list(fractions or run_fractions(run_dir))
    label = np.array([r["label"] for r in rows])
    alpha0 = float((np.array([r["pred"] for r in rows]) == label).mean())
    out: dict[str, Any] = {"method": method, "samples": len(rows), "fractions": fr, "accuracy": alpha0}
    for kind in ("important", "unimportant"):
        preds = np.array([r[f"{kind}_preds"] for r in rows], dtype=np.int64)
        alphas = [float((preds[:, i] == label).mean()) for i in range(len(fr))]
        out[f"accuracy_{kind}"] = alphas
        out[f"beta_{kind}"] = beta(alpha0, alphas, fr) if alpha0 > 0 else float("nan")
    return out
