"""The COCO reader (Lin et al., Microsoft COCO, ECCV 2014 data format) on a hand-written annotation file: masks equal
to pycocotools' decoding of every instance kind (polygon, compressed RLE, uncompressed crowd RLE), hand-computed
runs, sparse -> contiguous labels, sample order and ids, the EBP difficult rule at its 25 % edge, the shorter-side
transform against a hand-normalised PIL resize, malformed files; and the synthetic COCO generator, whose written
annotations must decode to exactly the pixels it painted."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from xcore.data.coco import CocoReader, ShorterSide, class_masks, difficult_flag
from xcore.data.confine import OutsideRootError
from xcore.data.synthetic_coco import CATEGORY_IDS, generate_coco, render_coco_image, rle_counts
from xcore.data.synthetic_scene import SHAPES, _background
from xcore.data.transforms import ImageTransform
from xcore.errors import UsageError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
POLY = [2.0, 2.0, 12.0, 2.0, 12.0, 9.0, 2.0, 9.0]  # image 7, category 5
CROWD = {"counts": [2 * 20 + 3, 4, 600 - 47], "size": [20, 30]}  # column 2, rows 3..6 (column-major runs)


def _compressed(mask: np.ndarray) -> dict[str, Any]:
    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": enc["counts"].decode("ascii"), "size": list(enc["size"])}


def _rle_block(h: int, w: int, n: int) -> dict[str, Any]:
    """The first ``n`` pixels in column-major order, as uncompressed RLE."""
    return {"counts": [0, n, h * w - n], "size": [h, w]}


def _disc_rle() -> dict[str, Any]:
    yy, xx = np.mgrid[0:20, 0:30]
    return _compressed((yy - 12) ** 2 + (xx - 22) ** 2 <= 16)


def _dataset(root: Path, *, edit: Any = None) -> Path:
    """Images 7 (20x30 RGB: category 5 twice, category 2 as crowd), 3 (40x25 grey: category 9 alone), 11 (no
    annotation), 21 and 22 (40x25: category 9 at 24.9 % and 25.0 % beside category 2), 23 (missing file)."""
    rng = np.random.default_rng(0)
    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "val2014" / "img7.png")
    Image.fromarray(rng.integers(0, 256, (40, 25), dtype=np.uint8)).save(root / "val2014" / "img3.png")
    for name in ("img11", "img21", "img22"):
        Image.new("RGB", (25, 40)).save(root / "val2014" / f"{name}.png")
    images = [{"id": i, "file_name": f"img{i}.png", "height": h, "width": w}
              for i, h, w in ((21, 40, 25), (7, 20, 30), (11, 40, 25), (3, 40, 25), (22, 40, 25), (23, 40, 25))]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 5, "segmentation": [POLY], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 2, "segmentation": CROWD, "iscrowd": 1},
        {"id": 3, "image_id": 7, "category_id": 5, "segmentation": _disc_rle(), "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 9, "segmentation": _rle_block(40, 25, 10), "iscrowd": 0},
        {"id": 5, "image_id": 21, "category_id": 9, "segmentation": _rle_block(40, 25, 249), "iscrowd": 0},
        {"id": 6, "image_id": 21, "category_id": 2, "segmentation": [[20.0, 30.0, 24.0, 30.0, 24.0, 39.0]]},
        {"id": 7, "image_id": 22, "category_id": 9, "segmentation": _rle_block(40, 25, 250), "iscrowd": 0},
        {"id": 8, "image_id": 22, "category_id": 2, "segmentation": [[20.0, 30.0, 24.0, 30.0, 24.0, 39.0]]},
        {"id": 9, "image_id": 23, "category_id": 9, "segmentation": _rle_block(40, 25, 5), "iscrowd": 0},
    ]
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}, {"id": 5, "name": "five"}]}
    if edit is not None:
        data = copy.deepcopy(data)  # never edit the module's constants
        edit(data)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root


def _decode(seg: Any, h: int, w: int) -> np.ndarray:
    """One annotation's mask, decoded by pycocotools independently of the reader (COCO.annToMask's three cases)."""
    if isinstance(seg, list):
        return mask_utils.decode(mask_utils.frPyObjects(seg, h, w)).any(axis=2)
    rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
    return mask_utils.decode(rle).astype(bool)


def test_order_ids_labels_and_masks(tmp_path: Path) -> None:
    ds = CocoReader(_dataset(tmp_path), size=12)
    assert ds.category_ids == [2, 5, 9] and ds.classes == ds.class_names == ["two", "five", "nine"]
    assert [ds.sample_id(i) for i in range(len(ds))] == [
        "img3__9", "img7__2", "img7__5", "img21__2", "img21__9", "img22__2", "img22__9", "img23__9"]
    assert [ds.label(i) for i in range(len(ds))] == [2, 0, 1, 0, 2, 0, 2, 2]
    crowd, five = ds.load(1), ds.load(2)
    expected_crowd = np.zeros((20, 30), bool)
    expected_crowd[3:7, 2] = True  # by hand from the runs
    assert crowd.meta["masks"].dtype == bool and np.array_equal(crowd.meta["masks"], expected_crowd)
    poly, disc = _decode([POLY], 20, 30), _decode(_disc_rle(), 20, 30)
    assert poly.sum() > 50 and disc.sum() == 49 and not (poly & disc).any()  # two real, disjoint instances
    assert np.array_equal(five.meta["masks"], poly | disc)
    assert np.array_equal(crowd.meta["masks"], _decode(CROWD, 20, 30))
    assert (five.label, five.meta["category_id"], five.meta["image_id"], five.meta["size"]) == (1, 5, 7, [20, 30])
    assert five.meta["path"] == str(tmp_path / "val2014" / "img7.png") and five.sample_id == "img7__5"
    assert "img11" not in " ".join(ds.sample_id(i) for i in range(len(ds)))  # no annotation, no sample
    assert repr(ds) == f"CocoReader({str(tmp_path)!r}, split='val', year='2014', n=8)"


def test_difficult_rule_at_its_edges(tmp_path: Path) -> None:
    ds = CocoReader(_dataset(tmp_path), size=12)
    flags = {ds.sample_id(i): ds.load(i).meta["difficult"] for i in range(len(ds)) if i != 7}
    assert flags["img21__9"] is True  # 249 / 1000 = 24.9 % with another class present
    assert flags["img22__9"] is False  # exactly 25 %
    assert flags["img3__9"] is False  # 1 % but alone in the image
    assert ds.load(4).meta["masks"].sum() == 249 and ds.load(6).meta["masks"].sum() == 250
    m = np.zeros((10, 10), bool)
    m.flat[:24] = True
    assert difficult_flag(m, 1) and not difficult_flag(m, 0)
    m.flat[24] = True
    assert not difficult_flag(m, 3)


def test_x_is_a_hand_normalised_shorter_side_bilinear_resize(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    ds = CocoReader(root, size=12, mean=MEAN, std=STD)
    for index, (w, h) in ((2, (18, 12)), (0, (12, 19))):  # 30x20 -> 18x12; 25x40 -> 12x round(19.2)
        img = Image.open(ds.path(index)).convert("RGB")
        ref = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), np.float32) / np.float32(255)
        ref = (ref - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
        x = ds.load(index).x
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, h, w)
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), ref, rtol=1e-5, atol=1e-6)
    grey = ds.load(0).x  # an L-mode image: the three channels are one grey image, normalised per channel
    np.testing.assert_allclose((grey[0] * STD[0] + MEAN[0]).numpy(), (grey[2] * STD[2] + MEAN[2]).numpy(), atol=1e-6)
    via = CocoReader(root, transform=ImageTransform(12, resize=16, mean=MEAN, std=STD))
    assert torch.equal(via.load(2).x, ds.load(2).x)  # the checkpoint's size, mean, std; its crop not applied
    assert ShorterSide(12).shape(30, 20) == (18, 12) and ShorterSide(10).shape(25, 10) == (25, 10)


def test_load_errors(tmp_path: Path) -> None:
    ds = CocoReader(_dataset(tmp_path), size=12)
    with pytest.raises(FileNotFoundError):
        ds.load(7)  # img23.png was never written
    Image.new("RGB", (24, 40)).save(tmp_path / "val2014" / "img23.png")
    with pytest.raises(ValueError, match=r"img23\.png: the image is 24x40"):
        ds.load(7)

    def escape(data: dict[str, Any]) -> None:
        data["images"][1]["file_name"] = "../img7.png"

    ds = CocoReader(_dataset(tmp_path / "b", edit=escape), size=12)
    with pytest.raises(OutsideRootError):
        ds.load(2)

    def short(data: dict[str, Any]) -> None:  # a compressed RLE covering 8 of 600 pixels: pycocotools cannot tell
        data["annotations"][2]["segmentation"] = {"counts": "53", "size": [20, 30]}

    ds = CocoReader(_dataset(tmp_path / "c", edit=short), size=12)
    with pytest.raises(ValueError, match=r"instances_val2014\.json: annotation 3 has a compressed RLE"):
        ds.load(2)


def _drop(key: str) -> Any:
    return lambda data: data.pop(key)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "words"), [
    (_drop("categories"), "no 'categories' list"),
    (_set(("annotations", 0, "category_id"), 4), "annotation 1 has unknown category_id 4"),
    (_set(("annotations", 0, "image_id"), 99), "annotation 1 has unknown image_id 99"),
    (_set(("annotations", 1, "segmentation", "counts"), [43, 4, 500]), "counts summing to 547, not 600"),
    (_set(("annotations", 0, "segmentation"), [[1.0, 2.0, 3.0, 4.0]]), "annotation 1 has a polygon"),
    (_set(("annotations", 2, "segmentation", "size"), [30, 20]), "annotation 3 has an RLE of size [30, 20]"),
])
def test_malformed_annotation_files_name_the_file(tmp_path: Path, edit: Any, words: str) -> None:
    root = _dataset(tmp_path, edit=edit)
    with pytest.raises(UsageError) as info:
        CocoReader(root)
    assert str(root / "annotations" / "instances_val2014.json") in str(info.value) and words in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_json_and_bom(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    ann = root / "annotations" / "instances_val2014.json"
    text = ann.read_text()
    ann.write_bytes(b"\xef\xbb\xbf" + text.replace(", ", ",\r\n").encode())  # BOM and CRLF: still read
    assert len(CocoReader(root)) == 8
    ann.write_text(text[:-5])
    with pytest.raises(UsageError, match=re.escape(str(ann))):
        CocoReader(root)


def test_class_masks_union_and_rle_encoder() -> None:
    rng = np.random.default_rng(1)
    masks = [rng.random((9, 7)) < p for p in (0.0, 0.3, 1.0)] + [np.eye(9, 7, dtype=bool)]
    for m in masks:
        counts = rle_counts(m)
        assert sum(counts) == 63 and (counts[0] == 0) == bool(m[0, 0])
        assert mask_utils.frPyObjects({"counts": counts, "size": [9, 7]}, 9, 7)["counts"] == \
            mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]  # the same runs as pycocotools
    a, b = masks[1], masks[3]
    anns = [{"id": 1, "segmentation": {"counts": rle_counts(a), "size": [9, 7]}},
            {"id": 2, "segmentation": _compressed(b)}]
    assert np.array_equal(class_masks(anns, 9, 7), a | b)
    assert not class_masks([], 9, 7).any() and class_masks([], 9, 7).shape == (9, 7)


def _written(root: Path) -> dict[str, Any]:
    return json.loads((root / "annotations" / "instances_val2014.json").read_text())


def test_synthetic_coco_masks_are_the_painted_pixels(tmp_path: Path) -> None:
    seed, n = 5, 24
    root = generate_coco(tmp_path / "coco", n_images=n, seed=seed)
    data = _written(root)
    assert [c["id"] for c in data["categories"]] == list(CATEGORY_IDS) == [1, 3, 4, 7, 9, 12]
    assert [c["name"] for c in data["categories"]] == list(SHAPES)
    kinds = {"polygon": 0, "compressed": 0, "crowd": 0}
    classes_per_image = []
    for k in range(n):
        image = data["images"][k]
        assert (image["id"], image["file_name"]) == (k + 1, f"COCO_val2014_{k + 1:012d}.jpg")
        pixels, _ = render_coco_image(seed, k)
        bg = _background(np.random.default_rng([seed, k]), 160)[:128, :160].astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        assert (root / "val2014" / image["file_name"]).read_bytes() == buf.getvalue()  # the file: these pixels
        anns = [a for a in data["annotations"] if a["image_id"] == k + 1]
        assert 2 <= len(anns) <= 4
        union = np.zeros((128, 160), bool)
        for a in anns:
            seg = a["segmentation"]
            kind = "polygon" if isinstance(seg, list) else "crowd" if isinstance(seg["counts"], list) else "compressed"
            kinds[kind] += 1
            assert a["iscrowd"] == (kind == "crowd")
            m = _decode(seg, 128, 160)
            assert not (m & union).any()  # instances never overlap
            union |= m
            ys, xs = np.nonzero(m)
            assert a["area"] == m.sum() and a["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert len(np.unique(pixels[m], axis=0)) == 1  # one colour exactly on the decoded mask ...
            assert np.abs(pixels[m].astype(int) - bg[m]).sum(axis=1).mean() > 20  # ... that is not the background
        assert np.array_equal(pixels[~union], bg[~union])  # ... and nothing painted anywhere else
        classes_per_image.append(len({a["category_id"] for a in anns}))
    assert min(kinds.values()) >= 1, kinds
    assert max(classes_per_image) == 3 and sum(c >= 2 for c in classes_per_image) >= n // 2
    ds = CocoReader(root, size=64)
    metas = [ds.load(i).meta for i in range(len(ds))]
    pairs = [(m["difficult"], classes_per_image[m["image_id"] - 1]) for m in metas]
    assert any(d for d, _ in pairs) and any(not d and c >= 2 for d, c in pairs)  # a dominant class among others


def test_synthetic_coco_is_idempotent(tmp_path: Path) -> None:
    root = generate_coco(tmp_path / "coco", n_images=3)
    files = [root / "xcore_coco.json", root / "annotations" / "instances_val2014.json",
             root / "val2014" / "COCO_val2014_000000000001.jpg"]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert generate_coco(tmp_path / "coco", n_images=3) == root
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert json.loads(files[0].read_text())["n_images"] == 3
    generate_coco(root, n_images=2)  # other parameters: our own data, replaced
    assert len(_written(root)["images"]) == 2 and not files[2].with_name("COCO_val2014_000000000003.jpg").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="not complete synthetic COCO data"):
        generate_coco(tmp_path / "foreign")


def test_dataset_kind() -> None:
    from xcore.datasets import DATASETS

    kind = DATASETS.get("coco")
    assert kind.reader is CocoReader and kind.modality == "image" and kind.train is None
    assert kind.demo.uses == "imagenet" and kind.demo.metrics == ("pointing_game",)  # the shapes model explains it
    assert kind.options({"input_size": [3, 96, 96], "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}) == \
        {"size": 96, "mean": (0.1, 0.2, 0.3), "std": (1.0, 2.0, 3.0)}
    assert kind.options({}) == {"size": 224}
