"""Readers stay inside the dataset root (issue 12, finding 2; xcore/data/confine.py): per reader kind, a symbolic
link out of the root is refused without reading the file (its content never reaches the message), a valid file
outside is not loaded unless ``follow_links=True``, list entries that are absolute or climb out with ``..`` are
refused even then, list files and folders to list outside the root are a UsageError, and a link that stays inside
the root still works. ``load`` raising a ``load``-stage SampleError is what the worker records as one errors row."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from clip_fixture import frames
from ntu_fixture import fixture_text, write_file

from xcore.data import HMDB51Reader, ImageNetReader, KineticsReader, NTUReader, UCF101Reader, generate_images
from xcore.data.ntu import read_skeleton
from xcore.data.video_encode import write_video
from xcore.datasets import open_dataset
from xcore.errors import SampleError, UsageError

SECRET = "SECRET-7f3a9c"
PASSWD = f"root:x:0:0:{SECRET}:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"  # like /etc/passwd
RULE = "outside the dataset root"


def refused(call: Callable[[], object], *words: str) -> str:
    """``call()`` raises a load-stage SampleError naming the rule and ``words``, never the file's content."""
    with pytest.raises(SampleError) as info:
        call()
    msg = str(info.value)
    assert info.value.stage == "load" and RULE in msg and SECRET not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the dataset roots with a passwd-like secret in it."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "passwd").write_text(PASSWD)
    return out


# ------------------------------------------------------------------------------------------------ ImageNet

VAL3 = "ILSVRC2012_val_00000003"


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    root = generate_images(tmp_path / "shapes", n_train_per_class=1, n_val=2, size=32)
    with (root / "LOC_val_solution.csv").open("a") as f:
        f.write(f"{VAL3},n09000002 0 0 5 5\n")
    return root


def test_imagenet_symlinked_val_image_outside_root(shapes: Path, outside: Path) -> None:
    shutil.copy(shapes / "val" / "ILSVRC2012_val_00000001.JPEG", outside / "valid.JPEG")
    (shapes / "val" / f"{VAL3}.JPEG").symlink_to(outside / "valid.JPEG")
    ds = ImageNetReader(shapes, "val", size=32)
    assert ds.sample_id(2) == VAL3
    refused(lambda: ds.load(2), f"{VAL3}.JPEG", str(outside / "valid.JPEG"), "follow_links=true")
    assert ds.load(0).x.shape == (3, 32, 32)  # the others load
    linked = ImageNetReader(shapes, "val", size=32, follow_links=True).load(2)
    assert torch.equal(linked.x, ds.load(0).x)  # the same bytes as val image 1
    (shapes / "val" / f"{VAL3}.JPEG").unlink()
    (shapes / "val" / f"{VAL3}.JPEG").symlink_to(outside / "passwd")
    refused(lambda: ImageNetReader(shapes, "val", size=32).load(2), str(outside / "passwd"))


def test_imagenet_link_inside_root_loads(shapes: Path) -> None:
    train = shapes / "train" / "n09000002" / "n09000002_1.JPEG"
    (shapes / "val" / f"{VAL3}.JPEG").symlink_to(Path("..") / "train" / "n09000002" / train.name)
    sample = ImageNetReader(shapes, "val", size=32).load(2)
    direct = ImageNetReader(shapes, "train", size=32)
    k = [direct.path(i) for i in range(len(direct))].index(train)
    assert torch.equal(sample.x, direct.load(k).x) and sample.meta["path"] == str(shapes / "val" / f"{VAL3}.JPEG")


def test_imagenet_symlinked_class_folder_and_list_file(shapes: Path, outside: Path) -> None:
    shutil.move(shapes / "train" / "n09000005", outside / "n09000005")
    (shapes / "train" / "n09000005").symlink_to(outside / "n09000005", target_is_directory=True)
    with pytest.raises(UsageError, match=f"n09000005: a symbolic link leads to .*{RULE}"):
        ImageNetReader(shapes, "train")
    farm = ImageNetReader(shapes, "train", size=32, follow_links=True)
    assert len(farm) == 6 and farm.load(5).label == 5
    os.replace(shapes / "LOC_val_solution.csv", outside / "LOC_val_solution.csv")
    (shapes / "LOC_val_solution.csv").symlink_to(outside / "LOC_val_solution.csv")
    with pytest.raises(UsageError, match=f"LOC_val_solution.csv: a symbolic link leads to .*{RULE}"):
        ImageNetReader(shapes, "val")


