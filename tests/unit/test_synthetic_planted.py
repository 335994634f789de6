"""The planted split of the synthetic shapes set (format 3): val images with a label-irrelevant saturated cue of
another class, the failure the surprise analysis (thesis §6.2.4) must find, written as its own ImageNet val root;
the train / val bytes of format 2, the format upgrade and determinism."""

from __future__ import annotations

import colorsys
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from xcore.data import generate_images
from xcore.data import synthetic_images as syn
from xcore.datasets import open_dataset
from xcore.errors import UsageError

SEED, SIZE, N_TRAIN, N_VAL, PER = 0, 64, 2, 6, 3
FORMAT_2_FILES = ("train/", "train_masks/", "val/", "val_masks/", "val_boxes/", "LOC_val_solution.csv",
                  "LOC_synset_mapping.txt")
# Written by the format-2 generator (before planted/ existed) for N_TRAIN, N_VAL, SIZE, SEED with Pillow 13.0 /
# numpy 2.4: sha256 of the lines "<path> <sha256 of the file>\n" over the 44 sorted FORMAT_2_FILES, and three files.
FORMAT_2_DIGEST = (44, "3aac648d3d6e2710184fcff9f910c2eba984f24933a3a0e5c7d2e321a6d627a0")
FORMAT_2_FILE_SHA = {
    "train/n09000000/n09000000_1.JPEG": "474912fa11b9afbfc7903ccb7e36d8655f24f285b938066df09bba6ef05a17b6",
    "val/ILSVRC2012_val_00000006.JPEG": "e0949d8a21111139be35e66bdbe951a8f1c86174f4ac0cef09ce698ba297b44e",
    "LOC_val_solution.csv": "d1e378f6f122c93336af29904029ae3829877ddd779291257ca055fb26e2eacd",
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_images(tmp_path_factory.mktemp("planted") / "shapes", n_train_per_class=N_TRAIN, n_val=N_VAL,
                           size=SIZE, seed=SEED, planted_per_class=PER)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _meta(root: Path) -> dict[str, dict]:
    return json.loads((root / syn.PLANTED_DIR / syn.PLANTED_META).read_text())["images"]


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img) > 127


def test_train_and_val_bytes_are_those_of_format_2(shapes: Path) -> None:
    kept = sorted(f for f in (str(p.relative_to(shapes)) for p in shapes.rglob("*") if p.is_file())
                  if f.startswith(FORMAT_2_FILES))
    lines = "".join(f"{f} {_sha(shapes / f)}\n" for f in kept)
    assert (len(kept), hashlib.sha256(lines.encode()).hexdigest()) == FORMAT_2_DIGEST
    assert {f: _sha(shapes / f) for f in FORMAT_2_FILE_SHA} == FORMAT_2_FILE_SHA
    assert json.loads((shapes / ".complete").read_text()) == {
        "format": 3, "n_train_per_class": N_TRAIN, "n_val": N_VAL, "planted_per_class": PER, "size": SIZE,
        "seed": SEED}


def test_planted_split_is_a_val_root_with_balanced_labels(shapes: Path) -> None:
    planted = shapes / syn.PLANTED_DIR
    assert sorted(p.name for p in planted.iterdir()) == sorted(["LOC_synset_mapping.txt", "LOC_val_solution.csv",
                                                                syn.PLANTED_META, "val", "val_boxes", "val_masks"])
    ds = open_dataset("imagenet", planted, "val", size=SIZE)  # no train/ split: the class list is the mapping
    meta = _meta(shapes)
    stems = [syn.val_stem(N_VAL + i) for i in range(len(syn.SHAPES) * PER)]  # numbered on from val/
    assert [ds.sample_id(i) for i in range(len(ds))] == stems == sorted(meta)
    labels = [ds.label(i) for i in range(len(ds))]
    assert Counter(labels) == dict.fromkeys(range(len(syn.SHAPES)), PER)
    assert labels == [meta[s]["label"] for s in stems]
    for label in range(len(syn.SHAPES)):  # mimicked classes: the next PER classes after the label, cyclically
        mimics = sorted(meta[s]["cue"]["mimics"] for s, y in zip(stems, labels, strict=True) if y == label)
        assert mimics == sorted((label + k) % len(syn.SHAPES) for k in range(1, PER + 1))
    rows = dict(ln.split(",") for ln in (planted / "LOC_val_solution.csv").read_text().splitlines()[1:])
    for i, stem in enumerate(stems):
        sample, mask = ds.load(i), _png(planted / "val_masks" / f"{stem}.png")
        assert sample.meta["wnid"] == syn.WNIDS[labels[i]] == meta[stem]["wnid"]
        np.testing.assert_array_equal(sample.meta["mask"], mask)  # the label object's mask, not the cue's
        assert rows[stem] == f"{syn.WNIDS[labels[i]]} {' '.join(map(str, syn.mask_box(mask)))}"
        assert sample.meta["boxes"] == [syn.mask_box(mask)]


