"""BAM's model contrast score on the synthetic BAM: both models learn their labels, and Grad-CAM's object-region
attribution is higher for the object model than for the scene model (MCS > 0), above the random baseline's.

Thesis §3.5.4, eqs 3.7–3.9 (Table 3.12: Grad-CAM .312, guided backpropagation .044 on ResNet50).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import xcore.explain as E
from xcore.data.bam import BAMReader
from xcore.data.synthetic_bam import generate_bam
from xcore.datasets import open_dataset
from xcore.datasets.bam import bam_options
from xcore.metrics.bam import bam_attribution, model_contrast
from xcore.models import load_checkpoint
from xcore.models.train_bam import train_bam

pytestmark = pytest.mark.slow
METHODS = ("gradcam", "random", "gradient", "guided_backprop")


@pytest.fixture(scope="module")
def bam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The default synthetic BAM, the object and scene models (seed 0, one thread) and their val batches."""
    base = tmp_path_factory.mktemp("bam")
    root = generate_bam(base / "data")
    out: dict[str, Any] = {"root": root}
    for labels in ("obj", "scene"):
        train_bam(root, base / f"{labels}.pt", labels=labels, seed=0, num_threads=1)
        model, meta = load_checkpoint(base / f"{labels}.pt")
        ds = open_dataset("bam", root, "val", **bam_options(meta))
        assert isinstance(ds, BAMReader) and ds.labels == labels
        samples = [ds.load(i) for i in range(len(ds))]
        x = torch.stack([s.x for s in samples])
        with torch.no_grad():
            pred = model(x).argmax(1)
        out[labels] = {"meta": meta, "model": model, "x": x, "pred": pred, "samples": samples,
                       "path": base / f"{labels}.pt"}
    return out


def _rows(run: dict[str, Any], method: str) -> list[dict[str, Any]]:
    """One row per val image: its label, the prediction and the object region's attribution for ``method``."""
    x, pred, samples = run["x"], run["pred"], run["samples"]
    maps = E.run(method, run["model"], x, pred.tolist(), **({"seeds": list(range(len(x)))} if method == "random"
                                                            else {}))
    g = bam_attribution(run["model"], x, maps, region=[s.meta["region"] for s in samples])["region_attribution"]
    return [{"sample_id": s.sample_id, "label": s.label, "pred": int(p), "region_attribution": float(v)}
            for s, p, v in zip(samples, pred, g, strict=True)]


def test_both_models_learn_their_labels(bam: dict[str, Any]) -> None:
    for labels in ("obj", "scene"):
        meta = bam[labels]["meta"]
        assert meta["bam_labels"] == labels
        labels_t = torch.tensor([s.label for s in bam[labels]["samples"]])
        acc = (bam[labels]["pred"] == labels_t).float().mean().item()
        assert acc == pytest.approx(meta["val_accuracy"])
        assert acc >= 0.9, f"{labels} model val accuracy {acc:.2f}"


def test_gradcam_model_contrast_is_positive_and_beats_random(bam: dict[str, Any]) -> None:
    """Grad-CAM puts more of its (normalised) mass on the object when the object decides the class."""
    assert [s.sample_id for s in bam["obj"]["samples"]] == [s.sample_id for s in bam["scene"]["samples"]]
    scores = {m: model_contrast(_rows(bam["obj"], m), _rows(bam["scene"], m)) for m in METHODS}
    for m, s in scores.items():
        print(f"BAM {m}: MCS {s['MCS']:.4f} G_obj(f_o) {s['G_obj_object_model']:.4f} "
              f"G_obj(f_s) {s['G_obj_scene_model']:.4f} n {s['n']}")
    assert scores["gradcam"]["n"] >= 80
    assert scores["gradcam"]["MCS"] > 0
    assert scores["gradcam"]["MCS"] > scores["random"]["MCS"]
    # the same seeded random maps for both models: their difference is exactly 0
    assert scores["random"]["MCS"] == pytest.approx(0.0, abs=1e-12)



def test_xai_bam_from_two_runs_equals_the_library(bam: dict[str, Any], tmp_path) -> None:
    """``xai run`` of each model with the ``bam_attribution`` metric (the checkpoint names its dataset kind and
    labelling), then ``xai bam``: the same MCS as the library computation on the same maps."""
    from typer.testing import CliRunner

    from flows.cli import app
    from xcore.analysis.evaluation import model_contrast_rows

    for labels in ("obj", "scene"):
        res = CliRunner().invoke(app, ["run", "--dataset", str(bam["root"]), "--model", str(bam[labels]["path"]),
                                       "-m", "gradcam", "--metric", "bam_attribution", "--out", str(tmp_path),
                                       "--run-id", labels, "--executor", "local", "--batch-size", "50"])
        assert res.exit_code == 0, (res.stdout, res.stderr)
    (row,) = model_contrast_rows(tmp_path / "obj", tmp_path / "scene")
    want = model_contrast(_rows(bam["obj"], "gradcam"), _rows(bam["scene"], "gradcam"))
    assert row["n"] == want["n"] and row["MCS"] == pytest.approx(want["MCS"], abs=1e-6)
    res = CliRunner().invoke(app, ["bam", str(tmp_path / "obj"), str(tmp_path / "scene")])
    assert res.exit_code == 0 and "gradcam" in res.stdout
