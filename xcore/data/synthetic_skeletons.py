"""A seeded synthetic NTU-style skeleton dataset with known ground truth, in the real ``.skeleton`` format.

Five classes, each decided by which limb makes the big movement (0-based joints, docs/formats/ntu.md §5):

====  ================  =====================================================================
0     right-hand wave   arm raised sideways, forearm waving: 9, 10, 11, 23, 24
1     left-hand wave    mirror image: 5, 6, 7, 21, 22
2     right kick        hip flexion and abduction (forward and out to the side) with a knee snap, 1-2 kicks: 17, 18, 19
3     left kick         13, 14, 15
4     squat             feet planted; knees go forward, everything above the knees goes down
====  ================  =====================================================================

A squat lowers the whole upper body rigidly, so its deciding joints are every joint except the ankles and feet
(:data:`DECIDING_JOINTS`); ``tests/unit/test_skeleton_synthetic.py`` checks that these are exactly the joints
that move most.

Every sample: a standing skeleton (metres, Kinect camera space: x to the sensor's left, so the performer's right
is +x; y up; z away from the sensor, z about 3 m) scaled per subject (body size and limb proportions), tempo /
amplitude / phase / timing jitter per performance, idle postural sway and breathing, Gaussian sensor noise on all
joints, and a *distractor*: a low-amplitude sway of one random limb that is not the class's limb (so limb motion
alone does not tell the class, its size does). The three cameras film the same performance (as in NTU) from
-45, 0 and +45 degrees about the vertical axis, so xview is a real domain shift. About 10 % of performances have
a still bystander (second body, its own 64-bit id), about 5 % of files start with 1-3 zero-body frames.
Layout: ``root/nturgb+d_skeletons/S001C<cam>P<subj>R<rep>A<action>.skeleton``, ``actions.txt``,
``xcore_ground_truth.json`` and the ``.complete`` marker (written last).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from xcore.data.ntu import SKELETON_DIR
from xcore.data.ntu_joints import NUM_JOINTS
from xcore.data.ntu_skeleton import Body, format_skeleton
from xcore.errors import UsageError
from xcore.io.atomic import atomic_open

FORMAT_VERSION = 2  # 2: kicks go forward and out to the side (left/right separable by ±x)
CLASSES: tuple[str, ...] = ("wave right hand", "wave left hand", "kick right leg", "kick left leg", "squat")
DECIDING_JOINTS: dict[int, tuple[int, ...]] = {
    0: (9, 10, 11, 23, 24), 1: (5, 6, 7, 21, 22), 2: (17, 18, 19), 3: (13, 14, 15),
    4: tuple(j for j in range(NUM_JOINTS) if j not in (14, 15, 18, 19)),
}
CAMERA_DEGREES = {1: -45.0, 2: 0.0, 3: 45.0}
FPS = 30.0
BASE_BODY_ID = 72057594037927936  # 2**56: real Kinect ids look like 72057594037931101
BYSTANDER_BODY_ID = 72057594037931101

# Standing template, performer facing the sensor (front = -z), base of spine at the origin, 1.75 m tall.
_L, _R = -1.0, 1.0
TEMPLATE = np.array([
    (0, 0, 0), (0, 0.27, 0.01), (0, 0.58, 0.01), (0, 0.72, 0),  # spine base/mid, neck, head
    (_L * 0.18, 0.48, 0.02), (_L * 0.22, 0.21, 0.03), (_L * 0.24, -0.03, 0.02), (_L * 0.245, -0.10, 0.01),
    (_R * 0.18, 0.48, 0.02), (_R * 0.22, 0.21, 0.03), (_R * 0.24, -0.03, 0.02), (_R * 0.245, -0.10, 0.01),
    (_L * 0.09, -0.04, 0), (_L * 0.10, -0.46, -0.01), (_L * 0.10, -0.86, 0.01), (_L * 0.10, -0.90, -0.10),
    (_R * 0.09, -0.04, 0), (_R * 0.10, -0.46, -0.01), (_R * 0.10, -0.86, 0.01), (_R * 0.10, -0.90, -0.10),
    (0, 0.50, 0.02),  # spine at shoulders
    (_L * 0.25, -0.17, 0.0), (_L * 0.22, -0.11, -0.04), (_R * 0.25, -0.17, 0.0), (_R * 0.22, -0.11, -0.04),
])
ARMS = {"right": (8, (9, 10, 11, 23, 24)), "left": (4, (5, 6, 7, 21, 22))}
"""side -> (shoulder, joints moved by the shoulder)."""
LEGS = {"right": (16, (17, 18, 19)), "left": (12, (13, 14, 15))}
"""side -> (hip, joints moved by the hip); the first moved joint is the knee."""
LIMBS = {"right arm": ARMS["right"], "left arm": ARMS["left"], "right leg": LEGS["right"],
         "left leg": LEGS["left"], "head": (2, (3,))}
_CLASS_LIMBS = {0: {"right arm"}, 1: {"left arm"}, 2: {"right leg"}, 3: {"left leg"}, 4: {"right leg", "left leg"}}
_SWAY_DEG = {"right arm": (4, 8), "left arm": (4, 8), "right leg": (3, 6), "left leg": (3, 6), "head": (8, 15)}
_END_JOINTS = (3, 15, 19, 21, 22, 23, 24)  # Kinect reports no orientation for these (all zeros)


def _rotate(pts: np.ndarray, pivot: np.ndarray, axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotate (T, k, 3) points about the coordinate ``axis`` through ``pivot`` (T, 3) by ``angle`` (T,) radians."""
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rel = pts - pivot[:, None]
    out = rel.copy()
    out[..., a] = rel[..., a] * c - rel[..., b] * s
    out[..., b] = rel[..., a] * s + rel[..., b] * c
    return out + pivot[:, None]


