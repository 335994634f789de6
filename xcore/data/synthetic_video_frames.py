"""The frames of the synthetic UCF-101-style videos: six classes that only motion can decide.

Six classes, each a way of moving (screen coordinates, y down; ``tests/integration/test_video_synthetic.py`` checks
them on the written tubes):

====  ====================  =========================================================
0     SlideRight            straight translation towards +x
1     SlideLeft             straight translation towards -x
2     SlideUp               straight translation towards -y
3     SlideDown             straight translation towards +y
4     CircleClockwise       circling clockwise on screen (angle increasing, y down)
5     CircleAnticlockwise   circling anticlockwise on screen
====  ====================  =========================================================

Every video: a static textured background (:func:`xcore.data.synthetic_images._background`), 1-3 static *look-alikes*
(the same shapes, sizes and colours as the mover; half of the videos hold an exact twin of it), one *mover* whose
shape, size, colour and speed (3-5 px per frame of 320x240, i.e. 0.8-1.3 px per frame in the 56 px crops) are
drawn independently of the class, in 30 % of the videos a static bar occluding it on its way, and Gaussian
luminance noise, fresh on every frame. The mover's position at the video's centre frame is uniform on the same
rectangle for every class (:func:`centre_region`), so the centre frame (the one a freeze-frame clip repeats)
says nothing about the class; the centre 16-frame clip stays inside the part of the frame that the 112 and 56 px
centre crops keep (:data:`VISIBLE`), while early and late frames may lose the mover off the frame edge (its
tube then covers only the frames it is in, as UCF101-24 tubes do). :mod:`xcore.data.synthetic_videos` writes
them out as a data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from xcore.data.synthetic_images import _background, _hsv

CLASSES: tuple[str, ...] = ("SlideRight", "SlideLeft", "SlideUp", "SlideDown", "CircleClockwise",
                            "CircleAnticlockwise")
MOTIONS: dict[str, str] = {
    "SlideRight": "the mover translates in a straight line towards +x (right)",
    "SlideLeft": "the mover translates in a straight line towards -x (left)",
    "SlideUp": "the mover translates in a straight line towards -y (up)",
    "SlideDown": "the mover translates in a straight line towards +y (down)",
    "CircleClockwise": "the mover circles clockwise on screen",
    "CircleAnticlockwise": "the mover circles anticlockwise on screen",
}
SHAPES: tuple[str, ...] = ("disc", "square", "diamond", "ring", "cross")
HEIGHT, WIDTH = 240, 320
SPEED = (3.0, 5.0)
"""Mover speed along its path, pixels per frame (320x240 frames)."""
RADIUS = (10.0, 16.0)
"""Half-size of the mover and the look-alikes, pixels."""
CIRCLE_RADIUS = (14.0, 24.0)
CLIP_LEN = 16
REACH = 1.2 * RADIUS[1]
"""How far a drawn object reaches from its centre (the corners of a rotated square)."""
VISIBLE = (57.0, 15.0, 263.0, 225.0)
"""x1, y1, x2, y2 of the part of a 320x240 frame that the centre crops keep (128x171 -> 112, 64x85 -> 56)."""
OCCLUDER_P, TWIN_P = 0.3, 0.5
NOISE_SIGMA = (4.0, 10.0)


def centre_region() -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 of the uniform centre-frame position of the mover, the same for every class: with the top
    :data:`SPEED` the centre :data:`CLIP_LEN`-frame clip stays inside :data:`VISIBLE` (circles move less)."""
    reach = (CLIP_LEN - 1) / 2 * SPEED[1] + REACH
    return VISIBLE[0] + reach, VISIBLE[1] + reach, VISIBLE[2] - reach, VISIBLE[3] - reach


@dataclass
class Thing:
    """A drawn object: shape, half-size ``r``, rotation, RGB colour."""

    shape: str
    r: float
    angle: float
    color: tuple[int, int, int]


def _sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of ``shape`` of half-size ``r`` centred at the origin."""
    if shape == "disc":
        return np.hypot(x, y) - r
    if shape == "ring":
        return np.abs(np.hypot(x, y) - 0.72 * r) - 0.28 * r
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.85 * r
    if shape == "diamond":
        return (np.abs(x) + np.abs(y) - 1.15 * r) / math.sqrt(2.0)
    if shape == "cross":
        ax, ay = np.abs(x), np.abs(y)
        arm = 0.34 * r
        return np.minimum(np.maximum(ax - r, ay - arm), np.maximum(ax - arm, ay - r))
    raise ValueError(f"unknown shape {shape!r}")  # pragma: no cover - SHAPES is closed


def _alpha(thing: Thing, cx: float, cy: float) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage (h, w) of ``thing`` centred at (cx, cy) and its window's top-left corner (x0, y0)."""
    reach = thing.r * 1.3 + 2
    x0, y0 = max(math.floor(cx - reach), 0), max(math.floor(cy - reach), 0)
    x1, y1 = min(math.ceil(cx + reach) + 1, WIDTH), min(math.ceil(cy + reach) + 1, HEIGHT)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    c, s = math.cos(thing.angle), math.sin(thing.angle)
    dx, dy = xx - cx, yy - cy
    d = _sdf(thing.shape, dx * c + dy * s, -dx * s + dy * c, thing.r)
    return np.clip(0.5 - d, 0.0, 1.0), x0, y0


