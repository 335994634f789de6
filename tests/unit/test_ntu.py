"""NTU RGB+D skeletons: sample names and splits (docs/formats/ntu.md §1, §4), missing-skeleton lists (§3), joints
and edge lists (§5), the reader (ST-GCN preprocessing, §6) and the synthetic generator's refusal of foreign data.
The ``.skeleton`` parser is tested in ``test_ntu_skeleton.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ntu_fixture import fixture_text, write_file

from xcore.data import synthetic_skeletons as syn
from xcore.data.ntu import NTUReader, in_split, parse_name, read_missing
from xcore.data.ntu_joints import CENTER_JOINT, JOINT_NAMES, NTU_BONES, STGCN_EDGES
from xcore.data.ntu_skeleton import read_skeleton
from xcore.datasets import DATASETS
from xcore.errors import UsageError

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
        write_file(root / "nturgb+d_skeletons", fixture_text(), f"{n}.skeleton")
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
    write_file(tmp_path / "flat", fixture_text(), "S003C001P002R001A004.skeleton")
    reader = NTUReader(tmp_path / "flat", "all")
    assert len(reader) == 1 and reader.classes == ["A001", "A002", "A003", "A004"] and reader.label(0) == 3


def test_generate_refuses_foreign_data(tmp_path: Path) -> None:
    write_file(tmp_path / "real" / "nturgb+d_skeletons", fixture_text())
    with pytest.raises(UsageError, match="not a complete synthetic set"):
        syn.generate_skeletons(tmp_path / "real")
    with pytest.raises(UsageError, match="cameras"):
        syn.generate_skeletons(tmp_path / "x", cameras=4)
