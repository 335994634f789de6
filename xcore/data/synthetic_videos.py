"""A seeded synthetic UCF-101-style video dataset whose classes only motion can decide, in the real file formats.

Six classes, each a way of moving (screen coordinates, y down; ``tests/test_video_synthetic.py`` checks them on
the written tubes):

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
tube then covers only the frames it is in, as UCF101-24 tubes do).

Layout (formats.md 3.1 and 4): ``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (MPEG-4 part 2, 320x240, 25 fps),
``ucfTrainTestlist/classInd.txt``, ``trainlist01.txt`` (with 1-based labels) and ``testlist01.txt`` (paths
only), all CRLF; test = groups 01-07, train = groups 08-25 as in split 1. ``pyannot.pkl`` is a UCF101-24 format
(a2) pickle (``db``, ``trainvideos``, ``classes``): one tube per video with ``sf`` 0-based, ``ef`` exclusive and
the mover's tight x, y, w, h box on every frame it is in, hidden parts included (uint8 when every value fits,
else uint16, as in the real file).
``xcore_ground_truth.json`` names what decides the classes and, per video, the mover, look-alikes and occluder;
``.complete`` holds the parameters. Everything is written to a hidden sibling folder renamed into place.
"""

from __future__ import annotations

import json
import math
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xcore.data.synthetic_images import _background, _hsv
from xcore.data.video_decode import write_video
from xcore.errors import UsageError
from xcore.io.atomic import materialise_dir

FORMAT_VERSION = 1
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
HEIGHT, WIDTH, FPS = 240, 320, 25
TEST_GROUPS = 7
"""Split 1: groups 01-07 are the test set, train groups start at 08 (formats.md 3.1)."""
SPEED = (3.0, 5.0)
"""Mover speed along its path, pixels per frame (320x240 frames)."""
RADIUS = (10.0, 16.0)
"""Half-size of the mover and the look-alikes, pixels."""
CIRCLE_RADIUS = (14.0, 24.0)
MAX_FRAMES = 40
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


def video_key(label: int, group: int, clip: int) -> str:
    """``<Class>/v_<Class>_gGG_cCC`` (the UCF101-24 key; the file adds ``.avi``)."""
    name = CLASSES[label]
    return f"{name}/v_{name}_g{group:02d}_c{clip:02d}"


def _tube(label: int, boxes: np.ndarray) -> dict[str, Any]:
    """A format (a) tube over the frames where the mover is in the picture (a contiguous run: paths are straight
    lines or circles inside the frame): ``sf`` 0-based, ``ef`` exclusive, x y w h in uint8 when every value fits,
    else uint16."""
    seen = np.flatnonzero(boxes[:, 2] > 0)
    sf, ef = int(seen[0]), int(seen[-1]) + 1
    assert len(seen) == ef - sf, "the mover left the frame and came back"
    dtype = np.uint8 if int(boxes[sf:ef].max()) <= 255 else np.uint16
    return {"label": label, "sf": sf, "ef": ef, "boxes": boxes[sf:ef].astype(dtype)}


def py2_pickle(obj: Any) -> bytes:
    """``obj`` pickled as Python 2 wrote the UCF101-24 files: protocol 2, NumPy buffers as byte *strings*
    (``SHORT_BINSTRING`` / ``BINSTRING``, read back with ``encoding='latin1'``) and ``numpy.core`` module names."""
    data = bytearray(pickle.dumps(obj, protocol=3))
    for op, _, pos in pickletools.genops(bytes(data)):
        if op.name == "PROTO":
            data[pos + 1] = 2
        elif op.name in ("SHORT_BINBYTES", "BINBYTES"):  # same length prefixes as the Python 2 string opcodes
            data[pos] = ord("U" if op.name == "SHORT_BINBYTES" else "T")
    return bytes(data).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _crlf(lines: list[str]) -> bytes:
    return "".join(f"{ln}\r\n" for ln in lines).encode()


def _write(tmp: Path, seed: int, train_groups: int, test_groups: int, clips: int,
           frames: tuple[int, int]) -> None:
    groups = [(g, False) for g in range(1, test_groups + 1)] + [
        (g, True) for g in range(TEST_GROUPS + 1, TEST_GROUPS + 1 + train_groups)]
    db: dict[str, Any] = {}
    truth: dict[str, Any] = {}
    train, test = [], []
    for label, name in enumerate(CLASSES):
        (tmp / "UCF-101" / name).mkdir(parents=True)
        for group, is_train in groups:
            for clip in range(1, clips + 1):
                key = video_key(label, group, clip)
                video, boxes, info = render_video(seed, label, group, clip, frames)
                write_video(tmp / "UCF-101" / f"{key}.avi", video, fps=FPS, codec="mpeg4")
                n = len(video)
                db[key] = {"label": label, "numf": (np.uint8 if n <= 255 else np.uint16)(n),
                           "annotations": [_tube(label, boxes)]}
                truth[key] = info
                (train if is_train else test).append(key)
    lists = tmp / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(_crlf([f"{i + 1} {c}" for i, c in enumerate(CLASSES)]))
    (lists / "trainlist01.txt").write_bytes(_crlf([f"{k}.avi {db[k]['label'] + 1}" for k in train]))
    (lists / "testlist01.txt").write_bytes(_crlf([f"{k}.avi" for k in test]))
    (tmp / "pyannot.pkl").write_bytes(py2_pickle({"db": db, "trainvideos": train, "classes": list(CLASSES)}))
    gt = {"classes": list(CLASSES), "deciding": MOTIONS,
          "not_deciding": ["the mover's position in any one frame (uniform on the same rectangle at the centre "
                           "frame for every class)", "its shape, size, colour and speed", "static look-alikes",
                           "the occluder", "the background", "the sensor noise"],
          "centre_region": [round(v, 1) for v in centre_region()], "frame_size": [HEIGHT, WIDTH], "fps": FPS,
          "videos": truth}
    (tmp / "xcore_ground_truth.json").write_text(json.dumps(gt, indent=1))


def generate_videos(root: Path | str, *, seed: int = 0, train_groups: int = 18, test_groups: int = TEST_GROUPS,
                    clips: int = 6, frames: tuple[int, int] = (32, MAX_FRAMES), force: bool = False) -> Path:
    """Write the synthetic UCF-101-style set under ``root`` (seeded, idempotent, atomic) and return ``root``.

    ``test_groups`` groups g01... are the test split and ``train_groups`` groups g08... the train split, with
    ``clips`` videos per class and group and ``frames`` = (fewest, most) frames per video. A ``root/.complete``
    marker with the same parameters means the data is there: nothing is done. A root holding anything else is
    only replaced with ``force=True``.
    """
    root = Path(root)
    lo, hi = frames
    if not (1 <= test_groups <= TEST_GROUPS and train_groups >= 1 and clips >= 1 and 1 <= lo <= hi <= MAX_FRAMES):
        raise UsageError(f"generate_videos needs 1 <= test_groups <= {TEST_GROUPS}, train_groups >= 1, clips >= 1 "
                         f"and 1 <= frames[0] <= frames[1] <= {MAX_FRAMES}")
    params = {"format": FORMAT_VERSION, "seed": seed, "train_groups": train_groups, "test_groups": test_groups,
              "clips": clips, "frames": [lo, hi]}
    return materialise_dir(root, params, lambda tmp: _write(tmp, seed, train_groups, test_groups, clips, (lo, hi)),
                           force=force, what="videos")
