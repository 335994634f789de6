"""Video data sets on disk: both UCF101-24 pickle layouts and the safe unpickler (docs/formats/ucf101-24.md), and the
UCF-101 / HMDB51 / Kinetics-400 readers (docs/formats/ucf101.md, hmdb51.md, kinetics400.md) over hand-made roots.
Decoding and clip sampling are tested in ``test_video_decode.py``, the presets in ``test_video_transforms.py``."""

from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
from clip_fixture import LEVEL0, STEP, N, frames

from xcore.core.presets import KINETICS_MEAN, KINETICS_STD
from xcore.data.ucf24 import load_ucf24, safe_load_pickle
from xcore.data.video_encode import write_video
from xcore.data.video_readers import HMDB51Reader, KineticsReader, UCF101Reader, clip_name
from xcore.data.video_transforms import video_preset
from xcore.datasets import DATASETS
from xcore.errors import SampleError, UsageError

# ------------------------------------------------------------------------------------------ UCF101-24 pickles

VIDEO_KEY = "Basketball/v_Basketball_g01_c01"


def py2_style(data: bytes) -> bytes:
    """A protocol-3 pickle made to look like the Python 2 files: byte strings as ``str`` and NumPy 1 module names."""
    out = bytearray(data)
    for op, _, pos in pickletools.genops(data):
        if op.name == "SHORT_BINBYTES":
            out[pos] = ord("U")  # SHORT_BINSTRING: decoded with encoding='latin1'
    return bytes(out).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def pyannot(wrapped: bool) -> dict:
    tube = {"label": 0, "sf": 3, "ef": 5, "boxes": np.array([[200, 100, 100, 50], [100, 20, 40, 40]], np.uint8)}
    db = {VIDEO_KEY: {"label": 0, "numf": np.uint8(20), "annotations": [tube]},
          "Biking/v_Biking_g01_c01": {"label": 2, "numf": np.uint16(300), "annotations": []}}
    return {"db": db, "trainvideos": ["Biking/v_Biking_g01_c01", "Gone/v_Gone_g01_c01"],
            "classes": ["Basketball", "BasketballDunk", "Biking"]} if wrapped else db


def gt_v2() -> dict:
    tube = np.array([[4, 200, 100, 300, 150], [5, 100, 20, 140, 60]], np.float32)  # 1-based frames, x1 y1 x2 y2
    return {"labels": ["Basketball"], "gttubes": {VIDEO_KEY: {0: [tube]}}, "nframes": {VIDEO_KEY: 20},
            "train_videos": [[]], "test_videos": [[VIDEO_KEY]], "resolution": {VIDEO_KEY: (240, 320)}}


@pytest.mark.parametrize("layout", ["a1", "a2", "b"])
def test_ucf24_formats_normalise_to_the_same_boxes(tmp_path: Path, layout: str) -> None:
    obj = gt_v2() if layout == "b" else pyannot(layout == "a2")
    path = tmp_path / "ann.pkl"
    path.write_bytes(py2_style(pickle.dumps(obj, protocol=3)))
    ann = load_ucf24(path)
    video = ann.videos[VIDEO_KEY]
    assert video.label == 0 and video.n_frames == 20 and video.resolution == (240, 320)
    assert video.tubes[0].frames.tolist() == [3, 4]  # (a) sf=3 0-based; (b) frame 4 1-based
    assert video.boxes_at(3) == [[200.0, 100.0, 300.0, 150.0]]  # x + w = 300 would wrap to 44 in uint8
    assert video.boxes_at(4) == [[100.0, 20.0, 140.0, 60.0]]
    assert video.boxes_at(2) == [] and video.boxes_at(5) == []
    if layout == "a2":
        assert ann.classes == ["Basketball", "BasketballDunk", "Biking"]
        assert ann.train == ["Biking/v_Biking_g01_c01"] and ann.test == [VIDEO_KEY]
        assert ann.videos["Biking/v_Biking_g01_c01"].n_frames == 300
    elif layout == "b":
        assert ann.test == [VIDEO_KEY] and ann.train == []
    else:
        assert len(ann.classes) == 24 and ann.classes[-1] == "WalkingWithDog"


