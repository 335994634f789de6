"""One rendered image of the synthetic shapes set: a saturated label object whose *shape* decides the class.

The object (disc, square, triangle, cross, star, ring) is drawn in a saturated colour over a textured background, on
top of 1-3 distractors that never decide the label: thin lines, small dots, thin elongated ellipses, and *decoys* —
class shapes in desaturated (greyish) colours. Decoys make the model read the shape of the saturated object only, so
deleting the object (painting it the mean colour, as deletion metrics do) really removes the evidence instead of
leaving a grey silhouette of the same shape. The object's mask is exact: ``Scene.mask`` is the ground truth that
explanation metrics are checked against. Every image draws from its own stream (:func:`scene_rng`).
:mod:`xcore.data.synthetic_images` writes the scenes as an ImageNet-layout dataset.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "star", "ring")
WNIDS: tuple[str, ...] = tuple(f"n09{k:06d}" for k in range(len(SHAPES)))
"""Fake but well-formed WNIDs; sorted order equals class order."""
OBJECT_SATURATION = (0.65, 1.0)
"""HSV saturation range of the label-deciding object and of the planted cue."""
DECOY_SATURATION = (0.0, 0.2)
"""HSV saturation range of the decoys: a saturated shape never appears in training except as the label object."""
_SPLIT_CODES = {"train": 1, "val": 2, "planted": 3}
_UNIT_AREA = {"disc": math.pi, "square": 2.0, "triangle": 0.75 * math.sqrt(3) * 1.1 ** 2,
              "cross": 4 * 0.32 ** 2 + 8 * 0.32 * 0.68, "star": 5 * 1.1 * 0.45 * math.sin(math.pi / 5),
              "ring": math.pi * (1 - 0.55 ** 2)}
"""Area of each shape drawn with radius 1 (see :func:`_draw_shape`)."""
Point = tuple[float, float]


@dataclass
class Scene:
    """One rendered image with its ground truth: ``mask`` is the label-deciding object only."""

    image: Image.Image
    mask: np.ndarray  # bool (H, W)
    label: int
    color: tuple[int, int, int]

    @property
    def box(self) -> list[int]:
        """Tight [xmin, ymin, xmax, ymax] of the mask, 0-based inclusive pixels."""
        return mask_box(self.mask)


def mask_box(mask: np.ndarray) -> list[int]:
    """Tight [xmin, ymin, xmax, ymax] of a non-empty bool mask, 0-based inclusive pixels."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(3, 9))
    low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured (H, W, 3) float background: smooth noise, stripes or a colour gradient, plus grain."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0 = rng.uniform(50, 205, 3)
    c1 = np.clip(c0 + rng.uniform(-80, 80, 3), 0, 255)
    kind = int(rng.integers(3))
    if kind == 0:
        bg = c0 + (_smooth_noise(rng, size) - 0.5) * rng.uniform(60, 140)
    else:
        theta = rng.uniform(0, math.pi)
        proj = xx * math.cos(theta) + yy * math.sin(theta)
        if kind == 1:
            t = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(3, 9) * proj + rng.uniform(0, 2 * math.pi))
        else:
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
        bg = c0 + t[..., None] * (c1 - c0)
    bg = bg + rng.normal(0, 4, (size, size, 3))
    return np.clip(bg, 0, 255)


def _rotated(cx: float, cy: float, radii: list[float], angle: float) -> list[Point]:
    n = len(radii)
    return [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
            for k, r in enumerate(radii)]


def _cross(cx: float, cy: float, r: float, angle: float) -> list[Point]:
    w = 0.32 * r
    local = [(w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w),
             (-w, r), (w, r)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float,
                fill: int | tuple[int, int, int], hole: int | None = 0) -> None:
    """Draw ``shape``; a ring's hole is filled with ``hole`` (0 on a mask) or left undrawn (``None``)."""
    if shape in ("disc", "ring"):
        if shape == "ring" and hole is None:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(1, round(0.45 * r)))
            return
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        if shape == "ring":
            ri = 0.55 * r
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=hole)
    elif shape == "square":
        draw.polygon(_rotated(cx, cy, [r] * 4, angle), fill=fill)
    elif shape == "triangle":
        draw.polygon(_rotated(cx, cy, [r * 1.1] * 3, angle), fill=fill)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, r, angle), fill=fill)
    elif shape == "star":
        draw.polygon(_rotated(cx, cy, [r * 1.1, r * 0.45] * 5, angle), fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    """A random RGB colour (0-255) with saturation and value drawn from the given ranges."""
    h, sv, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    rgb = colorsys.hsv_to_rgb(h, sv, v)
    return np.array([round(255 * c) for c in rgb])


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A line, a small dot, a thin ellipse, or a decoy: a class shape in a desaturated colour."""
    color = tuple(int(v) for v in rng.integers(0, 256, 3))
    unit = size / 112
    kind = int(rng.integers(5))
    x, y = rng.uniform(0, size, 2)
    if kind >= 3:  # decoy (2 of 5 distractors): shape of any class, greyish, so it never decides the label
        grey = tuple(int(v) for v in _hsv(rng, DECOY_SATURATION, (0.25, 0.85)))
        r = rng.uniform(0.12, 0.25) * size
        _draw_shape(draw, SHAPES[int(rng.integers(len(SHAPES)))], x, y, r, rng.uniform(0, 2 * math.pi), grey,
                    hole=None)
    elif kind == 0:
        length, theta = rng.uniform(0.2, 0.6) * size, rng.uniform(0, math.pi)
        end = (x + length * math.cos(theta), y + length * math.sin(theta))
        draw.line([(x, y), end], fill=color, width=max(1, round(rng.uniform(1, 2.5) * unit)))
    elif kind == 1:
        rr = rng.uniform(1.5, 3.5) * unit
        draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=color)
    else:
        a = rng.uniform(0.1, 0.22) * size
        b = a / rng.uniform(4.0, 6.0)
        theta = rng.uniform(0, math.pi)
        c, s = math.cos(theta), math.sin(theta)
        pts = [(a * math.cos(t), b * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
        draw.polygon([(x + px * c - py * s, y + px * s + py * c) for px, py in pts], fill=color)


def render_scene(rng: np.random.Generator, size: int, label: int) -> Scene:
    """Draw one image of class ``label``: background, distractors behind, then the object on top."""
    bg = _background(rng, size)
    canvas = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 4))):
        _draw_distractor(draw, rng, size)
    r = rng.uniform(0.17, 0.3) * size
    margin = 1.12 * r + 1
    cx, cy = rng.uniform(margin, size - 1 - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    mask_img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask_img), SHAPES[label], cx, cy, r, angle, 255)
    mask = np.asarray(mask_img) > 0
    under = bg[mask].mean(axis=0)
    color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
    for _ in range(32):  # keep the object visible: clear contrast with the background under it
        if np.abs(color - under).sum() >= 150:
            break
        color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
    rgb = (int(color[0]), int(color[1]), int(color[2]))
    canvas.paste(Image.new("RGB", (size, size), rgb), (0, 0), mask_img)
    return Scene(canvas, mask, label, rgb)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image, independent of every other image (so files are reproducible alone)."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])
