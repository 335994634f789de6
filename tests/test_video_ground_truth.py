"""Ground truth on the embedded video data: the default small 3-D CNN trains to >= 95 % on testlist01, and the
same test clips frozen (the middle frame repeated 16 times) score near chance: no single frame decides a class.
About 3-4 min on 2 cores (generation ~1 min, decoding ~20 s, training ~2 min)."""

from __future__ import annotations

import pytest
import torch

from xcore.data import generate_videos
from xcore.data.video_synthetic import CLASSES
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
    from xcore.data import open_dataset
    from xcore.pipeline.explain_job import reader_kwargs

    model, meta = load_checkpoint(trained["path"])
    ds = open_dataset("ucf101", trained["root"], "test", **reader_kwargs("ucf101", meta))
    xs = torch.stack([ds.load(i).x for i in range(len(ds))])
    ys = torch.tensor([ds.label(i) for i in range(len(ds))])
    with torch.no_grad():
        acc = float((model(xs).argmax(1) == ys).float().mean())
        frozen = float((model(freeze_frames(xs)).argmax(1) == ys).float().mean())
    assert acc == pytest.approx(meta["val_accuracy"], abs=0.01)
    assert frozen == pytest.approx(meta["freeze_frame_accuracy"], abs=0.01)
