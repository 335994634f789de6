"""Ground truth on the embedded video data: the default small 3-D CNN trains to >= 95 % on testlist01, and the
same test clips frozen (the middle frame repeated 16 times) score near chance: no single frame decides a class.
About 3-4 min on 2 cores (generation ~1 min, decoding ~20 s, training ~2 min)."""

from __future__ import annotations

import pytest
import torch

from xcore.data import generate_videos
from xcore.data.synthetic_videos import CLASSES
from xcore.models import load_checkpoint, train_video
from xcore.models.train_video import VIDEO_DEFAULTS, freeze_frames

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("video-gt")
    root = generate_videos(tmp / "ucf")
    meta = train_video(root, tmp / "small3d.pt")
    return {"meta": meta, "root": root, "path": tmp / "small3d.pt"}


def test_default_small3d_reaches_95_percent(trained: dict) -> None:
    meta = trained["meta"]
    assert meta["val_accuracy"] >= 0.95, meta
    assert meta["arch"] == "small3d" and meta["arch_kwargs"] == VIDEO_DEFAULTS
    assert meta["dataset_kind"] == "ucf101" and meta["clip_len"] == 16 and meta["classes"] == list(CLASSES)
    assert meta["train"]["skipped"] == 0 and meta["train"]["n_val"] == 7 * 6 * 6


def test_freeze_frame_clips_score_near_chance(trained: dict) -> None:
    """Chance is 1/6; the bound leaves room for a model that guesses unevenly on motionless clips."""
    assert trained["meta"]["freeze_frame_accuracy"] < 0.4, trained["meta"]


def test_checkpoint_reloads_and_reproduces_the_accuracy(trained: dict) -> None:
    """The pipeline's path: the reader with the checkpoint's preset, the saved weights, the same accuracy."""
    from xcore.datasets import DATASETS, open_dataset

    model, meta = load_checkpoint(trained["path"])
    ds = open_dataset("ucf101", trained["root"], "test", **DATASETS.get("ucf101").options(meta))
    xs = torch.stack([ds.load(i).x for i in range(len(ds))])
    ys = torch.tensor([ds.label(i) for i in range(len(ds))])
    with torch.no_grad():
        acc = float((model(xs).argmax(1) == ys).float().mean())
        frozen = float((model(freeze_frames(xs)).argmax(1) == ys).float().mean())
    assert acc == pytest.approx(meta["val_accuracy"], abs=0.01)
    assert frozen == pytest.approx(meta["freeze_frame_accuracy"], abs=0.01)


def test_discriminative_temporal_relevance_lies_on_the_mover(trained: dict) -> None:
    """Acceptance (Hiley et al., §3.2): on the trained model the temporal part of discriminative LRP relevance lies
    mostly inside the mover's boxes, the spatial part mostly outside (on static content); the mover's boxes hold
    ~2 % of the voxels. Measured on all 252 test clips: temporal 0.72, full 0.53, spatial 0.16."""
    import numpy as np

    import xcore.explain as E
    from xcore.analysis.video import mass_in_boxes
    from xcore.datasets import DATASETS, open_dataset
    from xcore.explain.discriminative import freeze_clips

    model, meta = load_checkpoint(trained["path"])
    ds = open_dataset("ucf101", trained["root"], "test", **DATASETS.get("ucf101").options(meta))
    samples = [ds.load(i) for i in range(0, len(ds), 11)]
    x = torch.stack([s.x for s in samples])
    expl = E.run("discriminative", model, x, parts=True)
    share = {part: float(np.nanmean([mass_in_boxes(m[i].numpy(), s.meta["boxes"]) for i, s in enumerate(samples)]))
             for part, m in expl.maps.items()}
    assert share["temporal"] > 0.5 and share["spatial"] < 0.3 and share["temporal"] > share["full"], share
    T = x.shape[2]
    with torch.no_grad():  # rows j·B + b: frame j of sample b
        frozen = model(freeze_clips(x[:2], range(T))).argmax(1).reshape(T, 2).T.float()
    assert torch.equal(expl.extras["freeze_preds"][:2], frozen)
