"""A synthetic BAM: saturated shapes (the *objects*) pasted onto procedural textures (the *scenes*), in BAM's layout.

BAM (Yang & Kim, *Benchmarking Attribution Methods with Relative Feature Importance*, arXiv 1907.09701;
google-research-datasets/bam) pastes 10 COCO objects onto 10 MiniPlaces scenes and labels every image twice: by its
object (``obj/``) and by its scene (``scene/``). The model contrast score (Hartley, *An Investigation into Explanations
for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.5.4, eqs 3.7–3.9) compares
the object region's attribution of a model trained on each labelling. Here the objects are the saturated shapes of
:mod:`xcore.data.synthetic_scene` and the scenes are five texture families whose *structure* (frequency, layout) —
not colour or orientation — decides the label, drawn in desaturated colours, so the object is the only saturated
thing in an image. Every class is invariant to flips and 90° rotations (textures have a random angle).

Layout written by :func:`generate_bam` under ``root`` (BAM's ``data/``), for ``L`` in ``obj`` and ``scene``::

    L/train/<class>/<obj>-<scene>-<iiii>.jpg    i = 0 .. n_train_per_pair - 1
    L/val/<obj>-<scene>-<iiii>.jpg              i = 900 + scene_index * n_val_per_pair + k (flat)
    L/val.txt       <fname> <class_idx>         classes sorted by name (= the train folders)
    L/val_loc.txt   <fname> <row_min>,<col_min>,<row_max>,<col_max>   rows first, max exclusive, 128 px
    L/val_mask      .npy without extension: object array of n_objects * 100 cropped uint8 0/1 masks, index
                    obj_idx * 100 + the last two digits of iiii, obj_idx = the object's rank among the sorted
                    object names (unused slots are empty (0, 0) arrays)

The same image bytes appear in both layouts. Images are 128×128 JPEGs (quality 95); each draws from its own random
stream, so a file does not depend on the others.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from xcore.data.synthetic_scene import OBJECT_SATURATION, SHAPES, _draw_shape, _hsv
from xcore.errors import UsageError
from xcore.io.atomic import materialise_dir

FORMAT_VERSION = 1
SIZE = 128
JPEG_QUALITY = 95
VAL_START = 900
LAYOUTS: tuple[str, ...] = ("obj", "scene")
OBJECTS: tuple[str, ...] = SHAPES[:5]
TEXTURES: tuple[str, ...] = ("checker", "dots", "smooth", "stripes_fine", "stripes_wide")
DEFAULT_TRAIN_PER_PAIR = 12
DEFAULT_VAL_PER_PAIR = 4
SCENE_SATURATION = (0.0, 0.35)
"""HSV saturation range of the scene colours: well below the objects' (:data:`OBJECT_SATURATION`)."""
SCENE_CONTRAST = (30.0, 45.0)
"""Grey-level step between a texture's two colours: visible, yet weaker than the objects' edges."""
OBJECT_RADIUS = (0.18, 0.28)
"""Object radius as a fraction of the image side (:func:`xcore.data.synthetic_scene._draw_shape`)."""
_SPLIT_CODES = {"train": 1, "val": 2}


