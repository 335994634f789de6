"""The synthetic ImageNet-layout generator (docs/formats/imagenet.md) and the reader on the set it writes;
``open_dataset`` errors. The reader on hand-written real formats is tested in ``test_imagenet.py``, the transform in
``test_image_transform.py``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from xcore.data import ImageNetReader, default_data_root, generate_images
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
    assert json.loads((shapes / ".complete").read_text()) == {
        "format": syn.FORMAT_VERSION, **PARAMS, "planted_per_class": syn.DEFAULT_PLANTED_PER_CLASS}
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
    train_scene = syn.render_scene(syn.scene_rng(SEED, "train", 0), SIZE, 0)
    np.testing.assert_array_equal(train.load(0).meta["mask"], train_scene.mask)  # train_masks/ (format 2)


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
