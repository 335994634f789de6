"""NTU RGB+D skeletons: parser (formats.md 1.2), names and splits (1.1, 1.4), missing lists (1.3), the reader
(ST-GCN preprocessing, 2.1) and the synthetic skeleton generator with its ground truth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from xcore.data import synthetic_skeletons as syn
from xcore.data.ntu import (
    CENTER_JOINT,
    JOINT_NAMES,
    NTU_BONES,
    STGCN_EDGES,
    NTUReader,
    in_split,
    parse_name,
    parse_skeleton,
    read_missing,
    read_skeleton,
)
from xcore.datasets import DATASETS
from xcore.errors import SampleError, UsageError

ID_A, ID_B, ID_C = 72057594037931101, 72057594037931103, 72057594037927937  # all > 2**53
BODY_CODE = {ID_A: 1, ID_B: 2, ID_C: 3}
FIXTURE_FRAMES = [[], [ID_A], [ID_A, ID_B], [], [ID_B, ID_A, ID_C]]  # body order within each frame
NAME = "S001C001P001R001A001.skeleton"


def _joint_xyz(t: int, code: int, j: int) -> tuple[float, float, float]:
    """Joint j of body ``code`` in (1-based) frame t: binary fractions, exact in float32."""
    return 10 * t + 0.25 * j, code + 0.125 * j, 3.5 - 0.0625 * j


def fixture_text() -> str:
    """A hand-laid file in the real grammar with CRLF endings, odd spacing, zero-body frames and 3 bodies.

    Line map: 1 numFrames; 2 frame 1 (0 bodies); 3-30 frame 2; 31-85 frame 3 (line 32 body A info, 33 its
    numJoints, 34-58 its joints; 59 body B info, 60, 61-85); 86 frame 4 (0 bodies); 87-168 frame 5.
    """
    lines = [str(len(FIXTURE_FRAMES))]
    for t, ids in enumerate(FIXTURE_FRAMES, start=1):
        lines.append(str(len(ids)))
        for body_id in ids:
            lines += [f"{body_id} 0 1 1 1 1 0 0.02764709 0.05745083 2", "25"]
            for j in range(25):
                x, y, z = _joint_xyz(t, BODY_CODE[body_id], j)
                sep = "  " if j == 7 else " "  # a double space must not matter
                lines.append(f"{x!r}{sep}{y!r} {z!r} 277.419 191.8218 1036.233 519.1677 -0.2059419 0.05349901 "
                             f"0.9692109 -0.1239193 2 ")
    return "\r\n".join(lines) + "\r\n"


def _write(folder: Path, text: str, name: str = NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode())
    return path


@pytest.fixture
def fixture_file(tmp_path: Path) -> Path:
    return _write(tmp_path, fixture_text())


# ---------------------------------------------------------------- parser


def test_read_skeleton_exact_tensor(fixture_file: Path) -> None:
    lines = fixture_text().split("\r\n")  # the documented line map: 168 lines + the final CRLF
    assert len(lines) == 169 and lines[31].startswith(f"{ID_A} ") and lines[58].startswith(f"{ID_B} ")
    data = read_skeleton(fixture_file)
    assert data.dtype == np.float32 and data.shape == (3, 5, 25, 2)
    expected = np.zeros((3, 5, 25, 2), np.float32)
    for t, ids in enumerate(FIXTURE_FRAMES, start=1):
        for m, body_id in enumerate(ids[:2]):  # third body dropped
            for j in range(25):
                expected[:, t - 1, j, m] = _joint_xyz(t, BODY_CODE[body_id], j)
    np.testing.assert_array_equal(data, expected)
    # hand-computed spot checks: frame 3, body B (slot 1), joint 4; frame 5 slot 0 is B (order within frame)
    assert data[:, 2, 4, 1].tolist() == [31.0, 2.5, 3.25]
    assert data[:, 4, 0, 0].tolist() == [50.0, 2.0, 3.5] and data[:, 4, 24, 1].tolist() == [56.0, 4.0, 2.0]
    assert not data[:, 0].any() and not data[:, 3].any()  # zero-body frames stay zeros
    assert not data[:, 1, :, 1].any()  # one body: slot 1 empty
    three = read_skeleton(fixture_file, max_bodies=3)
    assert three.shape == (3, 5, 25, 3) and three[:, 4, 10, 2].tolist() == [52.5, 4.25, 2.875]
    np.testing.assert_array_equal(three[..., :2], data)


def test_parse_skeleton_keeps_exact_ids_and_fields(fixture_file: Path) -> None:
    frames = parse_skeleton(fixture_file)
    assert [[b.body_id for b in f] for f in frames] == FIXTURE_FRAMES
    assert float(ID_A) == float(ID_B) and ID_A != ID_B  # why bodyID must never be parsed as a float
    body = frames[2][1]
    assert type(body.body_id) is int and body.body_id == 72057594037931103
    assert (body.cliped_edges, body.hand_left_confidence, body.is_resticted, body.tracking_state) == (0, 1, 0, 2)
    assert (body.lean_x, body.lean_y) == (0.02764709, 0.05745083)
    assert body.joints.shape == (25, 12)
    assert body.joints[3].tolist() == [30.75, 2.375, 3.3125, 277.419, 191.8218, 1036.233, 519.1677, -0.2059419,
                                       0.05349901, 0.9692109, -0.1239193, 2.0]


Edit = Callable[[list[str]], list[str]]


def _bad(tmp_path: Path, edit: Edit) -> str:
    lines = edit(fixture_text().split("\r\n")[:-1])
    path = _write(tmp_path / "bad", "\r\n".join(lines) + "\r\n")
    with pytest.raises(SampleError) as err:
        read_skeleton(path)
    assert err.value.stage == "load"
    return str(err.value)


def _set(k: int, text: str) -> Edit:
    """Replace 1-based line ``k``."""

    def edit(lines: list[str]) -> list[str]:
        lines[k - 1] = text
        return lines

    return edit


def _field(k: int, index: int, token: str | None) -> Edit:
    """Replace (or, with ``None``, drop) field ``index`` of 1-based line ``k``."""

    def edit(lines: list[str]) -> list[str]:
        tokens = lines[k - 1].split()
        tokens[index:index + 1] = [] if token is None else [token]
        lines[k - 1] = " ".join(tokens)
        return lines

    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ls: ls[:57], f"{NAME}:58: unexpected end of file, expected joint line"),
    (lambda ls: ls[:30], f"{NAME}:31: unexpected end of file, expected numBodies line"),
    (_set(33, "24"), f"{NAME}:33: expected 25 joints, got 24"),
    (_field(57, 11, None), f"{NAME}:57: expected 12 joint fields, got 11"),
    (_field(40, 1, "abc"), f"{NAME}:40: joint field y is not float: 'abc'"),
    (_field(41, 11, "2.5"), f"{NAME}:41: joint field tracking_state is not int: '2.5'"),
    (_field(32, 0, "7.2e16"), f"{NAME}:32: body-info field body_id is not int: '7.2e16'"),
    (_set(59, f"{ID_B} 0 1 1 1 1 0 0.1 2"), f"{NAME}:59: expected 10 body-info fields, got 9"),
    (_set(31, "two"), f"{NAME}:31: numBodies is not an integer: 'two'"),
    (_set(40, "nan 1 3 277.419 191.8218 1036.233 519.1677 -0.2 0.05 0.97 -0.12 2"),
     f"{NAME}:40: non-finite joint coordinate"),
    (lambda ls: [*ls, "1"], f"{NAME}:169: unexpected content after the last of 5 frames"),
    (lambda ls: ["0"], f"{NAME}:1: zero frames"),
    (lambda ls: ["2", "0", "0"], f"{NAME}:1: no body in any frame"),
    (lambda ls: [], f"{NAME}:1: unexpected end of file, expected numFrames line"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, edit: Edit, message: str) -> None:
    assert _bad(tmp_path, edit) == message


def test_lf_trailing_blanks_and_unreadable_files(tmp_path: Path) -> None:
    path = _write(tmp_path, fixture_text().replace("\r\n", "\n") + "\n  \n")
    np.testing.assert_array_equal(read_skeleton(path), read_skeleton(_write(tmp_path / "b", fixture_text())))
    with pytest.raises(SampleError, match=r"S001C001P001R001A002\.skeleton: cannot read"):
        parse_skeleton(tmp_path / "S001C001P001R001A002.skeleton")


# ---------------------------------------------------------------- names, splits, lists, constants


def test_parse_name() -> None:
    want = {"setup": 1, "camera": 2, "subject": 3, "replication": 2, "action": 13}
    assert parse_name("S001C002P003R002A013.skeleton") == want
    assert parse_name("S001C002P003R002A013") == want
    assert parse_name(Path("/data/nturgb+d_skeletons/S001C002P003R002A013.skeleton")) == want
    assert parse_name("S032C003P106R001A120") == {"setup": 32, "camera": 3, "subject": 106, "replication": 1,
                                                  "action": 120}
    for bad in ("S001C002P003R002A13", "s001c002p003r002a013", "S001C002P003R002A013.txt", "", "x/S001C002"):
        with pytest.raises(ValueError, match="not an NTU sample name"):
            parse_name(bad)


@pytest.mark.parametrize(("name", "benchmark", "train"), [
    ("S001C001P001R001A001", "xsub", True), ("S001C001P003R001A001", "xsub", False),
    ("S005C002P038R002A060", "xsub", True), ("S005C002P040R002A060", "xsub", False),
    ("S001C001P001R001A001", "xview", False), ("S001C002P003R001A001", "xview", True),
    ("S001C003P003R001A001", "xview", True),
    ("S002C001P001R001A001", "xset120", True), ("S001C001P001R001A001", "xset120", False),
    ("S031C001P001R001A001", "xset120", False), ("S032C001P001R001A001", "xset120", True),
    ("S020C001P045R001A070", "xsub120", True), ("S020C001P045R001A070", "xsub", False),
    ("S020C001P044R001A070", "xsub120", False), ("S020C001P103R001A070", "xsub120", True),
    ("S020C001P001R001A070", "xsub120", True), ("S020C001P003R001A070", "xsub120", False),
])
def test_split_membership(name: str, benchmark: str, train: bool) -> None:
    assert in_split(name, benchmark, "train") is train
    assert in_split(name + ".skeleton", benchmark, "val") is not train


def test_in_split_rejects_unknown() -> None:
    with pytest.raises(UsageError, match="unknown NTU split"):
        in_split("S001C001P001R001A001", "xsub60", "train")
    with pytest.raises(UsageError, match="unknown NTU split"):
        in_split("S001C001P001R001A001", "xsub", "test")


OFFICIAL_HEADER = ('302 of the captured samples in the "NTU RGB+D" dataset have missing or incomplete skeleton '
                   "data.\r\nIf you are working on skeleton-based analysis, please ignore these files in your "
                   "training and testing procedures.\r\n\r\n")


def test_read_missing_skips_header(tmp_path: Path) -> None:
    path = tmp_path / "NTU_RGBD_samples_with_missing_skeletons.txt"
    path.write_bytes((OFFICIAL_HEADER + "S001C002P005R002A008\r\nS001C002P006R001A008 \r\n\r\n").encode())
    assert read_missing(path) == {"S001C002P005R002A008", "S001C002P006R001A008"}


def test_edge_lists_and_joints() -> None:
    assert len(STGCN_EDGES) == len(NTU_BONES) == 24 and len(set(STGCN_EDGES)) == 24
    assert STGCN_EDGES[:20] == NTU_BONES[:20]
    assert (0, 1) in STGCN_EDGES and (1, 20) in STGCN_EDGES and (19, 18) in STGCN_EDGES
    assert STGCN_EDGES[20:] == ((21, 22), (22, 7), (23, 24), (24, 11))
    assert NTU_BONES[20:] == ((21, 7), (22, 7), (23, 11), (24, 11))
    assert CENTER_JOINT == 20 and JOINT_NAMES[CENTER_JOINT] == "spine at shoulders"
    assert len(JOINT_NAMES) == 25 and JOINT_NAMES[0] == "base of spine" and JOINT_NAMES[24] == "right thumb"
    assert (JOINT_NAMES[11], JOINT_NAMES[13], JOINT_NAMES[21]) == ("right hand", "left knee", "tip of left hand")
    for edges in (STGCN_EDGES, NTU_BONES):  # a tree over the 25 joints
        seen = {0}
        for _ in range(25):
            seen |= {b for a, b in edges if a in seen} | {a for a, b in edges if b in seen}
        assert seen == set(range(25))


# ---------------------------------------------------------------- reader over hand-made roots

ROOT_NAMES = ("S001C001P001R001A001", "S001C002P003R001A002", "S002C003P045R002A010", "S001C002P005R002A008")


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    root = tmp_path / "ntu"
    for n in ROOT_NAMES:
        _write(root / "nturgb+d_skeletons", fixture_text(), f"{n}.skeleton")
    (root / "nturgb+d_skeletons" / "notes.txt").write_text("not a skeleton")
    (root / "NTU_RGBD_samples_with_missing_skeletons.txt").write_bytes(
        (OFFICIAL_HEADER + "S001C002P005R002A008\r\n").encode())
    return root


def _ids(reader: NTUReader) -> list[str]:
    return [reader.sample_id(i) for i in range(len(reader))]


def test_reader_splits_and_missing(small_root: Path) -> None:
    assert DATASETS.get("ntu").reader is NTUReader
    everything = NTUReader(small_root, "all")
    assert _ids(everything) == sorted(ROOT_NAMES[:3])  # missing removed
    assert everything.classes == [f"A{a:03d}" for a in range(1, 11)]
    assert [everything.label(i) for i in range(3)] == [0, 1, 9]
    sid = {s: _ids(NTUReader(small_root, s))
           for s in ("train", "xsub/val", "xview/train", "xview/val", "xsub120/train", "xset120/train")}
    assert sid["train"] == ["S001C001P001R001A001"]
    assert sid["xsub/val"] == ["S001C002P003R001A002", "S002C003P045R002A010"]
    assert sid["xview/train"] == ["S001C002P003R001A002", "S002C003P045R002A010"]
    assert sid["xview/val"] == ["S001C001P001R001A001"]
    assert sid["xsub120/train"] == ["S001C001P001R001A001", "S002C003P045R002A010"]
    assert sid["xset120/train"] == ["S002C003P045R002A010"]
    explicit = small_root / "other_missing.txt"
    explicit.write_text("S001C001P001R001A001\n")
    assert _ids(NTUReader(small_root, "all", missing=explicit)) == \
        ["S001C002P003R001A002", "S001C002P005R002A008", "S002C003P045R002A010"]


def test_reader_load_pads_and_truncates(small_root: Path) -> None:
    (small_root / "actions.txt").write_bytes("".join(f"action {k}\r\n" for k in range(1, 11)).encode())
    reader = NTUReader(small_root, "xview/val")
    assert reader.classes[0] == "action 1" and len(reader.classes) == 10
    sample = reader.load(0)
    assert sample.sample_id == "S001C001P001R001A001" and sample.label == 0
    assert sample.x.dtype == torch.float32 and sample.x.shape == (3, 300, 25, 2)
    expected = torch.from_numpy(read_skeleton(reader.path(0)))
    assert torch.equal(sample.x[:, :5], expected) and not sample.x[:, 5:].any()
    assert {k: sample.meta[k] for k in ("valid_frames", "setup", "camera", "subject", "replication", "bodies")} == \
        {"valid_frames": 5, "setup": 1, "camera": 1, "subject": 1, "replication": 1, "bodies": 3}
    short = NTUReader(small_root, "xview/val", max_frames=3, max_bodies=1).load(0)
    assert short.x.shape == (3, 3, 25, 1) and short.meta["valid_frames"] == 3
    assert torch.equal(short.x, expected[:, :3, :, :1])


def test_reader_usage_errors(small_root: Path, tmp_path: Path) -> None:
    for split in ("bogus", "xsub/test", "xsub60/train", "xsub/"):
        with pytest.raises(UsageError, match="unknown NTU split"):
            NTUReader(small_root, split)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"holds no NTU \.skeleton files"):
        NTUReader(tmp_path / "empty")
    with pytest.raises(UsageError, match="does not exist"):
        NTUReader(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="does not exist"):
        NTUReader(small_root, missing=tmp_path / "no_list.txt")
    (small_root / "actions.txt").write_text("one\ntwo\n")
    with pytest.raises(UsageError, match="names 2 actions but the files go up to A010"):
        NTUReader(small_root)


def test_reader_reads_files_in_root_itself(tmp_path: Path) -> None:
    _write(tmp_path / "flat", fixture_text(), "S003C001P002R001A004.skeleton")
    reader = NTUReader(tmp_path / "flat", "all")
    assert len(reader) == 1 and reader.classes == ["A001", "A002", "A003", "A004"] and reader.label(0) == 3


def test_generate_refuses_foreign_data(tmp_path: Path) -> None:
    _write(tmp_path / "real" / "nturgb+d_skeletons", fixture_text())
    with pytest.raises(UsageError, match="not a complete synthetic set"):
        syn.generate_skeletons(tmp_path / "real")
    with pytest.raises(UsageError, match="cameras"):
        syn.generate_skeletons(tmp_path / "x", cameras=4)
