"""The evaluation tables of ``xai summary`` / ``xai sanity`` (xcore.analysis.evaluation) equal hand computations on
committed runs written by the test: pointing accuracy per class vs pooled (all and difficult), seconds per
explanation, and predicted vs random-target deletion AUC over the samples both runs scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from xcore.analysis.evaluation import efficiency_rows, pointing_rows, random_target_rows
from xcore.core.shards import Shard
from xcore.io.query import connect
from xcore.io.runs import RunLayout


def _run(root: Path, rows: list[dict[str, Any]]) -> Path:
    """One committed shard of ``metrics`` rows (one file per method), as the explain job writes them."""
    layout, shard = RunLayout(root), Shard(0, 0, len(rows))
    files = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [{k: v for k, v in r.items() if k != "method"} for r in rows if r["method"] == method]
        files[layout.table_path("metrics", shard, method)] = pa.Table.from_pylist(mine)
    layout.write_shard(shard, "k", files, {})
    (root / "run.json").write_text(json.dumps({"run_key": "k"}))
    return root


def test_pointing_accuracy_mean_over_classes_and_pooled(tmp_path: Path) -> None:
    # class 0: 3 trials (2 hits; 1 difficult hit); class 1: 1 trial (miss, difficult); class 2: 4 trials, 4 hits
    spec = [(0, 1, False), (0, 1, True), (0, 0, False), (1, 0, True), (2, 1, False), (2, 1, False), (2, 1, False),
            (2, 1, True)]
    rows = [{"method": "gradcam", "sample_id": f"s{i}", "index": i, "label": c, "status": "ok",
             "pointing_hit": float(h), "meta": json.dumps({"difficult": d})} for i, (c, h, d) in enumerate(spec)]
    rows.append({"method": "gradcam", "sample_id": "bad", "index": 9, "label": 1, "status": "error",
                 "pointing_hit": None, "meta": "{}"})
    con = connect(_run(tmp_path, rows))
    (r,) = pointing_rows(con)
    assert r["n"] == 8 and r["n_difficult"] == 3
    assert r["mean_class"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    assert r["pooled"] == pytest.approx(100 * 6 / 8)
    assert r["mean_class_difficult"] == pytest.approx(100 * (1 + 0 + 1) / 3)
    assert r["pooled_difficult"] == pytest.approx(100 * 2 / 3)
    assert r["thesis"] == "53.47 / 49.40"


def test_seconds_per_explanation_and_per_metric(tmp_path: Path) -> None:
    rows = [{"method": m, "sample_id": f"s{i}", "index": i, "status": "ok", "explain_ms": ms, "explain_batch": b,
             "device": "cpu", "deletion_insertion_ms": 4 * ms}
            for i, (m, ms, b) in enumerate([("gradcam", 10.0, 4), ("gradcam", 30.0, 2), ("rise", 2000.0, 4)])]
    con = connect(_run(tmp_path, rows))
    got = {r["method"]: r for r in efficiency_rows(con)}
    assert got["gradcam"]["explain_s"] == pytest.approx(0.020)
    assert got["gradcam"]["deletion_insertion_s"] == pytest.approx(0.080)
    assert set(got["gradcam"]["batch"].split("/")) == {"2", "4"} and got["gradcam"]["device"] == "cpu"
    assert got["rise"]["explain_s"] == pytest.approx(2.0) and got["rise"]["thesis_s"] == "13.19-17.48 (T3.11)"


def test_random_target_table_pairs_the_samples_both_runs_scored(tmp_path: Path) -> None:
    def rows(aucs: dict[str, float | None]) -> list[dict[str, Any]]:
        return [{"method": "gradcam", "sample_id": s, "index": i, "status": "ok" if a is not None else "error",
                 "deletion_auc": a} for i, (s, a) in enumerate(aucs.items())]

    pred = _run(tmp_path / "pred", rows({"a": 0.1, "b": 0.2, "c": 0.3, "d": None}))
    rand = _run(tmp_path / "rand", rows({"a": 0.4, "b": None, "c": 0.5, "d": 0.9}))
    (r,) = random_target_rows(pred, rand)
    assert r["n"] == 2  # a and c only
    assert (r["deletion_pred"], r["deletion_random"]) == (pytest.approx(0.2), pytest.approx(0.45))
    assert r["random_minus_pred"] == pytest.approx(0.25)
