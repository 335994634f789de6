"""The synthetic shapes set with known ground truth, written in the real ImageNet (Kaggle CLS-LOC) layout.

Each image is one scene of :mod:`xcore.data.synthetic_scene` (a saturated label object whose shape decides the
class, among distractors and greyish decoys); the *planted* val subset of :mod:`xcore.data.synthetic_planted` adds a
saturated cue of another class beside the object (the failure the surprise analysis of thesis §6.2.4 must find).
The public names of both are re-exported here. Layout written by :func:`generate_images` (ImageNet conventions,
Kaggle CLS-LOC copy: docs/formats/imagenet.md)::

    LOC_synset_mapping.txt   train/<wnid>/<wnid>_<k>.JPEG   val/ILSVRC2012_val_<8 digits>.JPEG
    val_boxes/<stem>.xml     val_masks/<stem>.png           LOC_val_solution.csv    .complete
    train_masks/<wnid>/<wnid>_<k>.png
    planted/   an ImageNet root with a val split only (LOC_synset_mapping.txt, val/, val_boxes/, val_masks/,
               LOC_val_solution.csv), stems numbered on from the last val image, plus xcore_planted.json

Masks and boxes are those of the label-deciding object (planted images too): ``L``-mode PNGs, 255 inside it and 0
elsewhere. ``xcore_planted.json`` maps each planted stem to its label and its cue (class mimicked, box, centre,
radius, angle, colour). Format 2 added ``train_masks/`` (ROAR/KAR's ground-truth oracle ranks train images too),
format 3 ``planted/``; train and val images are byte-identical across formats (the planted images draw from their
own random streams), and a format-1 or -2 folder of the same parameters is regenerated in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from xcore.data.synthetic_planted import (
    CUE_SCALE,
    DEFAULT_PLANTED_PER_CLASS,
    PLANTED_DIR,
    PLANTED_META,
    Cue,
    planted_plan,
    render_planted,
    shape_mask,
)
from xcore.data.synthetic_scene import (
    DECOY_SATURATION,
    OBJECT_SATURATION,
    SHAPES,
    WNIDS,
    Scene,
    mask_box,
    render_scene,
    scene_rng,
)
from xcore.data.synthetic_scene import _background as _background  # re-exported: synthetic_video_frames
from xcore.data.synthetic_scene import _hsv as _hsv
from xcore.errors import UsageError
from xcore.io.atomic import materialise_dir, read_json

__all__ = [
    "CLASS_NAMES", "CUE_SCALE", "DECOY_SATURATION", "DEFAULT_PLANTED_PER_CLASS", "DEFAULT_TRAIN_PER_CLASS",
    "DEFAULT_VAL", "FORMAT_VERSION", "JPEG_QUALITY", "OBJECT_SATURATION", "PLANTED_DIR", "PLANTED_META", "SHAPES",
    "WNIDS", "Cue", "Scene", "box_xml", "generate_images", "mask_box", "planted_plan", "render_planted",
    "render_scene", "save_mask", "scene_rng", "shape_mask", "val_labels", "val_stem",
]

FORMAT_VERSION = 3  # 3: planted/; 2: train_masks/ (format 1 had val_masks/ only)
CLASS_NAMES: tuple[str, ...] = tuple(f"{s}, synthetic {s} shape" for s in SHAPES)
DEFAULT_TRAIN_PER_CLASS = 350
DEFAULT_VAL = 180
JPEG_QUALITY = 95


def val_labels(seed: int, n_val: int) -> list[int]:
    """Balanced, shuffled val labels."""
    labels = np.arange(n_val) % len(SHAPES)
    return [int(v) for v in np.random.default_rng([seed, 99]).permutation(labels)]


def val_stem(index: int) -> str:
    """``ILSVRC2012_val_00000001`` for index 0."""
    return f"ILSVRC2012_val_{index + 1:08d}"


def box_xml(stem: str, size: int, wnid: str, box: list[int]) -> str:
    """PASCAL-VOC XML laid out like ImageNet's per-image val annotation."""
    xmin, ymin, xmax, ymax = box
    return (
        "<annotation>\n\t<folder>val</folder>\n"
        f"\t<filename>{stem}</filename>\n"
        "\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>0</segmented>\n"
        f"\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n"
        "\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
        f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        "</annotation>\n"
    )