def _move(pose: np.ndarray, pivot: int, joints: tuple[int, ...], axis: int, angle: np.ndarray) -> None:
    pose[:, joints] = _rotate(pose[:, joints], pose[:, pivot], axis, angle)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _subject_body(seed: int, *key: int) -> np.ndarray:
    """A person's standing skeleton (25, 3): overall size and arm / leg proportions, fixed by ``key``."""
    rng = np.random.default_rng([seed, 1, *key])
    body = TEMPLATE * rng.uniform(0.88, 1.12)
    for limbs, lo, hi in ((ARMS, 0.93, 1.07), (LEGS, 0.95, 1.05)):
        k = rng.uniform(lo, hi)
        for root, joints in limbs.values():
            body[list(joints)] = body[root] + (body[list(joints)] - body[root]) * k
    return body


def _action(pose: np.ndarray, label: int, u: np.ndarray, rng: np.random.Generator) -> None:
    """Apply class ``label``'s movement in place; ``u`` is time in [0, 1] over the frames."""
    start, end = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
    w = np.clip((u - start) / (end - start), 0.0, 1.0)  # time within the active window
    side = ("right", "left")[label % 2]
    sign = 1.0 if side == "right" else -1.0  # the right side is +x; rotations about z mirror
    if label in (0, 1):
        env = _smoothstep(w / 0.25) * _smoothstep((1 - w) / 0.25)
        raise_ = np.radians(rng.uniform(80, 115)) * env
        freq = rng.uniform(1.5, 3.0) * len(u) / FPS  # waves over the whole clip
        wave = np.radians(rng.uniform(45, 70) + rng.uniform(20, 35) * np.sin(2 * np.pi * freq * u
                                                                                 + rng.uniform(0, 2 * np.pi)))
        shoulder, joints = ARMS[side]
        _move(pose, joints[0], joints[1:], 2, sign * wave * env)  # forearm about the elbow
        _move(pose, shoulder, joints, 2, sign * raise_)  # whole arm about the shoulder
    elif label in (2, 3):
        pulse = np.sin(np.pi * int(rng.integers(1, 3)) * w) ** 2
        hip, joints = LEGS[side]
        knee_bend = np.radians(rng.uniform(30, 60)) * np.sin(np.pi * pulse)
        _move(pose, joints[0], joints[1:], 0, -knee_bend)  # shank swings back, then snaps forward
        _move(pose, hip, joints, 0, np.radians(rng.uniform(45, 75)) * pulse)  # leg forward (-z)
        _move(pose, hip, joints, 2, sign * np.radians(rng.uniform(25, 40)) * pulse)  # and out to its side (±x)
    else:
        alpha = np.radians(rng.uniform(35, 60)) * np.sin(np.pi * w) ** 2  # shank tilt forward
        for hip, (knee, ankle, _) in LEGS.values():
            shank = np.linalg.norm(pose[0, knee] - pose[0, ankle])
            thigh = np.linalg.norm(pose[0, hip] - pose[0, knee])
            beta = np.arcsin(np.clip(shank * np.sin(alpha) / thigh, -1, 1))  # keeps the hip above the ankle
            drop = shank + thigh - shank * np.cos(alpha) - thigh * np.cos(beta)
            pose[:, knee, 1] = pose[:, ankle, 1] + shank * np.cos(alpha)
            pose[:, knee, 2] = pose[:, ankle, 2] - shank * np.sin(alpha)
        upper = [j for j in DECIDING_JOINTS[4] if j not in (13, 17)]
        pose[:, upper, 1] -= drop[:, None]


