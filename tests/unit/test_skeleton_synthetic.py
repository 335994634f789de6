"""The synthetic NTU RGB+D generator: real-format files, ground truth, determinism and idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xcore.data import synthetic_skeletons as syn
from xcore.data.ntu import (
    NTUReader,
    parse_name,
    parse_skeleton,
)
from xcore.errors import UsageError

# ---------------------------------------------------------------- synthetic skeletons

GEN = {"seed": 1, "subjects": 4, "cameras": 3, "replications": 2, "frames": (40, 48)}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.generate_skeletons(tmp_path_factory.mktemp("skel") / "ntu_synth", **GEN)


@pytest.fixture(scope="module")
def synth_frames(synth: Path) -> dict[str, list]:
    reader = NTUReader(synth, "all")
    return {reader.sample_id(i): parse_skeleton(reader.path(i)) for i in range(len(reader))}


def test_generated_layout_and_ground_truth(synth: Path) -> None:
    names = sorted(p.name for p in (synth / "nturgb+d_skeletons").iterdir())
    assert len(names) == 5 * 4 * 3 * 2
    assert names[0] == "S001C001P001R001A001.skeleton" and names[-1] == "S001C003P004R002A005.skeleton"
    assert (synth / "actions.txt").read_text().splitlines() == list(syn.CLASSES)
    truth = json.loads((synth / "xcore_ground_truth.json").read_text())
    assert truth == {"classes": list(syn.CLASSES),
                     "joints": {"0": [9, 10, 11, 23, 24], "1": [5, 6, 7, 21, 22], "2": [17, 18, 19],
                                "3": [13, 14, 15], "4": [j for j in range(25) if j not in (14, 15, 18, 19)]}}


def test_reader_reads_generated_data(synth: Path) -> None:
    reader = NTUReader(synth, "all")
    assert len(reader) == 120 and reader.classes == list(syn.CLASSES)
    assert [reader.label(i) for i in range(len(reader))] == \
        [parse_name(reader.sample_id(i))["action"] - 1 for i in range(len(reader))]
    for i in (0, 37, 119):
        s = reader.load(i)
        valid = s.meta["valid_frames"]
        assert s.x.shape == (3, 300, 25, 2) and 40 <= valid <= 48 and not s.x[:, valid:].any()
        body = s.x[:, :valid, :, 0]
        shown = body.abs().sum(dim=(0, 2)) > 0
        assert shown[-1] and 2.0 < body[2, shown].mean() < 4.5  # z about 3 m
        head_above_feet = body[1, shown][:, 3] - body[1, shown][:, [15, 19]].mean(dim=1)
        assert (head_above_feet > 0.9).all()  # a standing (or squatting) person, metres, y up
    val = NTUReader(synth, "xsub/val")
    assert {parse_name(val.sample_id(i))["subject"] for i in range(len(val))} == {3}
    xview = NTUReader(synth, "xview/val")
    assert len(xview) == 40 and {parse_name(xview.sample_id(i))["camera"] for i in range(40)} == {1}


def test_generated_files_fill_every_field(synth_frames: dict[str, list]) -> None:
    bodies = [b for frames in synth_frames.values() for f in frames for b in f]
    joints = np.stack([b.joints for b in bodies])
    assert ((joints[..., 3] > 0) & (joints[..., 3] < 512) & (joints[..., 4] > 0) & (joints[..., 4] < 424)).all()
    assert ((joints[..., 5] > 0) & (joints[..., 5] < 1920) & (joints[..., 6] > 0) & (joints[..., 6] < 1080)).all()
    norms = np.linalg.norm(joints[..., 7:11], axis=-1)
    assert np.allclose(norms[:, [3, 15, 19, 21, 22, 23, 24]], 0)
    assert np.allclose(np.delete(norms, [3, 15, 19, 21, 22, 23, 24], axis=1), 1, atol=1e-5)
    assert set(np.unique(joints[..., 11])) == {1.0, 2.0} and (joints[..., 11] == 2).mean() > 0.95
    assert all(b.body_id > 2**53 and b.tracking_state == 2 for b in bodies)
    assert all(abs(b.lean_x) < 0.3 and abs(b.lean_y) < 0.5 for b in bodies)


def test_generated_bystanders_and_empty_frames(synth_frames: dict[str, list]) -> None:
    two = {n: f for n, f in synth_frames.items() if max(len(b) for b in f) == 2}
    assert 0 < len(two) < 0.3 * len(synth_frames) and len(two) % 3 == 0  # per performance: all 3 cameras
    for frames in two.values():
        ids = {b.body_id for f in frames for b in f}
        assert len(ids) == 2 and max(ids) >= syn.BYSTANDER_BODY_ID > min(ids) > 2**56
        assert all(f[0].body_id == min(ids) for f in frames if f)  # the performer is always slot 0
    empty = {n: next(t for t, f in enumerate(frames) if f) for n, frames in synth_frames.items() if not frames[0]}
    assert 0 < len(empty) < 0.15 * len(synth_frames) and set(empty.values()) <= {1, 2, 3}
    assert all(all(f) for n, frames in synth_frames.items() for f in frames[empty.get(n, 0):])


def _main_positions(frames: list) -> np.ndarray:
    """(T, 25, 3) of the performer (slot 0) over the frames that show a body."""
    return np.stack([f[0].joints[:, :3] for f in frames if f])


def test_deciding_joints_move_most(synth: Path, synth_frames: dict[str, list]) -> None:
    truth = json.loads((synth / "xcore_ground_truth.json").read_text())["joints"]
    per_class: dict[int, list[np.ndarray]] = {c: [] for c in range(5)}
    for name, frames in synth_frames.items():
        per_class[parse_name(name)["action"] - 1].append(_main_positions(frames).var(axis=0).sum(axis=-1))
    for c, variances in per_class.items():
        v = np.mean(variances, axis=0)
        deciding = truth[str(c)]
        top = np.argsort(-v)[:len(deciding)]
        assert sorted(top.tolist()) == sorted(deciding), (c, np.round(v, 4))
        assert v[deciding].min() > 5 * np.delete(v, deciding).max(), (c, np.round(v, 4))


def test_cameras_view_one_performance_from_three_angles(synth_frames: dict[str, list]) -> None:
    for key in ("P001R001A001", "P002R002A003", "P004R001A005"):
        views = {c: _main_positions(synth_frames[f"S001C{c:03d}{key}"]) for c in (1, 2, 3)}
        assert len({len(synth_frames[f"S001C{c:03d}{key}"]) for c in (1, 2, 3)}) == 1  # same frame count
        for cam, degrees in syn.CAMERA_DEGREES.items():
            hips = views[cam][:, 16] - views[cam][:, 12]  # left hip -> right hip (hips never swing)
            angle = np.degrees(np.arctan2(hips[:, 2], hips[:, 0])).mean()
            assert abs(-angle - degrees) < 8, (key, cam, angle)


def test_generate_is_idempotent_and_deterministic(synth: Path, tmp_path: Path) -> None:
    marker = synth / ".complete"
    before = {p: p.stat().st_mtime_ns for p in (marker, synth / "nturgb+d_skeletons" / "S001C001P001R001A001.skeleton")}
    assert syn.generate_skeletons(synth, **GEN) == synth
    assert {p: p.stat().st_mtime_ns for p in before} == before
    with pytest.raises(UsageError, match="other parameters"):
        syn.generate_skeletons(synth, **{**GEN, "seed": 2})
    small = {**GEN, "subjects": 1, "replications": 1}
    a = syn.generate_skeletons(tmp_path / "a", **small)
    b = syn.generate_skeletons(tmp_path / "b", **small)
    files = sorted((a / "nturgb+d_skeletons").iterdir())
    assert len(files) == 15 and not list(a.glob(".*tmp*"))
    assert all(f.read_bytes() == (b / "nturgb+d_skeletons" / f.name).read_bytes() for f in files)
    assert files[0].read_bytes() == (synth / "nturgb+d_skeletons" / files[0].name).read_bytes()  # P001 alone
    syn.generate_skeletons(a, **{**small, "seed": 5}, force=True)
    assert files[0].read_bytes() != (b / "nturgb+d_skeletons" / files[0].name).read_bytes()
    assert json.loads((a / ".complete").read_text())["seed"] == 5
