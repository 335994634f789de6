"""Weak localisation (thesis §3.5.3, §4.5.3): thresholds, boxes, inclusive IoU, the UCF101-24 clip selection and the
run report. All expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_video_data import py2_style

from xcore.analysis.localisation import localisation_report
from xcore.core.shards import Shard
from xcore.data.video_decode import write_video
from xcore.data.video_readers import UCF101Reader
from xcore.data.video_transforms import VideoTransform
from xcore.errors import SampleError, UsageError
from xcore.io.runs import RunLayout
from xcore.metrics import METRICS, validate
from xcore.metrics.localisation import (
    MEAN_ALPHAS,
    VAL_ALPHAS,
    box_iou,
    localisation_error,
    tight_boxes,
    weak_localisation,
)

H, W = 8, 10


def image_loc(maps: torch.Tensor, boxes: list, **kw: object) -> dict[str, torch.Tensor]:
    return weak_localisation(None, torch.zeros(maps.shape[0], 3, *maps.shape[1:]), maps, boxes=boxes, **kw)


def block(t: int | None = None) -> torch.Tensor:
    """(1, H, W) map: 1 on rows 2-4, columns 3-6 (box [3, 2, 6, 4], 12 pixels), 0 elsewhere."""
    m = torch.zeros(1, H, W)
    m[0, 2:5, 3:7] = 1.0
    return m


# ------------------------------------------------------------------------------------------ boxes and IoU

def test_inclusive_iou_by_hand() -> None:
    # [0,0,1,1] vs [1,1,2,2]: 4 + 4 pixels, 1 shared -> 1/7; identical single pixels -> 1; disjoint -> 0
    pred = torch.tensor([[0.0, 0, 1, 1], [5, 5, 5, 5], [0, 0, 1, 1]], dtype=torch.float64)
    gt = torch.tensor([[1.0, 1, 2, 2], [5, 5, 5, 5], [3, 0, 4, 1]], dtype=torch.float64)
    assert box_iou(pred, gt).tolist() == [1 / 7, 1.0, 0.0]


def test_tight_box_takes_all_pixels_and_empty_is_the_whole_frame() -> None:
    m = torch.zeros(2, H, W, dtype=torch.bool)
    m[0, 1, 8] = m[0, 6, 2] = True  # two separate blobs: one box around both (no connected components)
    assert tight_boxes(m).tolist() == [[2.0, 1.0, 8.0, 6.0], [0.0, 0.0, W - 1.0, H - 1.0]]


def test_hand_computed_iou_for_a_block_map() -> None:
    # predicted box [3,2,6,4] (12 px) vs GT [4,3,8,5] (15 px): overlap columns 4-6 x rows 3-4 = 6 -> 6/21
    out = image_loc(block(), [[[4, 3, 8, 5]]])
    assert out["loc_val_iou"].shape == (1, 20) and out["loc_mean_iou"].shape == (1, 21)
    assert out["loc_val_iou"][0].tolist() == pytest.approx([6 / 21] * 20)
    # mean = 12/80 = 0.15: the block survives while α·0.15 <= 1, i.e. α <= 6.5; beyond, nothing -> whole frame
    # box [0,0,9,7] (80 px) contains the GT: 15/80
    want = [6 / 21 if a <= 6.5 else 15 / 80 for a in MEAN_ALPHAS]
    assert out["loc_mean_iou"][0].tolist() == pytest.approx(want)
    # max over several GT boxes: the exact box wins
    assert image_loc(block(), [[[0, 0, 1, 1], [3, 2, 6, 4]]])["loc_val_iou"][0, 5].item() == 1.0


def test_all_zero_map_and_energy_zero_give_the_whole_frame() -> None:
    gt = [[[3, 2, 6, 4]]]  # 12 px inside the 80 px frame -> IoU of the whole-frame box 0.15
    zero = image_loc(torch.zeros(1, H, W), gt)
    for fam in ("val", "mean", "energy"):
        assert zero[f"loc_{fam}_iou"][0].tolist() == pytest.approx([0.15] * zero[f"loc_{fam}_iou"].shape[1])
    rand = image_loc(torch.rand(1, H, W, generator=torch.Generator().manual_seed(0)) + 0.1, gt)
    assert rand["loc_energy_iou"][0, 0].item() == pytest.approx(0.15)  # α = 0: ind = 0, nothing kept (§13)


def test_energy_keeps_pixels_before_the_crossing_one() -> None:
    m = torch.zeros(1, H, W)
    m[0, 1, 1], m[0, 2, 5], m[0, 6, 8], m[0, 7, 0] = 4.0, 3.0, 2.0, 1.0  # Σ = 10, cumsum 4, 7, 9, 10
    gt = [[[1, 1, 1, 1], [1, 1, 5, 2], [1, 1, 8, 6]]]  # the boxes of the first 1, 2, 3 pixels
    alphas = [0.4, 0.45, 0.7, 0.75, 0.9, 0.95]
    # α·Σ = 4 -> cum[0] = 4 >= 4: ind 0 -> whole frame; 4.5 -> ind 1; 7 -> ind 1 (crossing 7 dropped); 7.5 -> 2;
    # 9 -> 2; 9.5 -> 3.  Whole frame vs the best GT ([1,1,8,6] = 48 px): 48/80
    iou = image_loc(m, gt, energy_alphas=alphas)["loc_energy_iou"][0].tolist()
    assert iou == pytest.approx([48 / 80, 1, 1, 1, 1, 1])
    assert image_loc(m, [[[1, 1, 5, 2]]], energy_alphas=alphas)["loc_energy_iou"][0, 2].item() == pytest.approx(
        1 / 10)  # ind 1 keeps only the first pixel: [1,1,1,1] (1 px) vs [1,1,5,2] (10 px)


def test_strict_threshold_keeps_equal_values_and_energy_ties_go_to_the_lower_index() -> None:
    m = torch.tensor([[[0.0, 1.0, 1.0, 2.0]]])  # one row; mean 1, min 0, max 2, Σ 4
    ones = [[[1, 0, 3, 0]]]  # the box of pixels 1-3
    # Mean α = 1: 1 >= 1 survives -> pixels 1-3 (strict '>' would leave only pixel 3: IoU 1/3)
    assert weak_localisation(None, torch.zeros(1, 3, 1, 4), m, boxes=ones, mean_alphas=[1.0])[
        "loc_mean_iou"].item() == 1.0
    # Val α = 0.5: h - 0 >= 0.5·2 = 1 -> pixels 1-3; Val α = 0: pixel 0 (value 0) is not boxed
    val = weak_localisation(None, torch.zeros(1, 3, 1, 4), m, boxes=ones, val_alphas=[0.0, 0.5, 0.75])
    assert val["loc_val_iou"][0].tolist() == [1.0, 1.0, 1 / 3]
    # Energy: order 3, 1, 2, 0 (tie 1 = 2 -> lower index first); α = 0.8: 3.2 -> ind 2: pixels 3 and 1 -> [1..3]
    # α = 0.75: 3 -> cum [2, 3] -> ind 1: pixel 3 only (1 of the 3 px)
    en = weak_localisation(None, torch.zeros(1, 3, 1, 4), m, boxes=ones, energy_alphas=[0.75, 0.8])
    assert en["loc_energy_iou"][0].tolist() == [1 / 3, 1.0]


def test_signed_map_is_used_as_given() -> None:
    m = torch.tensor([[[-1.0, 0.0, 2.0, -3.0]]])  # min -3, max 2; only pixel 2 is positive
    out = weak_localisation(None, torch.zeros(1, 3, 1, 4), m, boxes=[[[2, 0, 2, 0]]], val_alphas=[0.0, 0.5],
                            mean_alphas=[0.0], energy_alphas=[0.5])
    # Val α = 0.5: h + 3 >= 2.5 -> pixels 2 (5) passes, pixel 0 (2) fails; negatives never boxed
    assert out["loc_val_iou"][0].tolist() == [1.0, 1.0]
    # Mean = -0.5: every pixel passes α·mean = 0, only the positive one is boxed; Energy on h⁺ = [0, 0, 2, 0]:
    # α = 0.5 -> 1 -> cum[0] = 2 >= 1 -> ind 0 -> whole row (4 px) vs 1 px
    assert out["loc_mean_iou"].item() == 1.0 and out["loc_energy_iou"].item() == 0.25


# ------------------------------------------------------------------------------------------ video

def frame_boxes() -> list[list[int]]:
    return [[0, 0, 2, 2], [4, 1, 9, 3], [1, 5, 1, 7], [3, 3, 6, 6]]


def test_video_perfect_boxes_every_frame() -> None:
    T = len(frame_boxes())
    m = torch.zeros(1, T, H, W)
    for t, (x1, y1, x2, y2) in enumerate(frame_boxes()):
        m[0, t, y1:y2 + 1, x1:x2 + 1] = 1.0
    boxes = [[[b] for b in frame_boxes()]]
    out = weak_localisation(None, torch.zeros(1, 3, T, H, W), m, boxes=boxes)
    assert out["loc_val_iou"][0].tolist() == [1.0] * 20
    # volume mean = (9 + 18 + 3 + 16) / 320 = 46/320; block survives while α <= 320/46 = 6.96 -> α <= 6.5.
    # beyond: whole frames, IoU = area/80 per frame, mean (9 + 18 + 3 + 16) / 80 / 4
    want = [1.0 if a <= 6.5 else 46 / 320 for a in MEAN_ALPHAS]
    assert out["loc_mean_iou"][0].tolist() == pytest.approx(want)
    err = localisation_error(out["loc_mean_iou"], video=True)
    assert err.tolist() == [0.0 if a <= 6.5 else 100.0 for a in MEAN_ALPHAS]


def test_volume_and_per_frame_thresholds_differ() -> None:
    m = torch.zeros(1, 2, H, W)
    m[0, 0, 0:2, 0:2] = 4.0  # frame 0: box A [0,0,1,1] (4 px), value 4
    m[0, 1, 5:8, 6:10] = 1.0  # frame 1: box B [6,5,9,7] (12 px), value 1
    boxes = [[[[0, 0, 1, 1]], [[6, 5, 9, 7]]]]
    x = torch.zeros(1, 3, 2, H, W)
    vol = weak_localisation(None, x, m, boxes=boxes, val_alphas=[0.5])["loc_val_iou"].item()
    per = weak_localisation(None, x, m, boxes=boxes, val_alphas=[0.5], volume=False)["loc_val_iou"].item()
    # volume: threshold 0.5·4 = 2 kills frame 1 -> whole frame, IoU 12/80; per frame: 0.5·1 keeps B
    assert vol == pytest.approx((1 + 12 / 80) / 2) and per == 1.0


def test_frames_without_gt_are_left_out_and_bad_boxes_raise() -> None:
    m = torch.zeros(2, 2, H, W)
    m[:, :, 0:2, 0:2] = 1.0
    out = weak_localisation(None, torch.zeros(2, 3, 2, H, W), m, boxes=[[[[0, 0, 1, 1]], []], [[], []]],
                            val_alphas=[0.0])
    assert out["loc_val_iou"][0].item() == 1.0 and math.isnan(out["loc_val_iou"][1].item())
    with pytest.raises(SampleError, match="1 frames of boxes for a 2-frame clip"):
        weak_localisation(None, torch.zeros(1, 3, 2, H, W), m[:1], boxes=[[[[0, 0, 1, 1]]]])
    with pytest.raises(SampleError, match="bad box"):
        weak_localisation(None, torch.zeros(1, 3, H, W), m[:1, 0], boxes=[[[0, 0, 1]]])


def test_localisation_error_rules() -> None:
    ious = [[0.5, 0.6], [0.7, 0.2], [float("nan"), float("nan")]]  # NaN row: not annotated, skipped
    assert localisation_error(ious, video=True).tolist() == [50.0, 50.0]  # > 0.5
    assert localisation_error(ious, video=False).tolist() == [0.0, 50.0]  # >= 0.5


def test_registered_with_needs_boxes() -> None:
    metric = METRICS.get("weak_localisation")
    assert metric.needs == ("boxes",) and metric.list_keys == metric.per_sample_keys == (
        "loc_val_iou", "loc_mean_iou", "loc_energy_iou")
    assert validate("weak_localisation", {"volume": False}) == {
        "volume": False, "val_alphas": None, "mean_alphas": None, "energy_alphas": None}
    assert VAL_ALPHAS[3] == 0.15 and len(VAL_ALPHAS) == 20 and MEAN_ALPHAS[-1] == 10.0


# ------------------------------------------------------------------------------------------ UCF101-24 clips

def tube(sf: int, ef: int, xywh: tuple[int, int, int, int] = (100, 50, 100, 100)) -> dict:
    return {"label": 0, "sf": sf, "ef": ef, "boxes": np.tile(np.array(xywh, np.uint8), (ef - sf, 1))}


@pytest.fixture(scope="module")
def ucf24_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ucf24")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 Basketball\r\n2 Biking\r\n3 Diving\r\n")
    names = ["Basketball/v_Basketball_g01_c01", "Basketball/v_Basketball_g02_c01", "Biking/v_Biking_g01_c01",
             "Biking/v_Biking_g02_c01", "Diving/v_Diving_g01_c01", "Diving/v_Diving_g02_c01",
             "Diving/v_Diving_g03_c01"]
    (lists / "testlist01.txt").write_bytes(b"".join(f"{n}.avi\r\n".encode() for n in names))
    (lists / "trainlist01.txt").write_bytes(b"")
    for c in ("Basketball", "Biking", "Diving"):
        (root / "UCF-101" / c).mkdir(parents=True)
    frames = np.zeros((48, 48, 64, 3), np.uint8)
    frames[...] = (5 * np.arange(48, dtype=np.uint8))[:, None, None, None]  # frame i has grey level 5 i
    write_video(root / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.mp4", frames)
    (root / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.avi").symlink_to(
        root / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.mp4")
    db = {
        names[0]: {"label": 0, "numf": 48, "annotations": [tube(3, 41)]},  # starts 8, 16, 24 (0 and 32 lack boxes)
        names[1]: {"label": 0, "numf": 40, "annotations": [tube(0, 20), tube(10, 30)]},  # two boxes on 10-19
        names[2]: {"label": 1, "numf": 40, "annotations": [tube(0, 10), tube(20, 30)]},  # longest run 10 < 16
        names[3]: {"label": 1, "numf": 40, "annotations": [tube(0, 16), tube(20, 32)]},  # start 0 only
        # names[4] has no annotation at all
        names[5]: {"label": 2, "numf": 40, "annotations": []},  # no tube
        names[6]: {"label": 2, "numf": 30, "annotations": [tube(3, 19)]},  # kept (16 frames) but no clip fits
    }
    (root / "pyannot.pkl").write_bytes(py2_style(pickle.dumps(db, protocol=3)))
    return root


def test_localisation_clip_selection(ucf24_root: Path) -> None:
    centre = UCF101Reader(ucf24_root)
    assert len(centre) == 7 and centre.sample_id(0) == "v_Basketball_g01_c01"  # default unchanged
    t = VideoTransform(size=48, resize=None, mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    ds = UCF101Reader(ucf24_root, clips="localisation", transform=t)
    assert [ds.sample_id(i) for i in range(len(ds))] == [
        "v_Basketball_g01_c01@8", "v_Basketball_g01_c01@16", "v_Basketball_g01_c01@24", "v_Biking_g02_c01@0"]
    assert [ds.label(i) for i in range(len(ds))] == [0, 0, 0, 1]
    assert ds.localisation_videos == ["basketball/v_basketball_g01_c01", "biking/v_biking_g02_c01",
                                      "diving/v_diving_g03_c01"]
    s = ds.load(1)
    assert s.sample_id == "v_Basketball_g01_c01@16" and s.meta["indices"] == list(range(16, 32))
    # (100, 50, 100, 100) xywh on 320x240 -> [100, 50, 200, 150] · 64/320 -> [20, 10, 40, 30], crop left 8
    assert s.meta["boxes"] == [[[12, 10, 32, 30]]] * 16
    assert s.x.shape == (3, 16, 48, 48)
    assert torch.allclose(s.x[0, :, 24, 24], 5.0 * torch.arange(16, 32, dtype=torch.float32), atol=3)
    with pytest.raises(SampleError, match="no such file"):
        ds.load(3)


def test_localisation_clips_need_annotations(ucf24_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown UCF-101 clips 'all'"):
        UCF101Reader(ucf24_root, clips="all")
    (tmp_path / "ucfTrainTestlist").mkdir()
    for f in ("classInd.txt", "testlist01.txt"):
        (tmp_path / "ucfTrainTestlist" / f).write_bytes((ucf24_root / "ucfTrainTestlist" / f).read_bytes())
    with pytest.raises(UsageError, match="needs UCF101-24 annotations"):
        UCF101Reader(tmp_path, clips="localisation")


# ------------------------------------------------------------------------------------------ report

def test_localisation_report_by_hand(tmp_path: Path) -> None:
    lists = pa.list_(pa.float32())
    schema = pa.schema([("sample_id", pa.string()), ("index", pa.int64()), ("status", pa.string()),
                        ("loc_val_iou", lists), ("loc_mean_iou", lists), ("loc_energy_iou", lists)])

    layout, shard = RunLayout(tmp_path), Shard(0, 0, 4)

    def table(rows: list[tuple]) -> pa.Table:
        return pa.table([pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(schema)], schema=schema)

    layout.write_shard(shard, "k", {  # committed, as readers read only committed files
        layout.table_path("metrics", shard, "a"): table([("s0", 0, "ok", [0.6, 0.4], [0.1, 0.9], [0.5, 0.5]),
                                                         ("s1", 1, "ok", [0.5, 0.7], [0.2, 0.9], [0.5, 0.5]),
                                                         ("s2", 2, "ok", [0.9, 0.2], [0.3, 0.1], [0.5, 0.5]),
                                                         ("s3", 3, "error", None, None, None)]),
        layout.table_path("metrics", shard, "b"): table([("s0", 0, "ok", [0.0, 1.0], [1.0, 1.0], [1.0, 0.0])])}, {})
    grids = {"val_alphas": [0.0, 0.5], "mean_alphas": [1.0, 2.0], "energy_alphas": [0.1, 0.2]}
    (tmp_path / "run.json").write_text(json.dumps({"config": {"dataset_kind": "ucf101"},
                                                   "resolved": {"modality": "video",
                                                                "metrics": {"weak_localisation": grids}}}))
    rep = localisation_report(tmp_path)
    a = {r["family"]: r for r in rep if r["method"] == "a"}
    # video: correct if > 0.5. val: [T, F, T] -> 33.3 %, [F, T, F] -> 66.7 %; best α 0.0
    assert a["val"]["error"] == pytest.approx([100 / 3, 200 / 3]) and a["val"]["best_alpha"] == 0.0
    assert a["mean"]["error"] == pytest.approx([100.0, 100 / 3]) and a["mean"]["best_alpha"] == 2.0
    assert a["energy"]["error"] == [100.0, 100.0] and a["energy"]["best_alpha"] == 0.1  # tie: first α
    assert a["val"]["samples"] == 3 and a["val"]["alphas"] == [0.0, 0.5]
    # images: >= 0.5 -> energy 0.5 counts as correct
    img = localisation_report(tmp_path, method="a", video=False)
    assert {r["family"]: r["error"] for r in img}["energy"] == [0.0, 0.0] and {r["method"] for r in img} == {"a"}
    b = {r["family"]: r for r in rep if r["method"] == "b"}
    assert (b["val"]["best_alpha"], b["val"]["best_error"]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="no weak_localisation rows for c"):
        localisation_report(tmp_path, method="c")


def test_a_clip_outside_the_tube_carries_no_boxes(ucf24_root: Path, tmp_path: Path) -> None:
    """The centre clip (frames 16-31) of a video whose only tube covers frames 0-9 has no annotation, so box
    metrics skip it instead of recording a NaN; one boxed frame is enough to keep the per-frame list."""
    t = VideoTransform(size=48, resize=None, mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    for (sf, ef), boxed in (((0, 10), 0), ((31, 40), 1)):
        db = {"Basketball/v_Basketball_g01_c01": {"label": 0, "numf": 48, "annotations": [tube(sf, ef)]}}
        ann = tmp_path / f"ann{sf}.pkl"
        ann.write_bytes(py2_style(pickle.dumps(db, protocol=3)))
        meta = UCF101Reader(ucf24_root, annotations=ann, transform=t).load(0).meta
        assert meta["indices"] == list(range(16, 32))
        assert sum(map(bool, meta.get("boxes", []))) == boxed


def _loc_run(root: Path, rows: list[tuple[str, list[float]]]) -> Path:
    """A committed image run of method ``a`` whose three families all hold the given IoU lists (α grid 0, 0.5)."""
    lists = pa.list_(pa.float32())
    schema = pa.schema([("sample_id", pa.string()), ("index", pa.int64()), ("status", pa.string()),
                        ("loc_val_iou", lists), ("loc_mean_iou", lists), ("loc_energy_iou", lists)])
    layout, shard = RunLayout(root), Shard(0, 0, len(rows))
    data = [[s for s, _ in rows], list(range(len(rows))), ["ok"] * len(rows)] + [[v for _, v in rows]] * 3
    layout.write_shard(shard, "k", {layout.table_path("metrics", shard, "a"): pa.table(
        [pa.array(c, type=f.type) for c, f in zip(data, schema, strict=True)], schema=schema)}, {})
    grids = {f"{f}_alphas": [0.0, 0.5] for f in ("val", "mean", "energy")}
    (root / "run.json").write_text(json.dumps({"resolved": {"modality": "image",
                                                            "metrics": {"weak_localisation": grids}}}))
    return root


def test_held_out_alpha_is_chosen_on_the_select_part_and_scored_on_the_rest(tmp_path: Path) -> None:
    from xcore.analysis.localisation import in_select

    ids = [f"img{i:03d}" for i in range(40)]
    pick = [in_select(i, 7, 0.25) for i in ids]
    assert 4 <= sum(pick) <= 16 and pick != [in_select(i, 8, 0.25) for i in ids]  # seeded
    assert [in_select(i, 7, 0.25) for i in ids] == pick and not any(in_select(i, 7, 0.0) for i in ids)
    # select samples localise at α = 0 only; the others at α = 0.5 only, so the best α on all data is 0.5
    rows = [(i, [0.9, 0.1] if p else [0.1, 0.9]) for i, p in zip(ids, pick, strict=True)]
    n_sel = sum(pick)
    rep = localisation_report(_loc_run(tmp_path / "run", rows), select=0.25, seed=7)
    for r in rep:
        assert (r["best_alpha"], r["best_error"]) == (0.5, pytest.approx(100 * n_sel / 40))
        assert (r["heldout_alpha"], r["heldout_error"]) == (0.0, 100.0)  # α fitted on select, wrong on the rest
        assert (r["select_samples"], r["eval_samples"]) == (n_sel, 40 - n_sel)
    # a select run: α = 0.5 wins there, and is scored on all 40 samples of this run
    other = _loc_run(tmp_path / "train", [(f"t{i}", [0.2, 0.8]) for i in range(5)])
    rep = localisation_report(tmp_path / "run", select_run=other)
    for r in rep:
        assert (r["heldout_alpha"], r["heldout_error"]) == (0.5, pytest.approx(100 * n_sel / 40))
        assert (r["select_samples"], r["eval_samples"]) == (5, 40)