def test_cue_is_a_saturated_other_class_shape_beside_the_object(shapes: Path) -> None:
    planted = shapes / syn.PLANTED_DIR
    for stem, item in _meta(shapes).items():
        cue, label = item["cue"], item["label"]
        assert cue["kind"] == "saturated_shape" and cue["mimics"] != label
        assert cue["shape"] == syn.SHAPES[cue["mimics"]] != syn.SHAPES[label]
        mask = syn.shape_mask(cue["shape"], tuple(cue["centre"]), cue["radius"], cue["angle"], SIZE)
        obj = _png(planted / "val_masks" / f"{stem}.png")
        x0, y0, x1, y1 = cue["box"]
        assert syn.mask_box(mask) == cue["box"] and 0 <= x0 <= x1 < SIZE and 0 <= y0 <= y1 < SIZE
        assert not obj[max(0, y0 - 2):y1 + 3, max(0, x0 - 2):x1 + 3].any()  # box + 2 px gap misses the object
        assert 0.36 * 0.8 < mask.sum() / obj.sum() < 0.64 * 1.25  # area ratio CUE_SCALE^2, up to rasterisation
        rgb = np.asarray(cue["color"], np.float64) / 255
        assert colorsys.rgb_to_hsv(*rgb)[1] >= syn.OBJECT_SATURATION[0]
        with Image.open(planted / "val" / f"{stem}.JPEG") as img:
            pixels = np.asarray(img.convert("RGB"), np.float64) / 255
        inner = ndimage.binary_erosion(mask)  # one pixel in from the edge, where JPEG chroma bleeds
        assert inner.sum() >= 9
        px = pixels[inner]
        sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1e-9)  # HSV saturation
        assert sat.min() > syn.DECOY_SATURATION[1]  # every cue pixel more saturated than any decoy colour
        assert np.abs(px - rgb).mean() < 0.1  # the cue colour survived the JPEG


def test_planted_images_have_their_own_random_stream(shapes: Path, tmp_path: Path) -> None:
    other = generate_images(tmp_path / "other", n_train_per_class=1, n_val=N_VAL, size=SIZE, seed=SEED,
                            planted_per_class=PER)  # other train draws, same planted stream
    assert _files(other / syn.PLANTED_DIR) == _files(shapes / syn.PLANTED_DIR)
    stem = syn.val_stem(N_VAL)
    label, mimics = syn.planted_plan(SEED, PER)[0]
    scene, cue = syn.render_planted(syn.scene_rng(SEED, "planted", 0), SIZE, label, mimics)
    assert _meta(shapes)[stem] == {"label": label, "wnid": syn.WNIDS[label], "cue": cue.record()}
    np.testing.assert_array_equal(scene.mask, _png(shapes / syn.PLANTED_DIR / "val_masks" / f"{stem}.png"))
    with pytest.raises(UsageError, match="another class"):
        syn.render_planted(syn.scene_rng(SEED, "planted", 0), SIZE, 2, 2)


def test_generation_is_deterministic(shapes: Path, tmp_path: Path) -> None:
    again = generate_images(tmp_path / "again", n_train_per_class=N_TRAIN, n_val=N_VAL, size=SIZE, seed=SEED,
                            planted_per_class=PER)
    assert _files(again) == _files(shapes)
    other = generate_images(tmp_path / "seed1", n_train_per_class=1, n_val=1, size=SIZE, seed=SEED + 1,
                            planted_per_class=1)
    assert (other / syn.PLANTED_DIR / "val" / "ILSVRC2012_val_00000002.JPEG").read_bytes() != \
        (shapes / syn.PLANTED_DIR / "val" / f"{syn.val_stem(N_VAL)}.JPEG").read_bytes()


def test_format_2_folder_is_regenerated_in_place(tmp_path: Path) -> None:
    params = {"n_train_per_class": 1, "n_val": 2, "size": 32, "seed": 1}
    root = generate_images(tmp_path / "shapes", **params, planted_per_class=1)
    before = {k: v for k, v in _files(root).items() if k.startswith(FORMAT_2_FILES)}
    planted = _files(root / syn.PLANTED_DIR)
    for old_format in (2, 1):
        shutil.rmtree(root / syn.PLANTED_DIR)  # what format 2 wrote: no planted/, no planted_per_class
        (root / ".complete").write_text(json.dumps({**params, "format": old_format}))
        (root / "stale.txt").write_text("from the old format")
        assert generate_images(root, **params, planted_per_class=1) == root
        assert json.loads((root / ".complete").read_text()) == {**params, "format": 3, "planted_per_class": 1}
        assert not (root / "stale.txt").exists()  # replaced as a whole, not patched
        assert {k: v for k, v in _files(root).items() if k.startswith(FORMAT_2_FILES)} == before
        assert _files(root / syn.PLANTED_DIR) == planted
    (root / ".complete").write_text(json.dumps({**params, "format": 2, "n_val": 3}))  # other parameters too
    with pytest.raises(UsageError, match="force"):
        generate_images(root, **params, planted_per_class=1)
    (root / ".complete").write_text(json.dumps({**params, "format": 3, "planted_per_class": 2}))
    with pytest.raises(UsageError, match="force"):  # a format-3 set with other planted images is another set
        generate_images(root, **params, planted_per_class=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temp or old folder left behind


def test_planted_per_class_zero_writes_no_planted_split(tmp_path: Path) -> None:
    root = generate_images(tmp_path / "none", n_train_per_class=1, n_val=2, size=32, planted_per_class=0)
    assert not (root / syn.PLANTED_DIR).exists() and len(list((root / "val").iterdir())) == 2
    with pytest.raises(UsageError, match="planted_per_class >= 0"):
        generate_images(tmp_path / "bad", n_train_per_class=1, n_val=2, size=32, planted_per_class=-1)