class _Evil:
    def __reduce__(self) -> tuple:
        return os.system, ("echo pwned",)


def test_safe_unpickler_refuses_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"db": _Evil()}, protocol=2))
    with pytest.raises(UsageError, match=r"refusing to unpickle global (posix|nt|os)\.system"):
        safe_load_pickle(path)
    path.write_bytes(pickle.dumps({"x": [1, 2.5, "a", (3,)]}))
    assert safe_load_pickle(path) == {"x": [1, 2.5, "a", (3,)]}


# ------------------------------------------------------------------------------------------ readers

def test_registered() -> None:
    assert (DATASETS.get("ucf101").reader, DATASETS.get("hmdb51").reader, DATASETS.get("kinetics400").reader) == (
        UCF101Reader, HMDB51Reader, KineticsReader)


@pytest.fixture()
def ucf_root(tmp_path: Path) -> Path:
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 Basketball\r\n3 HandstandPushups\r\n")
    (lists / "trainlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                            b"HandstandPushups/v_HandStandPushups_g08_c01.avi 3\r\n\r\n")
    (lists / "testlist01.txt").write_bytes(b"Basketball/v_Basketball_g01_c01.avi\r\n"
                                           b"HandstandPushups/v_HandStandPushups_g01_c01.avi\r\n"
                                           b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n")
    for folder in ("ApplyEyeMakeup", "Basketball", "HandstandPushups"):
        (tmp_path / "UCF-101" / folder).mkdir(parents=True)
    write_video(tmp_path / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.avi", frames(h=240, w=320))
    (tmp_path / "UCF-101" / "HandstandPushups" / "v_HandstandPushups_g01_c01.avi").write_bytes(b"")
    (tmp_path / "pyannot.pkl").write_bytes(py2_style(pickle.dumps(pyannot(True), protocol=3)))
    return tmp_path


def test_ucf101_lists_labels_and_case_quirk(ucf_root: Path) -> None:
    test = UCF101Reader(ucf_root, split="test")
    assert test.classes == ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
    assert [test.sample_id(i) for i in range(len(test))] == [
        "v_Basketball_g01_c01", "v_HandStandPushups_g01_c01", "v_ApplyEyeMakeup_g01_c01"]
    assert [test.label(i) for i in range(3)] == [1, 2, 0]
    assert test.path(1) == ucf_root / "UCF-101" / "HandstandPushups" / "v_HandstandPushups_g01_c01.avi"
    train = UCF101Reader(ucf_root, split="train")
    assert [train.label(i) for i in range(len(train))] == [0, 2]
    assert len(UCF101Reader(ucf_root, split="val")) == 3
    with pytest.raises(UsageError, match="splits 1, 2 and 3"):
        UCF101Reader(ucf_root, fold=4)
    with pytest.raises(UsageError, match=r"testlist02\.txt does not exist"):
        UCF101Reader(ucf_root, fold=2)


def test_ucf101_load_clip_and_boxes(ucf_root: Path) -> None:
    ds = UCF101Reader(ucf_root, split="test", transform=video_preset("kinetics"))
    s = ds.load(0)
    assert s.sample_id == "v_Basketball_g01_c01" and s.label == 1
    assert s.x.shape == (3, 16, 112, 112) and s.x.dtype == torch.float32
    assert s.meta["frames"] == N and s.meta["indices"] == list(range(2, 18))
    assert len(s.meta["boxes"]) == 16
    # frame 3 = clip frame 1: (200, 100, 300, 150) on 320x240 -> 171x128 crop (30, 8), clipped to the crop
    assert s.meta["boxes"][0] == [] and s.meta["boxes"][3:] == [[]] * 13
    assert s.meta["boxes"][1] == [[76, 45, 111, 72]]  # x: 200 * 171/320 = 106.9 -> 106 - 30; right edge clipped
    assert s.meta["boxes"][2] == [[23, 2, 45, 24]]
    pixel = (s.x[:, :, 60, 60].T * torch.tensor(KINETICS_STD) + torch.tensor(KINETICS_MEAN)) * 255  # (T, 3)
    grey = LEVEL0 + STEP * torch.arange(2, 18, dtype=torch.float32)  # clip frame t is video frame t + 2
    assert torch.allclose(pixel, grey[:, None].expand(16, 3), atol=4)  # lossy MPEG-4 .avi
    with pytest.raises(SampleError, match=r"v_HandstandPushups_g01_c01\.avi: empty file"):
        ds.load(1)
    with pytest.raises(SampleError, match=r"v_ApplyEyeMakeup_g01_c01\.avi: no such file"):
        ds.load(2)
    with pytest.raises(SampleError, match="too short"):
        UCF101Reader(ucf_root, split="test", clip_len=21).load(0)


def test_hmdb51_tags(tmp_path: Path) -> None:
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a_brush.avi 1 \nb_brush.avi 2 \nc_brush.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d_(cart)_wheel.avi 2\n")
    (splits / "cartwheel_test_split2.txt").write_text("d_(cart)_wheel.avi 1\n")
    test = HMDB51Reader(tmp_path, split="test")
    assert test.classes == ["brush_hair", "cartwheel"]
    assert [(test.sample_id(i), test.label(i)) for i in range(len(test))] == [("b_brush", 0), ("d_(cart)_wheel", 1)]
    assert test.path(0) == tmp_path / "brush_hair" / "b_brush.avi"
    train = HMDB51Reader(tmp_path, split="train")
    assert [(train.sample_id(i), train.label(i)) for i in range(len(train))] == [("a_brush", 0)]
    assert [HMDB51Reader(tmp_path, split="train", fold=2).sample_id(0)] == ["d_(cart)_wheel"]
    with pytest.raises(UsageError, match=r"_test_split3\.txt"):
        HMDB51Reader(tmp_path, fold=3)


def test_kinetics_csv_and_layouts(tmp_path: Path) -> None:
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "val.csv").write_text('label,youtube_id,time_start,time_end,split,is_cc\n'
                                 '"air drumming",_dbcJuKJQNs,40,50,val,0\n'
                                 'abseiling,-3B32lodo2M,59,69,val,0\n'
                                 'abseiling,missingclip1,0,10,val,0\n')
    (ann / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,zzzzzzzzzzz,1,11,train\n")
    (ann / "test.csv").write_text("youtube_id,time_start,time_end,split\nabcdefghijk,5,15,test\n")
    (tmp_path / "val" / "air_drumming").mkdir(parents=True)  # class-folder layout, underscores
    (tmp_path / "val" / "air_drumming" / "_dbcJuKJQNs_000040_000050.mp4").write_bytes(b"")
    (tmp_path / "val" / "-3B32lodo2M_000059_000069.mp4").write_bytes(b"")  # flat layout
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "abcdefghijk_000005_000015.mp4").write_bytes(b"")
    ds = KineticsReader(tmp_path, split="val")
    assert ds.classes == ["abseiling", "air drumming", "zumba"]
    assert [(ds.sample_id(i), ds.label(i)) for i in range(len(ds))] == [
        ("_dbcJuKJQNs_000040_000050", 1), ("-3B32lodo2M_000059_000069", 0)]
    assert ds.missing == 1
    test = KineticsReader(tmp_path, split="test", classes=["abseiling"])
    assert [(test.sample_id(0), test.label(0))] == [("abcdefghijk_000005_000015", -1)]
    assert clip_name("-3B32lodo2M", "59", 69.0) == "-3B32lodo2M_000059_000069"
    with pytest.raises(UsageError, match="not in the class list"):
        KineticsReader(tmp_path, split="val", classes=["abseiling"])