def test_imagenet_list_entries_never_become_paths(shapes: Path, outside: Path) -> None:
    """Images are found by listing ``val/``: an id in LOC_val_solution.csv that climbs out names no file."""
    shutil.copy(shapes / "val" / "ILSVRC2012_val_00000001.JPEG", outside / "evil.JPEG")
    with (shapes / "LOC_val_solution.csv").open("a") as f:
        f.write(f"../../outside/evil,n09000001 0 0 5 5\n{outside / 'evil'},n09000001 0 0 5 5\n")
    ds = ImageNetReader(shapes, "val", size=32)
    assert [ds.sample_id(i) for i in range(len(ds))] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]


# ------------------------------------------------------------------------------------------------ NTU

A1, A2, A3 = "S001C001P001R001A001", "S001C001P002R001A002", "S001C001P003R001A003"


@pytest.fixture
def ntu(tmp_path: Path) -> Path:
    root = tmp_path / "ntu"
    write_file(root / "nturgb+d_skeletons", fixture_text(), f"{A1}.skeleton")
    return root


def test_ntu_symlinked_skeleton_outside_root(ntu: Path, outside: Path) -> None:
    folder = ntu / "nturgb+d_skeletons"
    (folder / f"{A2}.skeleton").symlink_to(outside / "passwd")  # the issue's /etc/passwd case
    write_file(outside, fixture_text(), "valid.skeleton")
    (folder / f"{A3}.skeleton").symlink_to(outside / "valid.skeleton")
    ds = NTUReader(ntu, "all")
    assert [ds.sample_id(i) for i in range(3)] == [A1, A2, A3]
    refused(lambda: ds.load(1), f"{A2}.skeleton", str(outside / "passwd"))
    refused(lambda: ds.load(2), f"{A3}.skeleton", "follow_links=true")
    assert ds.load(0).meta["valid_frames"] == 5
    farm = open_dataset("ntu", ntu, "all", follow_links=True)  # --reader follow_links=true reaches the reader
    assert torch.equal(farm.load(2).x[:, :5], torch.from_numpy(read_skeleton(outside / "valid.skeleton")))
    with pytest.raises(SampleError) as info:  # followed on request: a parse error, still no content quoted
        farm.load(1)
    assert info.value.stage == "load"


def test_ntu_link_inside_root_loads(ntu: Path) -> None:
    write_file(ntu / "elsewhere", fixture_text(), "real.skeleton")
    (ntu / "nturgb+d_skeletons" / f"{A2}.skeleton").symlink_to(Path("..") / "elsewhere" / "real.skeleton")
    ds = NTUReader(ntu, "all")
    assert torch.equal(ds.load(1).x, ds.load(0).x)


def test_ntu_list_file_and_folder_outside_root(ntu: Path, outside: Path, tmp_path: Path) -> None:
    (ntu / "actions.txt").symlink_to(outside / "passwd")
    with pytest.raises(UsageError, match=f"actions.txt: a symbolic link leads to .*{RULE}") as info:
        NTUReader(ntu, "all")
    assert SECRET not in str(info.value)
    (ntu / "actions.txt").unlink()
    farm = tmp_path / "farm"
    farm.mkdir()
    (farm / "nturgb+d_skeletons").symlink_to(ntu / "nturgb+d_skeletons", target_is_directory=True)
    with pytest.raises(UsageError, match=f"nturgb\\+d_skeletons: a symbolic link leads to .*{RULE}"):
        NTUReader(farm, "all")
    assert NTUReader(farm, "all", follow_links=True).load(0).meta["valid_frames"] == 5


# ------------------------------------------------------------------------------------------------ video

