"""A synthetic COCO-format dataset with exact masks (Lin et al., Microsoft COCO, ECCV 2014 / cocodataset.org data
format): the embedded default of the ``coco`` kind, for the pointing game (thesis §5.4.4.1).

Each H×W image (default 128×160) is the textured background of :mod:`xcore.data.synthetic_scene` with 2-4
saturated shapes of 1-3 different classes (a class may have two instances), never overlapping: each shape keeps
2 px clear of the others' bounding circles (shapes are shrunk until they fit; one that still does not fit is left
out). In about half of the images with several classes one class is *dominant* (its shape covers 27-31 % of the
image), so both difficult and non-difficult (image, class) pairs exist (EBP rule: < 25 % with another class present).

Segmentations: a polygon (the one drawn; a disc as a 48-gon) for most instances, a compressed RLE (pycocotools
``encode``, ``counts`` a str) for rings (a hole is not a polygon) and for about 1 in 5 other instances, and an
uncompressed RLE (``counts`` a list of ints, column-major runs from :func:`rle_counts`) with ``iscrowd=1`` for about
1 in 8. Every mask painted is the one pycocotools decodes from what is written: a polygon is rasterised by
pycocotools from its written (rounded) coordinates, an RLE instance by PIL, and the object colour is painted exactly
where that mask is True. ``area`` is the mask's pixel count and ``bbox`` its tight [x, y, w, h]. Layout::

    val2014/COCO_val2014_<12-digit image id>.jpg   annotations/instances_val2014.json   xcore_coco.json

Image ``k`` (id ``k + 1``) draws from ``numpy.random.default_rng([seed, k])``, its background first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from xcore.data.synthetic_scene import (
    _UNIT_AREA,
    OBJECT_SATURATION,
    SHAPES,
    _background,
    _cross,
    _draw_shape,
    _hsv,
    _rotated,
)
from xcore.errors import UsageError
from xcore.io.atomic import materialise_dir

FORMAT_VERSION = 1
MARKER = "xcore_coco.json"
CATEGORY_IDS: tuple[int, ...] = (1, 3, 4, 7, 9, 12)
"""Sparse COCO category ids of :data:`~xcore.data.synthetic_scene.SHAPES`, in that order."""
IMAGE_DIR = "val2014"
ANNOTATIONS = "annotations/instances_val2014.json"
IMAGE_NAME = "COCO_val2014_%012d.jpg"
JPEG_QUALITY = 95
CROWD_RATE = 1 / 8
RLE_RATE = 0.2
DOMINANT_RATE = 0.5
DOMINANT_AREA = (0.27, 0.31)
"""Target area fraction of a dominant class's shape (≥ 25 %: not difficult)."""
SMALL_RADIUS = (0.05, 0.12)
"""Radius of the other shapes as a fraction of min(H, W) (far below 25 % of the image)."""
_BOUND = {"disc": 1.0, "square": 1.0, "triangle": 1.1, "cross": 1.06, "star": 1.1, "ring": 1.0}
"""Radius of each shape's bounding circle per unit radius (polygon vertices at most this far from the centre)."""
_COMPACT = ("disc", "square", "cross", "ring")  # shapes that can cover 31 % of a 128x160 image and still fit


