"""The skeleton report of a run: ψ, faithfulness, contrastivity, the ground-truth hit rate and the figures.

Written next to the run under ``<run>/analysis/`` (JSON + PNG, atomically): ``skeleton_<method>.json``,
``joint_importance_<method>.png`` (the paper's Fig. 2) and ``skeleton_<method>_<class>.png`` (Fig. 1: one
correctly classified sample per class, node size by importance at four frames).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xcore.analysis.joint_importance import JointImportance, contrastivity, faithfulness, joint_importance, query_rows
from xcore.data.ntu_joints import JOINT_NAMES, NTU_BONES
from xcore.data.ntu_skeleton import read_skeleton
from xcore.io.parquet import decode_heatmap
from xcore.io.runs import write_json_atomic

GROUND_TRUTH = "xcore_ground_truth.json"


def hit_rate(psi: np.ndarray, truth: dict[int, list[int]], k: int = 5) -> dict[str, Any]:
    """Per class: the share of its deciding joints (at most ``k``) among the top-``k`` joints of ψ."""
    per_class: dict[str, float] = {}
    for c, joints in truth.items():
        if c < len(psi) and np.isfinite(psi[c]).all():
            top = set(np.argsort(-psi[c], kind="stable")[:k].tolist())
            per_class[str(c)] = len(top & set(joints)) / min(k, len(joints))
    return {"k": k, "per_class": per_class,
            "mean": float(np.mean(list(per_class.values()))) if per_class else float("nan")}


def _run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _skeleton_file(root: Path, sample_id: str) -> Path | None:
    for folder in (root, root / "nturgb+d_skeletons"):
        path = folder / f"{sample_id}.skeleton"
        if path.is_file():
            return path
    return None


def _figures(run_dir: Path, method: str, ji: JointImportance, classes: list[str], root: Path | None) -> list[str]:
    from xcore.viz import save_joint_importance, save_skeleton

    out = run_dir / "analysis"
    written = [str(save_joint_importance(out / f"joint_importance_{method}.png", ji.psi, classes, JOINT_NAMES))]
    if root is None:
        return written
    rows = query_rows(run_dir, "SELECT sample_id, label, meta, heatmap, scale, shape, dtype FROM explanations "
                           "WHERE method = ? AND label = pred ORDER BY label, sample_id", [method])
    seen: set[int] = set()
    for r in rows:
        path = _skeleton_file(root, r["sample_id"])
        if r["label"] in seen or path is None:
            continue
        seen.add(r["label"])
        coords = read_skeleton(path)[:, :, :, 0].transpose(1, 2, 0)  # (T, V, 3), first person
        heat = decode_heatmap(r)
        valid = int(json.loads(r["meta"] or "{}").get("valid_frames", coords.shape[0]))
        valid = min(valid, coords.shape[0], heat.shape[0])
        frames = sorted({int(f) for f in np.linspace(0, valid - 1, 4)})
        name = classes[r["label"]] if r["label"] < len(classes) else str(r["label"])
        written.append(str(save_skeleton(out / f"skeleton_{method}_{r['label']}.png", coords, heat, frames,
                                         NTU_BONES, title=f"{name} ({r['sample_id']}, {method})")))
    return written


def write_report(run_dir: Path | str, method: str = "stg_gradcam", *, figures: bool = True) -> dict[str, Any]:
    """Compute the report for ``method`` from the run's tables; write JSON (and PNGs) under ``analysis/``."""
    run_dir = Path(run_dir)
    info = _run_info(run_dir)
    model_meta = info.get("resolved", {}).get("model", {})
    classes = list(model_meta.get("classes") or [])
    ji = joint_importance(run_dir, method, len(classes) or None)
    classes = classes or [str(c) for c in range(len(ji.psi))]
    report: dict[str, Any] = {"method": method, "classes": classes, "joints": list(JOINT_NAMES),
                              "psi": np.where(np.isfinite(ji.psi), ji.psi, None).tolist(),
                              "correct_per_class": ji.counts.tolist()}
    finite = np.isfinite(ji.psi).all(axis=1).sum()
    report["contrastivity"] = contrastivity(ji.psi) if finite >= 2 else None
    try:
        report["faithfulness"] = faithfulness(run_dir, method)
    except Exception as err:  # no node_masking metric in this run
        report["faithfulness"] = None
        report["faithfulness_missing"] = str(err)
    root = Path(info["config"]["dataset"]) if info.get("config", {}).get("dataset") else None
    truth_path = root / GROUND_TRUTH if root is not None else None
    if truth_path is not None and truth_path.is_file():
        truth = {int(c): [int(j) for j in js] for c, js in json.loads(truth_path.read_text())["joints"].items()}
        report["top5_hit_rate"] = hit_rate(ji.psi, truth)
    if figures:
        report["figures"] = _figures(run_dir, method, ji, classes, root)
    write_json_atomic(run_dir / "analysis" / f"skeleton_{method}.json", report)
    return report
