"""The ImageNet reader on hand-written real formats (docs/formats/imagenet.md): labels from ``LOC_val_solution.csv``,
from box XML (Kaggle layout), from devkit ids (which are not class indices), train folders, truncated and greyscale
files; object masks of train images (``train_masks/``, synthetic format 2) and the format upgrade."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from xcore.data import ImageNetReader, ImageTransform, generate_images
from xcore.data import synthetic_images as syn
from xcore.data.confine import OutsideRootError
from xcore.datasets import open_dataset
from xcore.errors import UsageError
from xcore.io.atomic import materialise_dir

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


def test_greyscale_odd_size_file_loads(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    Image.new("L", (37, 53), 90).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    _crlf(tmp_path / "LOC_val_solution.csv",
          ["ImageId,PredictionString", "ILSVRC2012_val_00000001,n01000001 0 0 36 52"])
    s = ImageNetReader(tmp_path, "val", size=24).load(0)
    assert s.x.shape == (3, 24, 24) and s.label == 0
    assert s.meta["boxes"] == [[0, 0, 23, 23]]


# ---------------------------------------------------------------- object masks of train images (format 2)


def test_train_masks_read_through_the_transform_and_confined(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.png"
    for w in SORTED:
        (root / "train" / w).mkdir(parents=True)
        (root / "train_masks" / w).mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (12, 8)).save(root / "train" / SORTED[1] / f"{name}.JPEG")
    mask = np.zeros((8, 12), np.uint8)
    mask[1:4, 2:6] = 255
    mask[6, 11] = 100  # below the 127 threshold: outside
    Image.fromarray(mask).save(root / "train_masks" / SORTED[1] / "a.png")
    Image.fromarray(mask).save(root / "train_masks" / SORTED[0] / "b.png")  # another class's folder: not b's
    Image.fromarray(mask).save(outside)
    (root / "train_masks" / SORTED[1] / "c.png").symlink_to(outside)
    ds = ImageNetReader(root, "train", size=8)  # 12x8 -> centre crop from x = 2
    expected = np.zeros((8, 8), bool)
    expected[1:4, 0:4] = True
    got = ds.load(0).meta["mask"]
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)
    assert ds.load(1).meta["mask"] is None
    with pytest.raises(OutsideRootError):
        ds.load(2)
    assert ImageNetReader(root, "train", size=8, follow_links=True).load(2).meta["mask"].sum() == 12


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=syn.JPEG_QUALITY)
    return buf.getvalue()


def test_synthetic_train_masks_are_the_scene_masks(tmp_path: Path) -> None:
    n, size, seed = 2, 32, 4
    root = generate_images(tmp_path / "shapes", n_train_per_class=n, n_val=2, size=size, seed=seed)
    assert json.loads((root / ".complete").read_text())["format"] == syn.FORMAT_VERSION == 3
    ds = ImageNetReader(root, "train", size=size)
    assert len(ds) == n * len(syn.WNIDS)
    for i in range(len(ds)):
        label, k = divmod(i, n)
        wnid = syn.WNIDS[label]
        scene = syn.render_scene(syn.scene_rng(seed, "train", i), size, label)
        with Image.open(root / "train_masks" / wnid / f"{wnid}_{k + 1}.png") as png:
            assert png.mode == "L" and png.size == (size, size)
            pixels = np.asarray(png)
        assert set(np.unique(pixels)) == {0, 255}
        np.testing.assert_array_equal(pixels == 255, scene.mask)
        assert (root / "train" / wnid / f"{wnid}_{k + 1}.JPEG").read_bytes() == _jpeg(scene.image)  # as format 1
        s = ds.load(i)
        assert s.sample_id == f"{wnid}_{k + 1}" and s.label == label
        np.testing.assert_array_equal(s.meta["mask"], scene.mask)  # size == image size: identity transform
    val = ImageNetReader(root, "val", size=size).load(0)
    scene = syn.render_scene(syn.scene_rng(seed, "val", 0), size, syn.val_labels(seed, 2)[0])
    np.testing.assert_array_equal(val.meta["mask"], scene.mask)


def test_format_1_synthetic_set_is_regenerated(tmp_path: Path) -> None:
    params = {"n_train_per_class": 1, "n_val": 2, "size": 32, "seed": 1}
    root = generate_images(tmp_path / "shapes", **params)
    before = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.JPEG")}
    shutil.rmtree(root / "train_masks")  # what format 1 wrote: no train masks, marker "format": 1
    (root / ".complete").write_text(json.dumps({**params, "format": 1}))
    (root / "stale.txt").write_text("from the old format")
    assert generate_images(root, **params) == root
    assert json.loads((root / ".complete").read_text()) == {
        **params, "format": 3, "planted_per_class": syn.DEFAULT_PLANTED_PER_CLASS}
    assert not (root / "stale.txt").exists()  # replaced as a whole, not patched
    assert sorted(p.name for p in (root / "train_masks").iterdir()) == list(syn.WNIDS)
    assert {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.JPEG")} == before
    (root / ".complete").write_text(json.dumps({**params, "format": 1, "n_val": 3}))  # other parameters too
    with pytest.raises(UsageError, match="force"):
        generate_images(root, **params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temp or old folder left behind


def test_materialise_dir_upgrades_only_a_different_format(tmp_path: Path) -> None:
    calls: list[Path] = []

    def write(folder: Path) -> None:
        calls.append(folder)
        (folder / "data.txt").write_text(f"v{len(calls)}")

    root, params = tmp_path / "d", {"format": 2, "a": 1}
    for old, upgraded in [({"format": 2, "a": 1}, False), ({"format": 1, "a": 1}, True), ({"a": 1}, True),
                          ({"format": 3, "a": 1}, True), ({"format": 1, "a": 2}, None), ({"format": 1}, None),
                          ({"format": 1, "a": 1, "b": 0}, None)]:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        (root / "data.txt").write_text("v0")
        (root / ".complete").write_text(json.dumps(old))
        calls.clear()
        if upgraded is None:
            with pytest.raises(UsageError, match="other parameters"):
                materialise_dir(root, params, write)
            assert (root / "data.txt").read_text() == "v0" and json.loads((root / ".complete").read_text()) == old
            continue
        assert materialise_dir(root, params, write) == root
        assert len(calls) == int(upgraded)
        assert (root / "data.txt").read_text() == ("v1" if upgraded else "v0")
        assert json.loads((root / ".complete").read_text()) == (params if upgraded else old)
    (root / ".complete").write_text(json.dumps({"a": 0}))
    with pytest.raises(UsageError):  # params without a "format" key: any difference is foreign
        materialise_dir(root, {"a": 1}, write)