@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One valid 20-frame MPEG-4 .avi, copied wherever a test needs a decodable video."""
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.avi", frames(h=32, w=40))
    return path.read_bytes()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_ucf101_escapes(tmp_path: Path, outside: Path, clip: bytes) -> None:
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text(f"1 Basketball\n2 Biking\n3 ../../outside\n4 {outside}\n")
    (lists / "testlist01.txt").write_text(
        "Basketball/v_Basketball_g01_c01.avi\n"      # 0 a plain video
        "../../outside/v_Up_g01_c01.avi\n"           # 1 climbs out with .. (UCF-101/../../outside)
        f"{outside}/v_Abs_g01_c01.avi\n"             # 2 absolute
        "Biking/v_Biking_g01_c01.avi\n"              # 3 in a symlinked class folder outside the root
        "Basketball/v_Basketball_g02_c01.avi\n"      # 4 a symlinked file outside the root
        "Basketball/v_Basketball_g03_c01.avi\n")     # 5 a symlink inside the root
    videos = root / "UCF-101"
    _put(videos / "Basketball" / "v_Basketball_g01_c01.avi", clip)
    for name in ("v_Up_g01_c01.avi", "v_Abs_g01_c01.avi", "v_Basketball_g02_c01.avi", "Biking/v_Biking_g01_c01.avi"):
        _put(outside / name, clip)
    (videos / "Biking").symlink_to(outside / "Biking", target_is_directory=True)
    (videos / "Basketball" / "v_Basketball_g02_c01.avi").symlink_to(outside / "v_Basketball_g02_c01.avi")
    (videos / "Basketball" / "v_Basketball_g03_c01.avi").symlink_to("v_Basketball_g01_c01.avi")
    for make in (lambda: UCF101Reader(root, split="test"), lambda: UCF101Reader(root, split="test", follow_links=True)):
        ds = make()
        assert len(ds) == 6
        refused(lambda ds=ds: ds.load(1), "v_Up_g01_c01.avi", "climbs out with '..'")
        refused(lambda ds=ds: ds.load(2), "v_Abs_g01_c01.avi", "is an absolute path")
        assert ds.load(0).x.shape == (3, 16, 112, 112)
        assert torch.equal(ds.load(5).x, ds.load(0).x)
    ds = UCF101Reader(root, split="test")
    refused(lambda: ds.load(3), "v_Biking_g01_c01.avi", "follow_links=true")
    refused(lambda: ds.load(4), "v_Basketball_g02_c01.avi", str(outside / "v_Basketball_g02_c01.avi"))
    farm = UCF101Reader(root, split="test", follow_links=True)
    assert torch.equal(farm.load(3).x, farm.load(0).x) and torch.equal(farm.load(4).x, farm.load(0).x)
    os.replace(lists / "testlist01.txt", outside / "testlist01.txt")
    (lists / "testlist01.txt").symlink_to(outside / "testlist01.txt")
    with pytest.raises(UsageError, match=f"testlist01.txt: a symbolic link leads to .*{RULE}"):
        UCF101Reader(root, split="test")


def test_hmdb51_entries_that_climb_out(tmp_path: Path, outside: Path, clip: bytes) -> None:
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "brush_hair_test_split1.txt").write_text(
        f"a.avi 2\n../../outside/up.avi 2\n{outside / 'abs.avi'} 2\nb.avi 2\n")
    _put(root / "brush_hair" / "a.avi", clip)
    _put(outside / "up.avi", clip)
    _put(outside / "abs.avi", clip)
    _put(outside / "b.avi", clip)
    (root / "brush_hair" / "b.avi").symlink_to(outside / "b.avi")
    ds = HMDB51Reader(root, split="test")
    assert [ds.sample_id(i) for i in range(4)] == ["a", "up", "abs", "b"]
    assert ds.load(0).x.shape == (3, 16, 112, 112)
    refused(lambda: ds.load(1), "up.avi", "climbs out with '..'")
    refused(lambda: ds.load(2), "abs.avi", "is an absolute path")
    refused(lambda: ds.load(3), "b.avi", "follow_links=true")
    farm = HMDB51Reader(root, split="test", follow_links=True)
    refused(lambda: farm.load(1), "climbs out with '..'")
    assert torch.equal(farm.load(3).x, farm.load(0).x)


def test_kinetics_symlinked_clip_and_folder(tmp_path: Path, outside: Path, clip: bytes) -> None:
    root = tmp_path / "kinetics"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "val.csv").write_text("label,youtube_id,time_start,time_end\n"
                                                  "abseiling,aaaaaaaaaaa,0,10\nabseiling,bbbbbbbbbbb,0,10\n"
                                                  "zumba,ccccccccccc,0,10\n")
    _put(root / "val" / "abseiling" / "aaaaaaaaaaa_000000_000010.avi", clip)
    _put(outside / "b.avi", clip)
    (root / "val" / "abseiling" / "bbbbbbbbbbb_000000_000010.avi").symlink_to(outside / "b.avi")
    ds = KineticsReader(root, split="val")
    assert [ds.sample_id(i) for i in range(len(ds))] == ["aaaaaaaaaaa_000000_000010", "bbbbbbbbbbb_000000_000010"]
    refused(lambda: ds.load(1), "bbbbbbbbbbb_000000_000010.avi", "follow_links=true")
    farm = KineticsReader(root, split="val", follow_links=True)
    assert torch.equal(farm.load(1).x, farm.load(0).x)
    _put(outside / "zumba" / "ccccccccccc_000000_000010.avi", clip)
    (root / "val" / "zumba").symlink_to(outside / "zumba", target_is_directory=True)
    with pytest.raises(UsageError, match=f"zumba: a symbolic link leads to .*{RULE}"):
        KineticsReader(root, split="val")
    farm = KineticsReader(root, split="val", follow_links=True)
    assert len(farm) == 3 and torch.equal(farm.load(2).x, farm.load(0).x)
    (root / "val" / "loop").symlink_to(root / "val", target_is_directory=True)  # walked once, no endless loop
    assert len(KineticsReader(root, split="val", follow_links=True)) == 3