def _idle(pose: np.ndarray, u: np.ndarray, rng: np.random.Generator, label: int | None) -> None:
    """Postural sway about the ankles, breathing, and (for a performer) one non-class limb's low sway."""
    n = len(u)
    secs = u * n / FPS
    pivot = np.broadcast_to(pose[0, [14, 18]].mean(axis=0), (n, 3))
    for axis in (0, 2):
        ang = np.radians(rng.uniform(0.3, 1.0)) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * secs
                                                          + rng.uniform(0, 2 * np.pi))
        pose[:] = _rotate(pose, pivot, axis, ang)
    pose[:, [1, 2, 3, 4, 8, 20], 1] += 0.004 * np.sin(2 * np.pi * rng.uniform(0.2, 0.35) * secs)[:, None]
    if label is None:
        return
    limb = str(rng.choice(sorted(set(LIMBS) - _CLASS_LIMBS[label])))
    root, joints = LIMBS[limb]
    ang = np.radians(rng.uniform(*_SWAY_DEG[limb])) * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * secs
                                                             + rng.uniform(0, 2 * np.pi))
    _move(pose, root, joints, int(rng.choice([0, 2])), ang)


def _bodies(pos: np.ndarray, heading: float, body_id: int, rng: np.random.Generator) -> list[Body]:
    """Fill every grammar field for one body in every frame: (T, 25, 3) camera-space -> [Body] * T."""
    n = len(pos)
    z = np.maximum(pos[..., 2], 0.3)
    joints = np.empty((n, NUM_JOINTS, 12))
    joints[..., :3] = pos
    joints[..., 3] = 256 + 365.5 * pos[..., 0] / z  # Kinect v2 depth camera, 512x424
    joints[..., 4] = 212 - 365.5 * pos[..., 1] / z
    joints[..., 5] = 975 + 1063.0 * pos[..., 0] / z  # RGB camera, 1920x1080 (offset: the two sensors differ)
    joints[..., 6] = 567 - 1063.0 * pos[..., 1] / z
    quat = np.array([np.cos(heading / 2), 0.0, np.sin(heading / 2), 0.0]) + rng.normal(0, 0.08, (n, NUM_JOINTS, 4))
    joints[..., 7:11] = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    joints[:, _END_JOINTS, 7:11] = 0.0
    joints[..., 11] = np.where(rng.random((n, NUM_JOINTS)) < 0.02, 1, 2)  # 2 tracked, 1 inferred
    hands = rng.integers(1, 4, 2)
    spine = pos[:, 20] - pos[:, 0]
    lean = spine / np.linalg.norm(spine, axis=-1, keepdims=True)  # leanX sideways, leanY forward (-z): ~0 upright
    return [Body(body_id, 0, 1, int(hands[0]), 1, int(hands[1]), 0, float(lean[t, 0]), float(-lean[t, 2]), 2,
                 joints[t]) for t in range(n)]


def _performance(seed: int, subject: int, rep: int, action: int,
                 frames: tuple[int, int]) -> tuple[dict[str, np.ndarray], list[int]]:
    """One performance in scene space (before the camera view): body name -> (T, 25, 3), and their ids.

    Everything depends on (seed, subject, rep, action) only, so a file does not change with the set's size.
    """
    rng = np.random.default_rng([seed, 2, subject, rep, action])
    n = int(rng.integers(frames[0], frames[1] + 1))
    u = np.linspace(0.0, 1.0, n)
    pose = np.repeat(_subject_body(seed, subject)[None], n, axis=0)
    _action(pose, action - 1, u, rng)
    _idle(pose, u, rng, action - 1)
    scene = {"main": pose}
    ids = [BASE_BODY_ID + int(rng.integers(1, 3000))]
    if rng.random() < 0.10:
        other = np.repeat(_subject_body(seed, 0, subject, rep, action)[None], n, axis=0)
        _idle(other, u, rng, None)
        turn = np.radians(rng.uniform(-30, 30))
        other = _rotate(other, np.zeros((n, 3)), 1, np.full(n, turn))
        scene["bystander"] = other + np.array([rng.choice([-1, 1]) * rng.uniform(0.8, 1.1), 0, rng.uniform(0.3, 0.8)])
        ids.append(BYSTANDER_BODY_ID + (subject * 100 + rep) * 100 + action)
    return scene, ids


