"""The skeleton path end to end, in process: synthetic NTU files -> ST-GCN checkpoint -> explain job over several
shards -> ψ / faithfulness / contrastivity from the Parquet tables, equal to the same quantities computed directly;
a corrupt file becomes one ``errors`` row naming file and line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import xcore.explain as E
from tasks.driver import dispatch, plan
from tasks.executors import LocalExecutor
from xcore.analysis.joint_importance import beta, contrastivity, faithfulness, joint_importance
from xcore.analysis.skeleton_report import hit_rate, write_report
from xcore.data import NTUReader, generate_skeletons
from xcore.metrics.node_masking import node_masking
from xcore.models import build_model, save_checkpoint
from xcore.pipeline import open_job


@pytest.fixture(scope="module")
def skeleton_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("skeleton")
    root = generate_skeletons(tmp / "ntu", subjects=4, cameras=2, replications=1)
    victim = sorted((root / "nturgb+d_skeletons").glob("*P003*.skeleton"))[0]  # P003 is in xsub val
    lines = victim.read_text().splitlines()
    victim.write_text("\n".join(lines[:40]) + "\n")  # truncated mid-frame
    torch.manual_seed(0)
    model = build_model("stgcn", 5, width=0.125)
    with torch.no_grad():  # a deterministic, non-trivial head so predictions vary
        model.fcn.weight.normal_(0, 1.0)
    ckpt = save_checkpoint(tmp / "stgcn.pt", model.eval(), {
        "arch": "stgcn", "num_classes": 5, "classes": [str(c) for c in range(5)], "arch_kwargs": {"width": 0.125},
        "dataset_kind": "ntu", "max_frames": 64, "benchmark": "xsub", "input_size": [3, 64, 25, 2]})
    cfg = {"dataset": str(root), "model": str(ckpt), "out": str(tmp / "runs"), "shard_size": 3, "batch_size": 4,
           "methods": {"stg_gradcam": {}}, "metrics": {"node_masking": {}, "deletion_insertion": {}}}
    job = open_job("explain", cfg)
    todo, _ = plan(job)
    summaries, failed = dispatch(job, todo, LocalExecutor(job), backoff=0)
    job.reduce(summaries, failed)
    return {"job": job, "root": root, "victim": victim, "failed": failed}


def test_run_completes_with_one_error_row_for_the_corrupt_file(skeleton_run: dict) -> None:
    job = skeleton_run["job"]
    assert skeleton_run["failed"] == [] and job.config["dataset_kind"] == "ntu"
    assert job.config["split"] == "xsub/val" and len(job.shards()) > 1
    import duckdb

    con = duckdb.connect()
    errors = con.execute(f"SELECT sample_id, stage, message FROM '{job.run_dir}/errors/*.parquet'").fetchall()
    assert len(errors) == 1
    sample_id, stage, message = errors[0]
    assert sample_id == skeleton_run["victim"].stem and stage == "load"
    assert skeleton_run["victim"].name in message and ":" in message  # file and line


def _direct(job, root: Path) -> tuple[list, list]:
    """Maps and masking results computed in process, sample by sample (no tables)."""
    from xcore.models import load_checkpoint

    model, _ = load_checkpoint(job.config["model"])
    reader = NTUReader(root, "xsub/val", max_frames=64)
    rows, masks = [], []
    for i in range(len(reader)):
        try:
            s = reader.load(i)
        except Exception:
            continue
        x = s.x[None]
        with torch.no_grad():
            pred = int(model(x).argmax(1))
        hmap = E.run("stg_gradcam", model, x, [pred])[0]
        rows.append((s.label, pred, s.meta["valid_frames"], hmap.numpy()))
        masks.append((s.label, pred, node_masking(model, x, hmap[None], [pred])))
    return rows, masks


def test_joint_importance_and_faithfulness_from_tables_equal_direct_computation(skeleton_run: dict) -> None:
    job, root = skeleton_run["job"], skeleton_run["root"]
    rows, masks = _direct(job, root)
    ji = joint_importance(job.run_dir, "stg_gradcam", 5)
    total, count = np.zeros((5, 25)), np.zeros(5)
    for label, pred, valid, hmap in rows:
        if label == pred:  # eq 6: correct samples, valid frames at layer resolution (T' = T/4)
            used = min(64, math.ceil(valid / 4) * 4)
            total[label] += hmap[:used].mean(0)
            count[label] += 1
    assert count.sum() > 0 and (ji.counts == count).all()
    for c in np.flatnonzero(count):
        raw = total[c] / count[c]
        want = (raw - raw.min()) / (raw.max() - raw.min())
        np.testing.assert_allclose(ji.psi[c], want, atol=2e-3)  # float16 heatmap storage
    assert np.isnan(ji.psi[count == 0]).all()

    faith = faithfulness(job.run_dir, "stg_gradcam")
    labels = np.array([lab for lab, _, _ in masks])
    alpha0 = float((np.array([p for _, p, _ in masks]) == labels).mean())
    imp = np.array([m["important_preds"][0].numpy() for _, _, m in masks])
    alphas = [float((imp[:, i] == labels).mean()) for i in range(3)]
    assert faith["accuracy"] == pytest.approx(alpha0) and faith["accuracy_important"] == pytest.approx(alphas)
    if alpha0 > 0:
        assert faith["beta_important"] == pytest.approx(beta(alpha0, alphas, [0.1, 0.5, 0.9]))


def test_report_writes_json_and_figures(skeleton_run: dict) -> None:
    job = skeleton_run["job"]
    rep = write_report(job.run_dir, "stg_gradcam")
    path = Path(job.run_dir) / "analysis" / "skeleton_stg_gradcam.json"
    assert json.loads(path.read_text())["method"] == "stg_gradcam"
    assert all(Path(f).is_file() and Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in rep["figures"])
    assert "top5_hit_rate" in rep and rep["faithfulness"]["samples"] > 0


def test_beta_contrastivity_and_hit_rate_by_hand() -> None:
    """Table 1 xview row: α = 88.3, 88.1, 64.31, 14.82 -> β_faithful = 0.885 (Das & Ortega, eq 7, §3.2)."""
    assert beta(88.3, [88.1, 64.31, 14.82], [0.1, 0.5, 0.9]) == pytest.approx(0.8850, abs=1e-4)  # 78.147 / 88.3
    psi = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    # Pearson: (0,1) = -1, (0,2) = 1, (1,2) = -1 -> mean over ordered pairs = -1/3 -> 1 + 1/3
    assert contrastivity(psi) == pytest.approx(4 / 3)
    hits = hit_rate(np.array([[0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.0]]), {0: [0, 2, 6]}, k=3)
    assert hits["per_class"] == {"0": pytest.approx(2 / 3)}  # top-3 = {0, 2, 3} holds 2 of the 3 deciding joints
