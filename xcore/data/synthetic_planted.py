"""The *planted* failure of the synthetic shapes set: a second saturated shape of another class beside the label object.

It serves the surprise analysis (thesis §6.2.4, visualised in §6.3.2): for an image of class ``c``, filter ``n`` is
surprising when its Grad-AMap score exceeds the class' training percentile, ``α_n > P_cn(99.9)``. Every planted
image is drawn like a val image (:func:`xcore.data.synthetic_scene.render_scene`) and then gets a *cue*, a smaller
shape of class ``m != c`` in a *saturated* colour, away from the label object. Training never shows two saturated
shapes (its decoys are greyish), so class ``m``'s filters fire on a sample of class ``c``: the failure the analysis
must find and the §6.3 visualisations must point at.

:func:`xcore.data.synthetic_images.generate_images` writes the planted images to ``planted/``, an ImageNet root with
a val split only, with ``PLANTED_META`` mapping each stem to its label and its cue (:meth:`Cue.record`). The planted
images draw from their own random streams, so train and val bytes do not depend on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from xcore.data.synthetic_scene import (
    _UNIT_AREA,
    OBJECT_SATURATION,
    SHAPES,
    WNIDS,
    Scene,
    _draw_shape,
    _hsv,
    mask_box,
    render_scene,
)
from xcore.errors import UsageError

DEFAULT_PLANTED_PER_CLASS = 10
CUE_SCALE = (0.6, 0.8)
"""Linear size of the cue relative to the label object's (area-equivalent): its area is 36-64 % of the object's."""
PLANTED_DIR = "planted"
PLANTED_META = "xcore_planted.json"


@dataclass
class Cue:
    """A planted cue: a saturated shape of class ``mimics`` that never decides the label; ``mask`` is its pixels."""

    mimics: int
    centre: tuple[float, float]
    radius: float
    angle: float
    color: tuple[int, int, int]
    mask: np.ndarray  # bool (H, W)

    def record(self) -> dict[str, Any]:
        """The cue as written to ``xcore_planted.json``; :func:`shape_mask` of these values gives ``mask`` back."""
        return {"kind": "saturated_shape", "mimics": self.mimics, "mimics_wnid": WNIDS[self.mimics],
                "shape": SHAPES[self.mimics], "box": mask_box(self.mask), "centre": list(self.centre),
                "radius": self.radius, "angle": self.angle, "color": list(self.color)}


def shape_mask(shape: str, centre: tuple[float, float], radius: float, angle: float, size: int) -> np.ndarray:
    """The bool (size, size) mask of ``shape`` drawn as the label object is (a ring's hole is outside)."""
    img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(img), shape, centre[0], centre[1], radius, angle, 255)
    return np.asarray(img) > 0


def _place_cue(rng: np.random.Generator, scene: Scene, mimics: int, size: int, tries: int = 16) -> Cue | None:
    """Paint a cue on ``scene`` whose box, grown by a gap, misses the object mask; ``None`` when none fits.

    Radius ``r = s sqrt(A_object / A_1(shape))`` with ``s ~ U(CUE_SCALE)`` and ``A_1`` the area at radius 1, so
    the cue's area is ``s^2`` times the object's (mask pixels); its colour is drawn as the object's is.
    """
    shape = SHAPES[mimics]
    r = rng.uniform(*CUE_SCALE) * math.sqrt(scene.mask.sum() / _UNIT_AREA[shape])
    margin, gap = 1.12 * r + 1, max(2, size // 32)
    if size - 1 - 2 * margin <= 0:
        return None
    for _ in range(tries):
        cx, cy = rng.uniform(margin, size - 1 - margin, 2)
        angle = rng.uniform(0, 2 * math.pi)
        mask = shape_mask(shape, (cx, cy), r, angle, size)
        x0, y0, x1, y1 = mask_box(mask)
        if scene.mask[max(0, y0 - gap):y1 + gap + 1, max(0, x0 - gap):x1 + gap + 1].any():
            continue
        under = np.asarray(scene.image, np.float32)[mask].mean(axis=0)
        color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
        for _ in range(32):  # as visible as the object
            if np.abs(color - under).sum() >= 150:
                break
            color = _hsv(rng, OBJECT_SATURATION, (0.6, 1.0))
        rgb = (int(color[0]), int(color[1]), int(color[2]))
        scene.image.paste(Image.new("RGB", (size, size), rgb), (0, 0), Image.fromarray(mask.astype(np.uint8) * 255))
        return Cue(mimics, (float(cx), float(cy)), float(r), float(angle), rgb, mask)
    return None


def render_planted(rng: np.random.Generator, size: int, label: int, mimics: int) -> tuple[Scene, Cue]:
    """A val scene of class ``label`` (:func:`render_scene`) plus a cue of class ``mimics`` beside the object.

    Scenes whose object leaves no room for the cue are drawn again from the same stream, so planted objects lean
    towards the smaller sizes and off-centre places of the val recipe.
    """
    if mimics == label:
        raise UsageError(f"a planted cue must mimic another class than the label {label}")
    for _ in range(4096):  # 32 px: ~10 draws on average, rarely a few hundred; 112 px: ~2
        scene = render_scene(rng, size, label)
        cue = _place_cue(rng, scene, mimics, size)
        if cue is not None:
            return scene, cue
    raise RuntimeError(f"no room for a planted cue in {size}px images")  # pragma: no cover - size >= 32 fits


def planted_plan(seed: int, per_class: int) -> list[tuple[int, int]]:
    """(label, mimicked class) per planted image: ``per_class`` per label, the mimicked class cycling through the
    other classes, in a seeded order (its own stream: the train and val draws are untouched)."""
    n = len(SHAPES)
    plan = [(label, (label + 1 + k % (n - 1)) % n) for k in range(per_class) for label in range(n)]
    return [plan[int(j)] for j in np.random.default_rng([seed, 98]).permutation(len(plan))]
