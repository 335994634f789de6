"""The video path end to end, in process: synthetic UCF-101-style videos -> 3-D CNN checkpoint -> explain job over
several shards with a multi-part method (discriminative), SWAG-V, deletion / insertion and weak localisation ->
Parquet rows equal to direct library calls; a truncated video becomes one ``errors`` row and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

import xcore.explain as E
from tasks.driver import dispatch, plan
from tasks.executors import LocalExecutor
from xcore.analysis.localisation import localisation_report
from xcore.analysis.video import box_mass_report, freeze_frame_report
from xcore.data import UCF101Reader, generate_videos
from xcore.data.video_transforms import video_preset
from xcore.io.parquet import decode_heatmap
from xcore.metrics.localisation import weak_localisation
from xcore.models import build_model, load_checkpoint, save_checkpoint
from xcore.pipeline import open_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("video")
    root = generate_videos(tmp / "ucf", train_groups=1, test_groups=1, clips=1, frames=(20, 24))
    reader = UCF101Reader(root, "test")
    victim = reader.path(2)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated mid-stream
    torch.manual_seed(0)
    model = build_model("small3d", 6, width=4)
    with torch.no_grad():  # a non-trivial head so predictions and maps vary
        model.classifier.weight.normal_(0, 1.0)
    ckpt = save_checkpoint(tmp / "small3d.pt", model.eval(), {
        "arch": "small3d", "num_classes": 6, "classes": reader.classes, "arch_kwargs": {"width": 4},
        "dataset_kind": "ucf101", "preset": "kinetics", "clip_len": 16, "input_size": [3, 16, 112, 112]})
    cfg = {"dataset": str(root), "model": str(ckpt), "out": str(tmp / "runs"), "split": "test", "shard_size": 2,
           "batch_size": 3, "target": "label",
           "methods": {"discriminative": {"base": "gradcam", "base_params": {"relu": False}}, "swag_v": {}},
           "metrics": {"deletion_insertion": {}, "weak_localisation": {}}}
    job = open_job("explain", cfg)
    todo, _ = plan(job)
    summaries, failed = dispatch(job, todo, LocalExecutor(job), backoff=0)
    job.reduce(summaries, failed)
    return {"job": job, "root": root, "victim": victim, "failed": failed, "n": len(reader)}


def _rows(run_dir: str, sql: str) -> list[dict]:
    con = duckdb.connect()
    try:
        rel = con.execute(sql.replace("{run}", run_dir))
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    finally:
        con.close()


def test_truncated_video_is_one_error_row_and_the_rest_completes(video_run: dict) -> None:
    job = video_run["job"]
    assert video_run["failed"] == [] and len(job.shards()) == 3
    errors = _rows(job.run_dir, "SELECT sample_id, stage FROM '{run}/errors/*.parquet'")
    assert errors == [{"sample_id": video_run["victim"].stem, "stage": "load"}]
    ok = _rows(job.run_dir, "SELECT method, count(*) AS n FROM '{run}/metrics/*/*.parquet' "
                            "WHERE status = 'ok' GROUP BY 1 ORDER BY 1")
    assert ok == [{"method": "discriminative", "n": video_run["n"] - 1}, {"method": "swag_v", "n": video_run["n"] - 1}]


def test_tables_equal_direct_calls(video_run: dict) -> None:
    """Every stored part, the freeze-frame extras and the localisation IoUs equal the library called directly."""
    job = video_run["job"]
    model, _ = load_checkpoint(job.config["model"])
    reader = UCF101Reader(video_run["root"], "test", transform=video_preset("kinetics"))
    expl = _rows(job.run_dir, "SELECT * FROM '{run}/explanations/*/*.parquet' WHERE method = 'discriminative'")
    mets = {r["index"]: r for r in _rows(job.run_dir, "SELECT * FROM '{run}/metrics/*/*.parquet' "
                                                      "WHERE method = 'discriminative'")}
    assert {r["part"] for r in expl} == {"temporal", "spatial", "full"}
    checked = 0
    for r in expl:
        if r["part"] != "temporal":
            continue
        s = reader.load(r["index"])
        assert r["target"] == s.label
        x = s.x[None]
        direct = E.run("discriminative", model, x, [s.label], parts=True, **job.methods["discriminative"])
        for part in ("temporal", "spatial", "full"):
            row = next(e for e in expl if e["index"] == r["index"] and e["part"] == part)
            np.testing.assert_allclose(decode_heatmap(row), direct.maps[part][0].numpy(), atol=2e-3)
        m = mets[r["index"]]
        assert m["freeze_preds"] == direct.extras["freeze_preds"][0].tolist()
        np.testing.assert_allclose(m["freeze_scores"], direct.extras["freeze_scores"][0].numpy(), rtol=1e-5)
        boxes = json.loads(m["meta"])["boxes"]
        assert boxes == s.meta["boxes"]
        loc = weak_localisation(model, x, direct.maps["temporal"], boxes=[boxes])
        np.testing.assert_allclose(m["loc_energy_iou"], loc["loc_energy_iou"][0].numpy(), rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked == video_run["n"] - 1


def test_reports_read_the_tables(video_run: dict) -> None:
    run_dir = video_run["job"].run_dir
    parts = box_mass_report(run_dir, "discriminative")
    assert set(parts) == {"temporal", "spatial", "full"} and all(p["clips"] == video_run["n"] - 1
                                                                   for p in parts.values())
    assert 0.0 < parts["full"]["chance"] < 1.0
    freeze = freeze_frame_report(run_dir)
    assert freeze["clips"] == video_run["n"] - 1 and 0.0 <= freeze["freeze_accuracy"] <= 1.0
    rep = {(r["method"], r["family"]): r for r in localisation_report(run_dir)}
    assert rep[("swag_v", "energy")]["samples"] == video_run["n"] - 1
    assert rep[("swag_v", "energy")]["best_error"] == min(rep[("swag_v", "energy")]["error"])


def test_video_report_file_matches_the_rows(video_run: dict) -> None:
    from xcore.analysis.video import write_video_report

    run_dir = video_run["job"].run_dir
    rep = write_video_report(run_dir)
    assert json.loads((Path(run_dir) / "analysis" / "video.json").read_text()) == json.loads(json.dumps(rep))
    table = {r["method"]: r for r in rep["methods"]}
    mean = _rows(run_dir, "SELECT avg(deletion_auc) AS d FROM '{run}/metrics/*/*.parquet' "
                          "WHERE method = 'swag_v' AND status = 'ok'")[0]["d"]
    assert table["swag_v"]["deletion_auc"] == pytest.approx(mean)
    assert "loc_energy_error" in table["swag_v"] and set(rep["freeze_frames"]) == {"discriminative"}
    assert set(rep["mass_in_boxes"]["discriminative"]) == {"temporal", "spatial", "full"}