def save_mask(mask: np.ndarray, path: Path) -> None:
    """Write a bool (H, W) mask as an ``L``-mode PNG: 255 inside, 0 outside (val and train masks alike)."""
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _write_val_image(root: Path, stem: str, scene: Scene, size: int) -> str:
    """Write one val image with its mask and box XML under ``root``; return its ``LOC_val_solution.csv`` row."""
    wnid, box = WNIDS[scene.label], scene.box
    for sub in ("val", "val_boxes", "val_masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    scene.image.save(root / "val" / f"{stem}.JPEG", quality=JPEG_QUALITY)
    save_mask(scene.mask, root / "val_masks" / f"{stem}.png")
    (root / "val_boxes" / f"{stem}.xml").write_text(box_xml(stem, size, wnid, box))
    return f"{stem},{wnid} {' '.join(map(str, box))}"


def _write_val_root(root: Path, rows: list[str]) -> None:
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, CLASS_NAMES, strict=True)))
    (root / "LOC_val_solution.csv").write_text("\n".join(["ImageId,PredictionString", *rows]) + "\n")




def _write_planted(root: Path, seed: int, size: int, per_class: int, first_index: int) -> None:
    """The planted val root under ``root / PLANTED_DIR``, stems numbered on from ``first_index``."""
    planted = root / PLANTED_DIR
    rows, cues = [], {}
    for i, (label, mimics) in enumerate(planted_plan(seed, per_class)):
        stem = val_stem(first_index + i)
        scene, cue = render_planted(scene_rng(seed, "planted", i), size, label, mimics)
        rows.append(_write_val_image(planted, stem, scene, size))
        cues[stem] = {"label": label, "wnid": WNIDS[label], "cue": cue.record()}
    _write_val_root(planted, rows)
    meta = {"seed": seed, "size": size, "cue_scale": list(CUE_SCALE), "cue_saturation": list(OBJECT_SATURATION),
            "decoy_saturation": list(DECOY_SATURATION), "images": cues}
    (planted / PLANTED_META).write_text(json.dumps(meta, indent=1) + "\n")


def _write(tmp: Path, n_train_per_class: int, n_val: int, size: int, seed: int, planted_per_class: int) -> None:
    for label, wnid in enumerate(WNIDS):
        folder, masks = tmp / "train" / wnid, tmp / "train_masks" / wnid
        folder.mkdir(parents=True)
        masks.mkdir(parents=True)
        for k in range(n_train_per_class):
            scene = render_scene(scene_rng(seed, "train", label * n_train_per_class + k), size, label)
            scene.image.save(folder / f"{wnid}_{k + 1}.JPEG", quality=JPEG_QUALITY)
            save_mask(scene.mask, masks / f"{wnid}_{k + 1}.png")
    rows = [_write_val_image(tmp, val_stem(i), render_scene(scene_rng(seed, "val", i), size, label), size)
            for i, label in enumerate(val_labels(seed, n_val))]
    _write_val_root(tmp, rows)
    if planted_per_class:
        _write_planted(tmp, seed, size, planted_per_class, first_index=n_val)


def generate_images(root: Path | str, *, n_train_per_class: int = DEFAULT_TRAIN_PER_CLASS, n_val: int = DEFAULT_VAL,
                    size: int = 112, seed: int = 0, planted_per_class: int = DEFAULT_PLANTED_PER_CLASS,
                    force: bool = False) -> Path:
    """Write the synthetic dataset under ``root`` (idempotent, atomic) and return ``root``.

    ``planted_per_class`` images per class go to ``root/planted`` (0: none, no folder). A matching
    ``root/.complete`` marker means the data is already there: nothing is done. A marker that differs only in
    ``format`` (an older generator's output of the same set; formats 1-2 had no ``planted_per_class``) is
    regenerated. A root holding anything else (other parameters, foreign files) is only replaced with
    ``force=True``. Files are written into a hidden sibling folder that is renamed into place, so an interrupted
    run never looks complete.
    """
    root = Path(root)
    params = {"format": FORMAT_VERSION, "n_train_per_class": n_train_per_class, "n_val": n_val,
              "planted_per_class": planted_per_class, "size": size, "seed": seed}
    if n_train_per_class < 1 or n_val < 1 or planted_per_class < 0 or size < 32:
        raise UsageError("generate needs n_train_per_class >= 1, n_val >= 1, planted_per_class >= 0 and size >= 32")
    old = None if force else read_json(root / ".complete")
    if old is not None and "planted_per_class" not in old:  # format 1 or 2 of the same train / val set
        force = {**old, "format": FORMAT_VERSION, "planted_per_class": planted_per_class} == params
    return materialise_dir(root, params, lambda tmp: _write(tmp, n_train_per_class, n_val, size, seed,
                                                            planted_per_class), force=force, what="data")