def _render(scene: dict[str, np.ndarray], ids: list[int], seed: int, key: tuple[int, ...], camera: int) -> str:
    """The ``.skeleton`` text of a performance seen from ``camera``: rotation, placement, noise, dropouts."""
    rng = np.random.default_rng([seed, 3, *key, camera])
    n = len(scene["main"])
    heading = np.radians(CAMERA_DEGREES[camera] + rng.uniform(-4, 4))
    views = [_rotate(pos, np.zeros((n, 3)), 1, np.full(n, heading)) for pos in scene.values()]
    middle = (min(v[..., 0].min() for v in views) + max(v[..., 0].max() for v in views)) / 2  # frame the scene
    place = np.array([rng.uniform(-0.2, 0.2) - middle, rng.uniform(0.0, 0.25), rng.uniform(2.8, 3.5)])
    per_body = []
    for body_id, seen in zip(ids, views, strict=True):
        seen = seen + place + rng.normal(0, 0.004, seen.shape)
        per_body.append(_bodies(seen, heading, body_id, rng))
    frames = [list(bodies) for bodies in zip(*per_body, strict=True)]
    if rng.random() < 0.05:
        for t in range(min(int(rng.integers(1, 4)), n - 1)):
            frames[t] = []
    return format_skeleton(frames)


def _write(folder: Path, seed: int, subjects: int, cameras: int, replications: int,
           frames: tuple[int, int]) -> None:
    folder.mkdir(parents=True)
    for subject in range(1, subjects + 1):
        for rep in range(1, replications + 1):
            for action in range(1, len(CLASSES) + 1):
                scene, ids = _performance(seed, subject, rep, action, frames)
                for cam in range(1, cameras + 1):
                    name = f"S001C{cam:03d}P{subject:03d}R{rep:03d}A{action:03d}.skeleton"
                    (folder / name).write_text(_render(scene, ids, seed, (subject, rep, action), cam))


def generate_skeletons(root: Path | str, *, seed: int = 0, subjects: int = 20, cameras: int = 3,
                       replications: int = 2, frames: tuple[int, int] = (40, 64), force: bool = False) -> Path:
    """Write the synthetic skeleton set under ``root`` (seeded, idempotent) and return ``root``.

    A ``root/.complete`` marker with the same parameters means the data is there: nothing is done. Other
    parameters, or a skeleton folder without a marker (possibly real NTU data), are only replaced with
    ``force=True``. The skeleton folder is written under a hidden name and renamed into place, the small files
    go through :func:`~xcore.io.atomic.atomic_open`, and the marker is written last.
    """
    root = Path(root)
    lo, hi = frames
    if subjects < 1 or replications < 1 or not 1 <= cameras <= 3 or not 1 <= lo <= hi:
        raise UsageError("generate_skeletons needs subjects >= 1, replications >= 1, 1 <= cameras <= 3 and "
                         "1 <= frames[0] <= frames[1]")
    params = {"format": FORMAT_VERSION, "seed": seed, "subjects": subjects, "cameras": cameras,
              "replications": replications, "frames": [lo, hi]}
    marker, folder = root / ".complete", root / SKELETON_DIR
    if not force and marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError):
            old = None
        if old == params:
            return root
        same_but_format = isinstance(old, dict) and {**old, "format": FORMAT_VERSION} == params
        if not same_but_format:  # an older generator's output of the same set is simply regenerated
            raise UsageError(f"{root} holds synthetic skeletons made with other parameters; pass force=True to "
                             "replace")
        force = True
    if not force and folder.exists():
        raise UsageError(f"{folder} exists and is not a complete synthetic set; pass force=True to replace it")
    marker.unlink(missing_ok=True)
    tmp = root / f".{SKELETON_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, seed, subjects, cameras, replications, (lo, hi))
        with atomic_open(root / "actions.txt", "w") as fh:
            fh.write("".join(f"{c}\n" for c in CLASSES))
        truth = {"classes": list(CLASSES), "joints": {str(k): list(v) for k, v in DECIDING_JOINTS.items()}}
        with atomic_open(root / "xcore_ground_truth.json", "w") as fh:
            json.dump(truth, fh, indent=1)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with atomic_open(marker, "w") as fh:
        json.dump(params, fh, sort_keys=True)
    return root
