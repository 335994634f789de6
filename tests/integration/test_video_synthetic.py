"""The synthetic UCF-101-style videos: real layout and formats, boxes on the mover, motion-only classes, seeding,
freeze-frame clips. A tiny set (1 test group, 1 train group, 16-20 frames) keeps this to seconds."""

from __future__ import annotations

import json
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch

from xcore.data import UCF101Reader, default_video_root, generate_videos
from xcore.data.synthetic_videos import CLASSES, VISIBLE, centre_region, py2_pickle, render_video, trajectory
from xcore.data.ucf24 import load_ucf24
from xcore.data.video_decode import read_clip
from xcore.data.video_transforms import video_preset
from xcore.errors import UsageError
from xcore.models.train_video import freeze_frames, jitter

FRAMES = (24, 26)  # a train clip takes 16 + 8 (temporal jitter) frames


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_videos(tmp_path_factory.mktemp("ucf") / "ucf", seed=3, train_groups=1, test_groups=1, clips=1,
                           frames=FRAMES)


def test_real_layout_and_crlf_lists(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_bytes() == b"".join(f"{i + 1} {c}\r\n".encode()
                                                            for i, c in enumerate(CLASSES))
    train = (lists / "trainlist01.txt").read_bytes()
    test = (lists / "testlist01.txt").read_bytes()
    assert train.count(b"\r\n") == train.count(b"\n") == 6 and test.count(b"\r\n") == 6
    assert train.splitlines()[0] == b"SlideRight/v_SlideRight_g08_c01.avi 1"  # train groups start at 08
    assert test.splitlines()[5] == b"CircleAnticlockwise/v_CircleAnticlockwise_g01_c01.avi"  # no label
    avis = sorted(p.relative_to(root).as_posix() for p in (root / "UCF-101").rglob("*.avi"))
    assert len(avis) == 12 and "UCF-101/SlideUp/v_SlideUp_g01_c01.avi" in avis
    truth = json.loads((root / "xcore_ground_truth.json").read_text())
    assert truth["classes"] == list(CLASSES) and set(truth["deciding"]) == set(CLASSES)
    assert len(truth["videos"]) == 12


def test_reader_labels_and_pickle_format(root: Path) -> None:
    test, train = UCF101Reader(root, "test"), UCF101Reader(root, "train")
    assert test.classes == list(CLASSES) and len(test) == len(train) == 6
    assert [test.label(i) for i in range(6)] == [train.label(i) for i in range(6)] == list(range(6))
    ann = load_ucf24(root / "pyannot.pkl")  # the restricted unpickler: only numpy globals inside
    assert ann.classes == list(CLASSES) and len(ann.train) == 6 and len(ann.test) == 6
    ops = {op.name for op, _, _ in pickletools.genops((root / "pyannot.pkl").read_bytes())}
    assert "SHORT_BINBYTES" not in ops and "BINBYTES" not in ops  # Python 2 byte strings, as the real file
    raw = pickle.loads((root / "pyannot.pkl").read_bytes(), encoding="latin1")
    tube = raw["db"]["SlideRight/v_SlideRight_g01_c01"]["annotations"][0]
    assert tube["boxes"].dtype in (np.uint8, np.uint16) and tube["ef"] - tube["sf"] == len(tube["boxes"])


def test_py2_pickle_round_trip_keeps_uint16_boxes(tmp_path: Path) -> None:
    boxes = np.array([[300, 10, 20, 20], [1, 2, 3, 4]], np.uint16)
    path = tmp_path / "p.pkl"
    path.write_bytes(py2_pickle({"db": {"A/v_A_g01_c01": {"label": 0, "numf": np.uint8(9), "annotations": [
        {"label": 0, "sf": 2, "ef": 4, "boxes": boxes}]}}, "trainvideos": [], "classes": ["A"]}))
    video = load_ucf24(path).videos["A/v_A_g01_c01"]
    assert video.boxes_at(2) == [[300.0, 10.0, 320.0, 30.0]] and video.boxes_at(3) == [[1.0, 2.0, 4.0, 6.0]]
    assert video.boxes_at(1) == [] and video.n_frames == 9


def test_boxes_land_on_the_mover_in_the_decoded_frames(root: Path) -> None:
    """Inside every tube box the decoded pixels are the mover's colour, not the background's (the same pixels'
    median over the video); slides' boxes move in the class direction."""
    truth = json.loads((root / "xcore_ground_truth.json").read_text())["videos"]
    ann = load_ucf24(root / "pyannot.pkl").videos
    checked = 0
    for key, video in ann.items():
        info = truth[key]
        frames = read_clip(root / "UCF-101" / f"{key}.avi", range(video.n_frames), backend="pyav").astype(float)
        color = np.array(info["mover"]["color"], np.float64)
        (tube,) = video.tubes
        assert tube.label == info["label"] == CLASSES.index(key.split("/")[0])
        hits = []
        for t, (x1, y1, x2, y2) in zip(tube.frames, tube.boxes.astype(int), strict=True):
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            if info["mover"]["shape"] == "ring":  # hollow: look at the ring's left side instead
                cx = x1 + 2
            patch = np.s_[cy - 1:cy + 2, cx - 1:cx + 2]
            inside = frames[t][patch].reshape(-1, 3).mean(0)
            background = np.median(frames[(slice(None), *patch)].reshape(len(frames), -1, 3).mean(1), axis=0)
            hits.append(np.abs(inside - color).sum() < np.abs(inside - background).sum())
        if info["occluder"] is None:  # a bar may hide the mover on some frames
            assert np.mean(hits) >= 0.8, (key, hits)  # a wrong frame base or box layout gives ~0
            checked += 1
        centres = (tube.boxes[:, :2] + tube.boxes[:, 2:]) / 2
        step = centres[-1] - centres[0]
        direction = {0: (1, 0), 1: (-1, 0), 2: (0, -1), 3: (0, 1)}.get(info["label"])
        if direction is not None and len(centres) == video.n_frames:  # a slide that stays in the frame
            assert np.dot(step, direction) > 0.8 * np.linalg.norm(step) > 0
    assert checked >= 6


@pytest.mark.parametrize("label", range(6))
def test_trajectories_decide_the_class_only_through_motion(label: int) -> None:
    """The centre-frame position is uniform on the same rectangle for all classes; slides are straight lines in
    the class direction and circles turn the class's way (cross product sign, y pointing down)."""
    x1, y1, x2, y2 = centre_region()
    centre = []
    for k in range(200):
        path, motion = trajectory(label, 33, np.random.default_rng([11, k]))
        centre.append(path[16])
        v = np.diff(path, axis=0)
        if label < 4:
            assert np.allclose(v, v[0]) and np.allclose(v[0] / np.linalg.norm(v[0]), motion["direction"])
        else:
            turn = v[:-1, 0] * v[1:, 1] - v[:-1, 1] * v[1:, 0]  # > 0: clockwise on screen (y down)
            assert np.all(np.sign(turn) == (1 if label == 4 else -1))
    centre = np.array(centre)
    assert centre[:, 0].min() >= x1 and centre[:, 0].max() <= x2 and centre[:, 1].min() >= y1
    assert centre[:, 1].max() <= y2
    # the same uniform law for every class: mean near the rectangle's middle, spread near uniform's
    assert np.allclose(centre.mean(0), [(x1 + x2) / 2, (y1 + y2) / 2], atol=0.1 * (x2 - x1))
    assert np.allclose(centre.std(0), [(x2 - x1) / 12 ** 0.5, (y2 - y1) / 12 ** 0.5], rtol=0.2)


def test_seeded_and_idempotent(root: Path, tmp_path: Path) -> None:
    a, _, ta = render_video(3, 2, 1, 1, FRAMES)
    b, _, tb = render_video(3, 2, 1, 1, FRAMES)
    c, _, _ = render_video(4, 2, 1, 1, FRAMES)
    assert np.array_equal(a, b) and ta == tb and not np.array_equal(a[:, :, :], c[:, :, :len(a[0, 0])])
    before = (root / "UCF-101" / "SlideUp" / "v_SlideUp_g01_c01.avi").stat().st_mtime_ns
    assert generate_videos(root, seed=3, train_groups=1, test_groups=1, clips=1, frames=FRAMES) == root
    assert (root / "UCF-101" / "SlideUp" / "v_SlideUp_g01_c01.avi").stat().st_mtime_ns == before
    with pytest.raises(UsageError, match="other parameters"):
        generate_videos(root, seed=4, train_groups=1, test_groups=1, clips=1, frames=FRAMES)
    with pytest.raises(UsageError, match="test_groups"):
        generate_videos(tmp_path / "x", test_groups=8)
    again = generate_videos(tmp_path / "again", seed=3, train_groups=1, test_groups=1, clips=1, frames=FRAMES)
    key = "UCF-101/CircleClockwise/v_CircleClockwise_g08_c01.avi"
    assert np.array_equal(read_clip(again / key, range(24), backend="pyav"),
                          read_clip(root / key, range(24), backend="pyav"))
    assert (again / "pyannot.pkl").read_bytes() == (root / "pyannot.pkl").read_bytes()


def test_default_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCORE_VIDEO_DATA", raising=False)
    assert default_video_root() == Path(".xcore/data/ucf")
    monkeypatch.setenv("XCORE_VIDEO_DATA", "/d/v")
    assert default_video_root() == Path("/d/v")


def test_freeze_frames_repeat_the_middle_frame() -> None:
    x = torch.arange(2 * 3 * 16 * 2 * 2, dtype=torch.float32).reshape(2, 3, 16, 2, 2)
    f = freeze_frames(x)
    assert f.shape == x.shape
    for t in range(16):
        assert torch.equal(f[:, :, t], x[:, :, 8])
    assert torch.equal(freeze_frames(x[0]), f[0])  # a single (C, T, H, W) clip too


def test_jitter_takes_clip_windows_and_shifts() -> None:
    t = torch.arange(24, dtype=torch.float32)
    x = t.view(1, 1, 24, 1, 1).expand(4, 3, 24, 8, 8).contiguous()
    gen = torch.Generator().manual_seed(0)
    out = jitter(x.half(), gen, 16, 0)
    assert out.shape == (4, 3, 16, 8, 8) and out.dtype == torch.float32
    for clip in out:  # 16 consecutive frames of the same clip, in order
        frames = clip[0, :, 0, 0]
        assert torch.equal(frames, frames[0] + torch.arange(16.0)) and 0 <= frames[0] <= 8
    coloured = jitter(torch.arange(3.0).view(1, 3, 1, 1, 1).expand(64, 3, 16, 2, 2), gen, 16, 0, colours=True)
    orders = {tuple(clip[:, 0, 0, 0].tolist()) for clip in coloured}
    assert all(sorted(o) == [0.0, 1.0, 2.0] for o in orders) and len(orders) == 6  # all channel permutations
    img = torch.arange(64, dtype=torch.float32).view(1, 1, 1, 8, 8).expand(2, 3, 16, 8, 8)
    shifted = jitter(img, torch.Generator().manual_seed(1), 16, 2)
    inner = shifted[0, 0, 0, 2:6, 2:6]
    dy, dx = divmod(int(inner[0, 0] - img[0, 0, 0, 2, 2]), 8)  # a pure translation of at most 2 px
    assert abs(dx) <= 2 and abs(dy) <= 2
    assert torch.equal(inner, img[0, 0, 0, 2 + dy:6 + dy, 2 + dx:6 + dx])


def test_both_presets_keep_the_visible_part() -> None:
    """VISIBLE (where the centre clip's mover stays) lies inside the 112 and the 56 px centre crops."""
    for name in ("small", "kinetics"):
        geo = video_preset(name).geometry(320, 240)
        sx, sy = geo.scaled[0] / 320, geo.scaled[1] / 240
        assert geo.left / sx <= VISIBLE[0] and (geo.left + geo.size) / sx >= VISIBLE[2], name
        assert geo.top / sy <= VISIBLE[1] and (geo.top + geo.size) / sy >= VISIBLE[3], name
    small, kin = video_preset("small"), video_preset("kinetics")
    assert small.size == 56 and small.mean == kin.mean and small.std == kin.std


def test_cli_trains_the_video_model_and_filters_the_demo_methods(root: Path, tmp_path: Path) -> None:
    """``xai train --modality video`` writes a ucf101 checkpoint; the demo keeps the registered video methods."""
    from typer.testing import CliRunner

    import xcore.explain
    import xcore.metrics
    from flows.cli import app
    from xcore.datasets import modalities

    out = tmp_path / "v.pt"
    res = CliRunner().invoke(app, ["train", "--modality", "video", "--data", str(root), "--out", str(out),
                                   "--epochs", "1"])
    assert res.exit_code == 0, res.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["dataset_kind"], meta["preset"], meta["clip_len"], meta["arch"]) == ("ucf101", "small", 16,
                                                                                     "small3d")
    assert 0.0 <= meta["freeze_frame_accuracy"] <= 1.0 and meta["train"]["n_train"] == 6
    kind = modalities()["video"]
    assert kind.name == "ucf101" and kind.demo.model == ".xcore/models/small3d.pt" and kind.demo.split == "test"
    assert {"gradcam", "swag_v", "discriminative", "guided_backprop", "random"} <= set(kind.demo.methods)
    assert set(kind.demo.methods) <= set(xcore.explain.available())
    assert kind.demo.metrics == ("deletion_insertion", "weak_localisation")
    bad = CliRunner().invoke(app, ["train", "--modality", "audio"])
    assert bad.exit_code == 2 and "use image, skeleton or video" in bad.output
