"""Synthetic generator, ImageNet reader (CSV / XML / devkit labels) and the box/mask-carrying transform."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from scipy import ndimage

from xcore.data import ImageNetReader, ImageTransform, default_data_root, generate_images
from xcore.data import synthetic_images as syn
from xcore.datasets import DATASETS, open_dataset
from xcore.errors import UsageError

SEED, SIZE, N_TRAIN, N_VAL = 3, 64, 2, 12
PARAMS = {"n_train_per_class": N_TRAIN, "n_val": N_VAL, "size": SIZE, "seed": SEED}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_images(tmp_path_factory.mktemp("gen") / "shapes", **PARAMS)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _xml_box(root: Path, stem: str) -> tuple[str, list[int]]:
    from xcore.data.imagenet import read_box_xml

    (objects,) = [read_box_xml(root / "val_boxes" / f"{stem}.xml")]
    assert len(objects) == 1
    return objects[0]


# ---------------------------------------------------------------- generator


def test_generate_is_deterministic(shapes: Path, tmp_path: Path) -> None:
    again = generate_images(tmp_path / "again", **PARAMS)
    assert _files(again) == _files(shapes)
    other = generate_images(tmp_path / "other", **{**PARAMS, "seed": SEED + 1})
    assert _files(other)["val/ILSVRC2012_val_00000001.JPEG"] != _files(shapes)["val/ILSVRC2012_val_00000001.JPEG"]


def test_layout_and_mapping(shapes: Path) -> None:
    lines = (shapes / "LOC_synset_mapping.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(syn.WNIDS) == list(syn.WNIDS)
    assert sorted(p.name for p in (shapes / "train").iterdir()) == list(syn.WNIDS)
    assert sorted(p.name for p in (shapes / "train" / syn.WNIDS[2]).iterdir()) == \
        [f"{syn.WNIDS[2]}_{k}.JPEG" for k in (1, 2)]
    vals = sorted(p.name for p in (shapes / "val").iterdir())
    assert vals[0] == "ILSVRC2012_val_00000001.JPEG" and len(vals) == N_VAL


def test_mask_box_xml_and_csv_agree(shapes: Path) -> None:
    rows = (shapes / "LOC_val_solution.csv").read_text().splitlines()
    assert rows[0] == "ImageId,PredictionString"
    csv = {r.split(",")[0]: r.split(",")[1].split() for r in rows[1:]}
    labels = syn.val_labels(SEED, N_VAL)
    for i in range(N_VAL):
        stem = syn.val_stem(i)
        mask = np.asarray(Image.open(shapes / "val_masks" / f"{stem}.png"))
        assert set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        tight = [xs.min(), ys.min(), xs.max(), ys.max()]
        wnid, box = _xml_box(shapes, stem)
        assert box == tight
        assert csv[stem] == [wnid, *map(str, tight)]
        assert wnid == syn.WNIDS[labels[i]]


def test_ground_truth_is_the_drawn_object(shapes: Path) -> None:
    labels = syn.val_labels(SEED, N_VAL)
    assert sorted(set(labels)) == list(range(len(syn.SHAPES)))  # balanced enough to see every class
    for i, label in enumerate(labels):
        stem = syn.val_stem(i)
        scene = syn.render_scene(syn.scene_rng(SEED, "val", i), SIZE, label)
        mask = np.asarray(Image.open(shapes / "val_masks" / f"{stem}.png")) > 0
        np.testing.assert_array_equal(mask, scene.mask)
        img = np.asarray(Image.open(shapes / "val" / f"{stem}.JPEG").convert("RGB"), np.float32)
        inner = ndimage.binary_erosion(mask, iterations=2)
        assert inner.sum() > 20
        assert np.abs(img[inner].mean(0) - np.array(scene.color)).max() < 12  # the object's flat colour
        holes = ndimage.label(~mask)[1] - 1  # background components enclosed by the object
        assert holes == (1 if syn.SHAPES[label] == "ring" else 0)


def test_train_folder_class_is_the_drawn_shape(shapes: Path) -> None:
    for label, wnid in enumerate(syn.WNIDS):
        scene = syn.render_scene(syn.scene_rng(SEED, "train", label * N_TRAIN + 1), SIZE, label)
        buf = io.BytesIO()
        scene.image.save(buf, "JPEG", quality=syn.JPEG_QUALITY)
        assert (shapes / "train" / wnid / f"{wnid}_2.JPEG").read_bytes() == buf.getvalue()


def test_generate_is_idempotent_and_guarded(shapes: Path, tmp_path: Path) -> None:
    assert json.loads((shapes / ".complete").read_text()) == {"format": syn.FORMAT_VERSION, **PARAMS}
    mtime = (shapes / "val" / "ILSVRC2012_val_00000001.JPEG").stat().st_mtime_ns
    assert generate_images(shapes, **PARAMS) == shapes
    assert (shapes / "val" / "ILSVRC2012_val_00000001.JPEG").stat().st_mtime_ns == mtime
    with pytest.raises(UsageError, match="force"):
        generate_images(shapes, **{**PARAMS, "n_val": N_VAL + 1})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("keep me")
    with pytest.raises(UsageError):
        generate_images(foreign, **PARAMS)
    assert (foreign / "x.txt").read_text() == "keep me"
    generate_images(foreign, **{**PARAMS, "n_val": 3}, force=True)
    assert not (foreign / "x.txt").exists() and len(list((foreign / "val").iterdir())) == 3


def test_interrupted_generation_never_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(tmp: Path, *args: object) -> None:
        (tmp / "val").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(syn, "_write", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_images(tmp_path / "shapes", **PARAMS)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- reader on the generated set


def test_reader_on_generated_set(shapes: Path) -> None:
    ds = open_dataset("imagenet", shapes, "val", size=SIZE)
    assert ds.classes == list(syn.WNIDS) and len(ds) == N_VAL
    labels = syn.val_labels(SEED, N_VAL)
    for i in (0, 5):
        s = ds.load(i)
        assert s.sample_id == syn.val_stem(i) == ds.sample_id(i)
        assert s.label == ds.label(i) == labels[i]
        assert s.x.shape == (3, SIZE, SIZE) and s.x.dtype == torch.float32
        assert s.meta["boxes"] == [_xml_box(shapes, s.sample_id)[1]]
        ys, xs = np.nonzero(s.meta["mask"])
        assert [xs.min(), ys.min(), xs.max(), ys.max()] == s.meta["boxes"][0]
    train = open_dataset("imagenet", shapes, "train", size=SIZE)
    assert len(train) == N_TRAIN * len(syn.WNIDS)
    assert [train.label(i) for i in range(len(train))] == [c for c in range(6) for _ in range(N_TRAIN)]
    assert train.load(0).meta["mask"] is None


def test_open_dataset_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DATASETS.get("imagenet").reader is ImageNetReader
    with pytest.raises(UsageError, match="does not exist"):
        open_dataset("imagenet", tmp_path / "nope")
    (tmp_path / "train" / "n01000001").mkdir(parents=True)
    with pytest.raises(UsageError, match="no val split"):
        open_dataset("imagenet", tmp_path, "val")
    with pytest.raises(UsageError):
        open_dataset("nosuchkind", tmp_path)
    monkeypatch.setenv("XCORE_DATA", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"
    monkeypatch.delenv("XCORE_DATA")
    assert default_data_root() == Path(".xcore/data/shapes")


# ---------------------------------------------------------------- reader on hand-written real formats

WN = ["n01000003", "n01000001", "n01000002"]  # deliberately not sorted
SORTED = sorted(WN)
TRUE = ["n01000003", "n01000002", "n01000001", "n01000003"]  # wnid of val images 1..4


def _val_images(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (40 + i, 30), (i * 40, 10, 10)).save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG")


def _crlf(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n  \r\n\r\n").encode())


def _xml(objects: list[tuple[str, list[int]]]) -> list[str]:
    objs = [f"<object><name> {w} </name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for w, b in objects]
    return ["<annotation>", "<folder>val</folder>", "<size><width>40</width><height>30</height></size>", *objs,
            "</annotation>"]


def _expected_labels() -> list[int]:
    return [SORTED.index(w) for w in TRUE]


def test_labels_from_val_solution_csv(tmp_path: Path) -> None:
    _val_images(tmp_path / "val")
    _crlf(tmp_path / "LOC_synset_mapping.txt", [f"{w} name {w} " for w in SORTED])
    rows = [f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 10 12 {w} 5 6 20 25 " for i, w in enumerate(TRUE)]
    _crlf(tmp_path / "LOC_val_solution.csv", ["ImageId,PredictionString", *reversed(rows)])
    ds = ImageNetReader(tmp_path, "val", transform=ImageTransform(30))
    assert ds.classes == SORTED and ds.class_names[0] == f"name {SORTED[0]}"
    assert [ds.label(i) for i in range(4)] == _expected_labels()
    s = ds.load(0)  # 40x30 -> shorter side already 30, crop left = 5
    assert s.meta["boxes"] == [[0, 2, 5, 12], [0, 6, 15, 25]]
    assert s.meta["mask"] is None and s.meta["path"].endswith("ILSVRC2012_val_00000001.JPEG")


def test_labels_from_box_xml_kaggle_layout(tmp_path: Path) -> None:
    _val_images(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val")
    _crlf(tmp_path / "LOC_synset_mapping.txt", SORTED)
    for i, w in enumerate(TRUE):
        _crlf(tmp_path / "ILSVRC/Annotations/CLS-LOC/val" / f"ILSVRC2012_val_{i + 1:08d}.xml",
              _xml([(w, [0, 0, 9, 9]), (w, [10, 10, 19, 19])]))
    ds = open_dataset("imagenet", tmp_path, size=30)
    assert [ds.label(i) for i in range(4)] == _expected_labels()
    assert ds.load(3).meta["boxes"] == [[0, 0, 3, 9], [4, 10, 13, 19]]  # 43 wide: crop left = round(6.5) = 6


def _meta_mat(path: Path) -> None:
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(1, WN[0], "third", 0), (2, WN[1], "first", 0), (3, WN[2], "second", 0), (4, "n00000009", "parent", 3)]
    synsets = np.array(rows, dtype=fields)
    scipy.io.savemat(str(path), {"synsets": synsets})


@pytest.mark.parametrize("with_mapping", [False, True])
def test_labels_from_devkit_ids_are_not_class_indices(tmp_path: Path, with_mapping: bool) -> None:
    _val_images(tmp_path / "val")
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    _meta_mat(data / "meta.mat")
    _crlf(data / "ILSVRC2012_validation_ground_truth.txt", ["1", "3", "2", "1"])  # ids in meta.mat order
    if with_mapping:
        _crlf(tmp_path / "LOC_synset_mapping.txt", [f"{w} x" for w in SORTED])
    ds = ImageNetReader(tmp_path, "val", size=30)
    assert ds.classes == SORTED  # leaves only, sorted: the parent synset is not a class
    assert [ds.label(i) for i in range(4)] == _expected_labels() == [2, 1, 0, 2]
    assert ds.load(2).meta["boxes"] == []


def test_train_split_folders(tmp_path: Path) -> None:
    for w in SORTED:
        (tmp_path / "train" / w).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / SORTED[1] / "a.jpg", "JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / SORTED[1] / "b.PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / SORTED[2] / "c.JPEG")
    (tmp_path / "train" / SORTED[2] / "notes.txt").write_text("x")
    ds = ImageNetReader(tmp_path, "train", size=8)
    assert ds.classes == SORTED
    assert [(ds.sample_id(i), ds.label(i)) for i in range(len(ds))] == [("a", 1), ("b", 1), ("c", 2)]


def test_truncated_jpeg_raises_on_load_only(tmp_path: Path) -> None:
    _val_images(tmp_path / "val")
    _crlf(tmp_path / "LOC_val_solution.csv", [f"ILSVRC2012_val_{i + 1:08d},{w} 0 0 5 5" for i, w in enumerate(TRUE)])
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    target = tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG"
    noisy.save(target)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    ds = ImageNetReader(tmp_path, "val", size=30)  # indexing does not decode
    ds.load(0)
    with pytest.raises(OSError):
        ds.load(1)


# ---------------------------------------------------------------- transform


def test_box_and_mask_through_resize_and_centre_crop() -> None:
    t = ImageTransform(64, resize=80)  # 200x100 -> 160x80 (scale 0.8), crop left 48, top 8
    assert t.geometry(200, 100).scaled == (160, 80)
    boxes = [[60, 10, 119, 59], [0, 0, 49, 99], [150, 50, 199, 99], [100, 20, 159, 29]]
    assert t.map_boxes(boxes, 200, 100) == [[0, 0, 47, 39], [32, 8, 63, 15]]
    mask = np.zeros((100, 200), bool)
    mask[10:60, 60:120] = True
    out = t.map_mask(mask)
    assert out.shape == (64, 64) and out.dtype == bool
    ys, xs = np.nonzero(out)
    assert [xs.min(), ys.min(), xs.max(), ys.max()] == [0, 0, 47, 39]
    assert out.sum() == 48 * 40


def test_identity_when_already_square() -> None:
    t = ImageTransform(16)
    arr = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    x = t(Image.fromarray(arr))
    mean, std = torch.tensor(t.mean).view(3, 1, 1), torch.tensor(t.std).view(3, 1, 1)
    expected = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)
    assert t.map_boxes([[3, 4, 5, 6]], 16, 16) == [[3, 4, 5, 6]]


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA"])
def test_odd_sizes_and_modes_become_rgb(mode: str) -> None:
    img = Image.new("RGB", (37, 53), (200, 100, 50)).convert(mode)
    x = ImageTransform(32)(img)
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()
    if mode in ("L", "LA"):
        assert torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)


def test_greyscale_odd_size_file_loads(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    Image.new("L", (37, 53), 90).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    _crlf(tmp_path / "LOC_val_solution.csv",
          ["ImageId,PredictionString", "ILSVRC2012_val_00000001,n01000001 0 0 36 52"])
    s = ImageNetReader(tmp_path, "val", size=24).load(0)
    assert s.x.shape == (3, 24, 24) and s.label == 0
    assert s.meta["boxes"] == [[0, 0, 23, 23]]