def _paste(img: np.ndarray, thing: Thing, cx: float, cy: float) -> list[int]:
    """Draw ``thing`` on float (H, W, 3) ``img`` in place; its tight box x, y, w, h (pixels with coverage >= 1/2)."""
    a, x0, y0 = _alpha(thing, cx, cy)
    if a.size == 0:
        return [0, 0, 0, 0]
    win = img[y0:y0 + a.shape[0], x0:x0 + a.shape[1]]
    win += a[..., None] * (np.asarray(thing.color, np.float32) - win)
    ys, xs = np.nonzero(a >= 0.5)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1]


def trajectory(label: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Mover centres (n, 2) as x, y for class ``label`` and the motion's parameters.

    The centre-frame position p0 is uniform on :func:`centre_region` whatever the class; with τ = t - (n - 1)/2,
    a slide is p0 + s·τ·u (u the class's unit direction) and a circle p0 + R(e(φ + ωτ) - e(φ)), e(θ) = (cos θ,
    sin θ), ω = ±s/R (+ clockwise on screen, y pointing down).
    """
    x1, y1, x2, y2 = centre_region()
    p0 = np.array([rng.uniform(x1, x2), rng.uniform(y1, y2)])
    speed = float(rng.uniform(*SPEED))
    tau = np.arange(n) - (n - 1) / 2.0
    if label < 4:
        direction = np.array([(1, 0), (-1, 0), (0, -1), (0, 1)][label], dtype=np.float64)
        return p0 + speed * tau[:, None] * direction, {"speed": speed, "direction": direction.tolist()}
    radius = float(rng.uniform(*CIRCLE_RADIUS))
    omega = (speed / radius) * (1.0 if label == 4 else -1.0)
    phi = float(rng.uniform(0, 2 * math.pi))
    theta = phi + omega * tau
    offset = np.stack([np.cos(theta) - math.cos(phi), np.sin(theta) - math.sin(phi)], axis=1)
    return p0 + radius * offset, {"speed": speed, "radius": radius, "omega": omega}


def _thing(rng: np.random.Generator, under: np.ndarray | None = None) -> Thing:
    """A random object; with ``under`` (the mean background colour) one whose colour stands out from it."""
    color = _hsv(rng, (0.6, 1.0), (0.55, 1.0))
    for _ in range(32 if under is not None else 0):
        if np.abs(color - under).sum() >= 150:
            break
        color = _hsv(rng, (0.6, 1.0), (0.55, 1.0))
    return Thing(SHAPES[int(rng.integers(len(SHAPES)))], float(rng.uniform(*RADIUS)),
                 float(rng.uniform(0, 2 * math.pi)), (int(color[0]), int(color[1]), int(color[2])))


def render_video(seed: int, label: int, group: int, clip: int, frames: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """uint8 (T, 240, 320, 3) frames, the mover's x, y, w, h boxes (T, 4) and the video's ground truth.

    Everything depends on (seed, label, group, clip) only, so a video does not change with the set's size.
    """
    rng = np.random.default_rng([seed, 7, label, group, clip])
    n = int(rng.integers(frames[0], frames[1] + 1))
    centres, motion = trajectory(label, n, rng)
    scene = _background(rng, WIDTH)[:HEIGHT].astype(np.float32)
    x1, y1, x2, y2 = (int(v) for v in VISIBLE)
    mover = _thing(rng, scene[y1:y2, x1:x2].reshape(-1, 3).mean(0))
    lookalikes = []
    for k in range(int(rng.integers(1, 4))):
        twin = k == 0 and rng.random() < TWIN_P
        other = Thing(mover.shape, mover.r, float(rng.uniform(0, 2 * math.pi)), mover.color) if twin else _thing(rng)
        at = (float(rng.uniform(VISIBLE[0], VISIBLE[2])), float(rng.uniform(VISIBLE[1], VISIBLE[3])))
        _paste(scene, other, *at)
        lookalikes.append({"shape": other.shape, "color": list(other.color), "centre": [round(v, 1) for v in at],
                           "twin": bool(twin)})
    occluder = None
    if rng.random() < OCCLUDER_P:  # a static bar across the frame, crossing the mover's path
        k = int(rng.integers(len(centres)))
        width = int(rng.integers(10, 20))
        grey = _hsv(rng, (0.0, 0.25), (0.3, 0.8)).astype(np.float32)
        if rng.random() < 0.5:
            x = int(np.clip(centres[k, 0] - width / 2, 0, WIDTH - width))
            occluder = [x, 0, x + width, HEIGHT]
        else:
            y = int(np.clip(centres[k, 1] - width / 2, 0, HEIGHT - width))
            occluder = [0, y, WIDTH, y + width]
    sigma = float(rng.uniform(*NOISE_SIGMA))
    video = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    boxes = np.zeros((n, 4), np.int64)
    for t in range(n):
        img = scene.copy()
        boxes[t] = _paste(img, mover, float(centres[t, 0]), float(centres[t, 1]))
        if occluder is not None:
            ox1, oy1, ox2, oy2 = occluder
            img[oy1:oy2, ox1:ox2] = grey
        img += rng.standard_normal((HEIGHT, WIDTH, 1), dtype=np.float32) * sigma  # luminance noise
        np.clip(img, 0, 255, out=img)
        video[t] = img.astype(np.uint8)
    truth = {"label": label, "frames": n, "mover": {"shape": mover.shape, "radius": round(mover.r, 2),
                                                    "color": list(mover.color)}, "motion": motion,
             "centre_frame_position": [round(float(v), 2) for v in centres[(n - 1) // 2]],
             "lookalikes": lookalikes, "occluder": occluder, "noise_sigma": round(sigma, 2)}
    return video, boxes, truth