def default_bam_root() -> Path:
    """Where the synthetic BAM lives: ``$XCORE_BAM_DATA`` or ``.xcore/data/bam`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_BAM_DATA", ".xcore/data/bam"))


def _rotated_coords(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) in a frame rotated by a random angle and shifted by a random offset."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    u0, v0 = rng.uniform(0, 64, 2)
    return xx * c + yy * s + u0, -xx * s + yy * c + v0


def texture(rng: np.random.Generator, kind: str, size: int = SIZE) -> np.ndarray:
    """A (size, size, 3) float background of texture family ``kind`` in two desaturated colours, plus grain.

    ``stripes_wide``: sinusoidal stripes of period 18–26 px; ``stripes_fine``: period 8–11 px; ``checker``: cells of
    9–14 px; ``dots``: discs of radius 2.5–4 px on a 13–18 px lattice; ``smooth``: a bicubic 2–3-cell random field.
    """
    c0 = _hsv(rng, SCENE_SATURATION, (0.3, 0.85)).astype(np.float64)
    step = rng.uniform(*SCENE_CONTRAST) * (1 if c0.mean() < 128 else -1)  # lighter on dark, darker on light
    c1 = np.clip(c0 + step + rng.uniform(-8, 8, 3), 0, 255)
    if kind == "smooth":
        cells = int(rng.integers(2, 4))
        low = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
        t = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), np.float64) / 255
    else:
        u, v = _rotated_coords(rng, size)
        if kind in ("stripes_wide", "stripes_fine"):
            period = rng.uniform(18, 26) if kind == "stripes_wide" else rng.uniform(8, 11)
            t = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
        elif kind == "checker":
            cell = rng.uniform(9, 14)
            t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float64)
        elif kind == "dots":
            step, radius = rng.uniform(13, 18), rng.uniform(2.5, 4.0)
            du, dv = u % step - step / 2, v % step - step / 2
            t = (du * du + dv * dv <= radius * radius).astype(np.float64)
        else:
            raise UsageError(f"unknown BAM texture {kind!r}; use one of {', '.join(TEXTURES)}")
    bg = c0 + t[..., None] * (c1 - c0) + rng.normal(0, 4, (size, size, 3))
    return np.clip(bg, 0, 255)


def render_bam(rng: np.random.Generator, obj: str, scene: str, size: int = SIZE) -> tuple[Image.Image, np.ndarray]:
    """One image: scene texture ``scene`` with a saturated ``obj`` shape pasted at a random position, scale and angle.

    Returns the RGB image and the object's bool (size, size) mask.
    """
    bg = texture(rng, scene, size)
    r = rng.uniform(*OBJECT_RADIUS) * size
    margin = 1.12 * r + 1
    cx, cy = rng.uniform(margin, size - 1 - margin, 2)
    mask_img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask_img), obj, cx, cy, r, rng.uniform(0, 2 * math.pi), 255)
    mask = np.asarray(mask_img) > 0
    under = bg[mask].mean(axis=0)
    color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
    for _ in range(32):  # keep the object visible against the texture under it
        if np.abs(color - under).sum() >= 150:
            break
        color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
    canvas = Image.fromarray(bg.astype(np.uint8))
    canvas.paste(Image.new("RGB", (size, size), tuple(int(c) for c in color)), (0, 0), mask_img)
    return canvas, mask


def loc_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """BAM's ``val_loc`` box of a non-empty mask: (row_min, col_min, row_max, col_max), max exclusive."""
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write(tmp: Path, objects: Sequence[str], scenes: Sequence[str], n_train: int, n_val: int, seed: int) -> None:
    for layout in LAYOUTS:
        for name in objects if layout == "obj" else scenes:
            (tmp / layout / "train" / name).mkdir(parents=True)
        (tmp / layout / "val").mkdir(parents=True)
    val: list[tuple[str, int, int, tuple[int, int, int, int]]] = []  # fname, obj idx, scene idx, loc
    obj_rank = {n: r for r, n in enumerate(sorted(objects))}  # BAM's object index: the sorted object names
    masks = np.empty(len(objects) * 100, dtype=object)
    for k in range(len(masks)):
        masks[k] = np.zeros((0, 0), np.uint8)
    for o, obj in enumerate(objects):
        for s, scene in enumerate(scenes):
            for split, count in (("train", n_train), ("val", n_val)):
                for k in range(count):
                    i = k if split == "train" else VAL_START + s * n_val + k
                    rng = np.random.default_rng([seed, _SPLIT_CODES[split], o, s, k])
                    img, mask = render_bam(rng, obj, scene)
                    fname, data = f"{obj}-{scene}-{i:04d}.jpg", _jpeg(img)
                    if split == "train":
                        (tmp / "obj" / "train" / obj / fname).write_bytes(data)
                        (tmp / "scene" / "train" / scene / fname).write_bytes(data)
                        continue
                    loc = loc_of(mask)
                    masks[obj_rank[obj] * 100 + i % 100] = mask[loc[0]:loc[2], loc[1]:loc[3]].astype(np.uint8)
                    val.append((fname, o, s, loc))
                    for layout in LAYOUTS:
                        (tmp / layout / "val" / fname).write_bytes(data)
    val.sort()
    for layout in LAYOUTS:
        rank = {n: r for r, n in enumerate(sorted(objects if layout == "obj" else scenes))}
        names = objects if layout == "obj" else scenes
        labels = [rank[names[o if layout == "obj" else s]] for _, o, s, _ in val]
        (tmp / layout / "val.txt").write_text("".join(f"{f} {y}\n" for (f, *_), y in zip(val, labels, strict=True)))
        (tmp / layout / "val_loc.txt").write_text("".join(f"{f} {','.join(map(str, loc))}\n" for f, *_, loc in val))
        with open(tmp / layout / "val_mask", "wb") as fh:  # a file object: np.save would append ".npy" to a name
            np.save(fh, masks, allow_pickle=True)


def generate_bam(root: Path | str, *, objects: Sequence[str] = OBJECTS, scenes: Sequence[str] = TEXTURES,
                 n_train_per_pair: int = DEFAULT_TRAIN_PER_PAIR, n_val_per_pair: int = DEFAULT_VAL_PER_PAIR,
                 seed: int = 0, force: bool = False) -> Path:
    """Write the synthetic BAM under ``root`` (idempotent, atomic) and return ``root``.

    ``objects`` are shape names of :data:`xcore.data.synthetic_scene.SHAPES` (default: the first five),
    ``scenes`` texture names of :data:`TEXTURES`; every (object, scene) pair gets ``n_train_per_pair`` train and
    ``n_val_per_pair`` val images (defaults: 300 train, 100 val). A ``root/.complete`` marker equal to these
    parameters (with the format version) means the data is there and nothing is done; a root holding anything else
    is only replaced with ``force=True``. Files are written into a hidden sibling folder renamed into place.
    """
    objects, scenes = list(objects), list(scenes)
    bad = [o for o in objects if o not in SHAPES] + [s for s in scenes if s not in TEXTURES]
    if bad:
        raise UsageError(f"unknown BAM object or scene {bad[0]!r}; objects from {', '.join(SHAPES)}, scenes from "
                         f"{', '.join(TEXTURES)}")
    if len(set(objects)) != len(objects) or len(set(scenes)) != len(scenes) or not objects or not scenes:
        raise UsageError("generate_bam needs distinct, non-empty objects and scenes")
    if n_train_per_pair < 1 or n_val_per_pair < 1 or n_train_per_pair > VAL_START \
            or len(scenes) * n_val_per_pair > 100:
        raise UsageError(f"generate_bam needs 1 <= n_train_per_pair <= {VAL_START} and 1 <= n_val_per_pair with "
                         "len(scenes) * n_val_per_pair <= 100 (val images are numbered 900-999)")
    params = {"format": FORMAT_VERSION, "objects": objects, "scenes": scenes, "n_train_per_pair": n_train_per_pair,
              "n_val_per_pair": n_val_per_pair, "seed": seed, "size": SIZE}
    return materialise_dir(root, params, lambda tmp: _write(tmp, objects, scenes, n_train_per_pair, n_val_per_pair,
                                                            seed), force=force, what="BAM data")