def default_coco_root() -> Path:
    """Where the synthetic COCO set lives: ``$XCORE_COCO_DATA`` or ``.xcore/data/coco`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_COCO_DATA", ".xcore/data/coco"))


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE ``counts`` of a bool (H, W) mask: lengths of alternating runs over the pixels in
    column-major (Fortran) order, the first run background (0 when the first pixel is foreground)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[float]:
    """The flat ``[x1, y1, ...]`` outline of ``shape`` (a disc as a 48-gon), rounded to 1/100 px as written."""
    if shape == "disc":
        pts = _rotated(cx, cy, [r] * 48, angle)
    elif shape == "square":
        pts = _rotated(cx, cy, [r] * 4, angle)
    elif shape == "triangle":
        pts = _rotated(cx, cy, [r * 1.1] * 3, angle)
    elif shape == "cross":
        pts = _cross(cx, cy, r, angle)
    elif shape == "star":
        pts = _rotated(cx, cy, [r * 1.1, r * 0.45] * 5, angle)
    else:
        raise ValueError(f"{shape} has no polygon")
    return [round(v, 2) for p in pts for v in p]


def _layout(rng: np.random.Generator, height: int, width: int) -> list[tuple[int, float, float, float, float]]:
    """Non-overlapping instances ``(label, cx, cy, r, angle)``; a dominant class, if any, first."""
    n_cls = int(rng.choice([1, 2, 3], p=[0.2, 0.4, 0.4]))
    classes = [int(c) for c in rng.choice(len(SHAPES), n_cls, replace=False)]
    labels = classes + [int(c) for c in rng.choice(classes, int(rng.integers(max(2, n_cls), 5)) - n_cls)]
    compact = [c for c in classes if SHAPES[c] in _COMPACT]
    dominant = compact[0] if n_cls > 1 and compact and rng.random() < DOMINANT_RATE else None
    if dominant is not None:
        labels.remove(dominant)
        labels.insert(0, dominant)
    placed: list[tuple[int, float, float, float, float]] = []
    for k, label in enumerate(labels):
        shape = SHAPES[label]
        if k == 0 and dominant is not None:
            r = math.sqrt(rng.uniform(*DOMINANT_AREA) * height * width / _UNIT_AREA[shape])
        else:
            r = rng.uniform(*SMALL_RADIUS) * min(height, width)
        r = min(r, (min(height, width) / 2 - 2) / _BOUND[shape])  # the bounding circle fits in the image
        for attempt in range(400):
            if attempt and attempt % 50 == 0:
                r *= 0.85
            bound = _BOUND[shape] * r + 1
            cx, cy = rng.uniform(bound, width - 1 - bound), rng.uniform(bound, height - 1 - bound)
            if all(math.hypot(cx - px, cy - py) >= bound + _BOUND[SHAPES[pl]] * pr + 3 for pl, px, py, pr, _ in placed):
                placed.append((label, cx, cy, r, rng.uniform(0, 2 * math.pi)))
                break
    return placed


def render_coco_image(seed: int, index: int,
                      size: tuple[int, int] = (128, 160)) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Image ``index``: (uint8 (H, W, 3) pixels before JPEG, its annotations without ``id`` / ``image_id``).

    Outside every mask the pixels are ``_background(rng, max(H, W))[:H, :W]`` as uint8; inside an instance's mask
    they are its colour."""
    from pycocotools import mask as mask_utils

    height, width = size
    rng = np.random.default_rng([seed, index])
    pixels = _background(rng, max(height, width))[:height, :width].astype(np.uint8)
    bg = pixels.astype(np.float64)
    anns: list[dict[str, Any]] = []
    for label, cx, cy, r, angle in _layout(rng, height, width):
        shape = SHAPES[label]
        crowd = bool(rng.random() < CROWD_RATE)
        as_rle = crowd or shape == "ring" or bool(rng.random() < RLE_RATE)
        if as_rle:
            canvas = Image.new("L", (width, height), 0)
            _draw_shape(ImageDraw.Draw(canvas), shape, cx, cy, r, angle, 255)
            mask = np.asarray(canvas) > 0
            if crowd:
                seg: Any = {"counts": rle_counts(mask), "size": [height, width]}
            else:
                enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                seg = {"counts": enc["counts"].decode("ascii"), "size": [height, width]}
        else:
            seg = [_polygon(shape, cx, cy, r, angle)]
            mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, height, width))).astype(bool)
        if not mask.any():  # a shape shrunk below a pixel
            continue
        under = bg[mask].mean(axis=0)
        color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
        for _ in range(32):  # clear contrast with the background under the object
            if np.abs(color - under).sum() >= 150:
                break
            color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
        pixels[mask] = color.astype(np.uint8)
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        anns.append({"category_id": CATEGORY_IDS[label], "segmentation": seg, "area": int(mask.sum()),
                     "bbox": bbox, "iscrowd": int(crowd)})
    return pixels, anns


def _write(folder: Path, n_images: int, size: tuple[int, int], seed: int) -> None:
    (folder / IMAGE_DIR).mkdir(parents=True)
    (folder / ANNOTATIONS).parent.mkdir(parents=True)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for k in range(n_images):
        pixels, objects = render_coco_image(seed, k, size)
        name = IMAGE_NAME % (k + 1)
        Image.fromarray(pixels).save(folder / IMAGE_DIR / name, quality=JPEG_QUALITY)
        images.append({"id": k + 1, "file_name": name, "height": size[0], "width": size[1]})
        anns += [{"id": len(anns) + j + 1, "image_id": k + 1, **obj} for j, obj in enumerate(objects)]
    categories = [{"id": c, "name": s, "supercategory": "shape"} for c, s in zip(CATEGORY_IDS, SHAPES, strict=True)]
    info = {"description": "xcore synthetic shapes in COCO format", "version": str(FORMAT_VERSION)}
    data = {"info": info, "licenses": [], "images": images, "annotations": anns, "categories": categories}
    (folder / ANNOTATIONS).write_text(json.dumps(data))


def generate_coco(root: Path | str, *, n_images: int = 60, size: tuple[int, int] = (128, 160), seed: int = 0) -> Path:
    """Write the synthetic COCO set under ``root`` (idempotent, atomic) and return ``root``.

    ``root/xcore_coco.json`` equal to this call's parameters (with :data:`FORMAT_VERSION`) means the data is there:
    nothing is done. A root with another marker (other parameters, an older format) is replaced; a non-empty root
    without the marker is not ours: ``UsageError``. Files go to a hidden sibling folder, the marker last, which is
    then renamed into place, so an interrupted run never looks complete.
    """
    root = Path(root)
    height, width = (int(v) for v in size)
    if n_images < 1 or height < 64 or width < 64:
        raise UsageError(f"generate_coco needs n_images >= 1 and an image size of at least 64x64; got {n_images}, "
                         f"{height}x{width}")
    params = {"format": FORMAT_VERSION, "n_images": n_images, "size": [height, width], "seed": seed}
    return materialise_dir(root, params, lambda folder: _write(folder, n_images, (height, width), seed),
                           what="COCO data", marker=MARKER, replace_ours=True)
