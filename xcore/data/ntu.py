"""NTU RGB+D 60 / 120 skeletons: the ``.skeleton`` parser, file names, evaluation splits and the dataset reader.

Follows the reference notes, formats.md section 1 (file names, grammar, missing-skeleton lists, protocols, joint
order, edge lists) and section 2.1 (ST-GCN preprocessing, yysijie/st-gcn ``tools/ntu_gendata.py``): x, y, z only,
body slot = the body's order *within each frame* (no bodyID tracking), bodies beyond ``max_bodies`` dropped,
zero-body frames kept as zeros, frames zero-padded at the end to ``max_frames``, no centering or normalisation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xcore.data.base import DATASETS, Sample
from xcore.errors import SampleError, UsageError

NUM_JOINTS = 25
CENTER_JOINT = 20
"""0-based index of "spine at shoulders" (1-based joint 21), the ST-GCN graph center (formats.md 1.5)."""
JOINT_NAMES: tuple[str, ...] = (
    "base of spine", "middle of spine", "neck", "head",
    "left shoulder", "left elbow", "left wrist", "left hand",
    "right shoulder", "right elbow", "right wrist", "right hand",
    "left hip", "left knee", "left ankle", "left foot",
    "right hip", "right knee", "right ankle", "right foot",
    "spine at shoulders", "tip of left hand", "left thumb", "tip of right hand", "right thumb",
)
"""Kinect v2 joint order, 0-based (formats.md 1.5)."""

_SHARED_EDGES_1B = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
                    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19))
STGCN_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a - 1, b - 1) for a, b in (*_SHARED_EDGES_1B, (22, 23), (23, 8), (24, 25), (25, 12)))
"""ST-GCN reference graph (yysijie/st-gcn layout ``ntu-rgb+d``), 0-based: use it for the ST-GCN model only."""
NTU_BONES: tuple[tuple[int, int], ...] = tuple(
    (a - 1, b - 1) for a, b in (*_SHARED_EDGES_1B, (22, 8), (23, 8), (24, 12), (25, 12)))
"""Official NTU bones (``show_skeleton_on_RGB_frames.m``), 0-based: drawing, bone features, everything else."""

BODY_FIELDS: tuple[tuple[str, type], ...] = (
    ("body_id", int), ("cliped_edges", int), ("hand_left_confidence", int), ("hand_left_state", int),
    ("hand_right_confidence", int), ("hand_right_state", int), ("is_resticted", int), ("lean_x", float),
    ("lean_y", float), ("tracking_state", int))
"""The 10 body-info fields in file order, official (misspelled) names in snake case, with their types."""
JOINT_FIELDS: tuple[str, ...] = ("x", "y", "z", "depth_x", "depth_y", "color_x", "color_y", "orient_w", "orient_x",
                                 "orient_y", "orient_z", "tracking_state")
"""The 12 joint fields in file order (columns of :attr:`Body.joints`)."""

NTU60_XSUB_TRAIN = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU120_XSUB_TRAIN = NTU60_XSUB_TRAIN | {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82,
                                         83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103}
XVIEW_TRAIN_CAMERAS = frozenset({2, 3})
BENCHMARKS = ("xsub", "xview", "xsub120", "xset120")
PARTS = ("train", "val")
SKELETON_DIR = "nturgb+d_skeletons"
MISSING_FILES = ("samples_with_missing_skeletons.txt", "NTU_RGBD_samples_with_missing_skeletons.txt",
                 "NTU_RGBD120_samples_with_missing_skeletons.txt")
_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
_JOINT_FMT = " ".join(["%.7g"] * 11 + ["%d"])


@dataclass(eq=False)
class Body:
    """One body of one frame: the 10 body-info fields (:data:`BODY_FIELDS`) and ``joints`` (25, 12) float64."""

    body_id: int
    cliped_edges: int
    hand_left_confidence: int
    hand_left_state: int
    hand_right_confidence: int
    hand_right_state: int
    is_resticted: int
    lean_x: float
    lean_y: float
    tracking_state: int
    joints: np.ndarray


class _Cursor:
    """The file's lines with a read position; errors name the file and the 1-based line (formats.md 1.2)."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise SampleError("load", f"{self.name}: cannot read: {err}") from None
        while lines and not lines[-1].strip():  # trailing blank lines are not content
            lines.pop()
        self.lines = lines
        self.pos = 0

    def fail(self, lineno: int, reason: str) -> SampleError:
        return SampleError("load", f"{self.name}:{lineno}: {reason}")

    def take(self, count: int, n_fields: int, what: str) -> list[list[str]]:
        """The next ``count`` lines, tokenised with ``split()``; each must hold exactly ``n_fields`` fields."""
        if self.pos + count > len(self.lines):
            raise self.fail(len(self.lines) + 1, f"unexpected end of file, expected {what} line")
        rows = [ln.split() for ln in self.lines[self.pos:self.pos + count]]
        for k, tokens in enumerate(rows):
            if len(tokens) != n_fields:
                raise self.fail(self.pos + k + 1, f"expected {n_fields} {what} fields, got {len(tokens)}")
        self.pos += count
        return rows

    def count(self, what: str) -> int:
        """A one-field line holding a non-negative integer (numFrames, numBodies, numJoints)."""
        ((token,),) = self.take(1, 1, what)
        try:
            value = int(token)
        except ValueError:
            raise self.fail(self.pos, f"{what} is not an integer: {token!r}") from None
        if value < 0:
            raise self.fail(self.pos, f"negative {what}: {value}")
        return value


def _parse_body(cur: _Cursor) -> Body:
    (info,) = cur.take(1, len(BODY_FIELDS), "body-info")
    values: list[Any] = []
    for (field, kind), token in zip(BODY_FIELDS, info, strict=True):
        try:
            values.append(kind(token))  # int() keeps the 64-bit bodyID exact; never parse it as float
        except ValueError:
            raise cur.fail(cur.pos, f"body-info field {field} is not {kind.__name__}: {token!r}") from None
    num_joints = cur.count("numJoints")
    if num_joints != NUM_JOINTS:
        raise cur.fail(cur.pos, f"expected {NUM_JOINTS} joints, got {num_joints}")
    first = cur.pos + 1
    rows = cur.take(NUM_JOINTS, len(JOINT_FIELDS), "joint")
    try:
        joints = np.array(list(map(float, (t for row in rows for t in row)))).reshape(NUM_JOINTS, -1)
        for row in rows:
            int(row[-1])
    except ValueError:
        raise _locate(cur, rows, first) from None
    bad = np.flatnonzero(~np.isfinite(joints[:, :3]).all(axis=1))
    if bad.size:
        raise cur.fail(first + int(bad[0]), "non-finite joint coordinate")
    return Body(*values, joints=joints)


def _locate(cur: _Cursor, rows: list[list[str]], first: int) -> SampleError:
    """The error for the first joint field that is not a number (trackingState: not an integer)."""
    for k, row in enumerate(rows):
        for field, token in zip(JOINT_FIELDS, row, strict=True):
            kind = int if field == "tracking_state" else float
            try:
                kind(token)
            except ValueError:
                return cur.fail(first + k, f"joint field {field} is not {kind.__name__}: {token!r}")
    raise AssertionError("no bad joint field")  # pragma: no cover - only called after a ValueError


def parse_skeleton(path: Path | str) -> list[list[Body]]:
    """Parse a ``.skeleton`` file (grammar: formats.md 1.2) into frames, each a list of :class:`Body`.

    Every line must be consumed (trailing blank lines excepted) and every ``numJoints`` must be 25. A bad file
    (truncated, wrong joint count, wrong field count, non-numeric field, zero frames, no body in any frame)
    raises :class:`SampleError` ``"<file>:<line>: <reason>"`` with a 1-based line number.
    """
    cur = _Cursor(Path(path))
    num_frames = cur.count("numFrames")
    if num_frames == 0:
        raise cur.fail(1, "zero frames")
    frames = [[_parse_body(cur) for _ in range(cur.count("numBodies"))] for _ in range(num_frames)]
    if cur.pos < len(cur.lines):
        raise cur.fail(cur.pos + 1, f"unexpected content after the last of {num_frames} frames")
    if not any(frames):
        raise cur.fail(1, "no body in any frame")
    return frames


def skeleton_array(frames: Sequence[Sequence[Body]], max_bodies: int = 2) -> np.ndarray:
    """Frames -> float32 (3, T, 25, max_bodies) of x, y, z; slot m = body order within the frame (formats.md 2.1)."""
    data = np.zeros((3, len(frames), NUM_JOINTS, max_bodies), dtype=np.float32)
    for t, bodies in enumerate(frames):
        for m, body in enumerate(bodies[:max_bodies]):
            data[:, t, :, m] = body.joints[:, :3].T
    return data


def read_skeleton(path: Path | str, max_bodies: int = 2) -> np.ndarray:
    """Read a ``.skeleton`` file as float32 (3, T, 25, max_bodies), T = numFrames, zero-body frames as zeros."""
    return skeleton_array(parse_skeleton(path), max_bodies)


def format_skeleton(frames: Sequence[Sequence[Body]]) -> str:
    """The ``.skeleton`` text of ``frames`` (inverse of :func:`parse_skeleton`; floats as ``%.7g``, LF endings)."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for b in bodies:
            out.append(f"{b.body_id:d} {b.cliped_edges:d} {b.hand_left_confidence:d} {b.hand_left_state:d} "
                       f"{b.hand_right_confidence:d} {b.hand_right_state:d} {b.is_resticted:d} {b.lean_x:.7g} "
                       f"{b.lean_y:.7g} {b.tracking_state:d}")
            out.append(str(NUM_JOINTS))
            out.extend(_JOINT_FMT % tuple(row) for row in b.joints.tolist())
    return "\n".join(out) + "\n"


def parse_name(name: str | os.PathLike[str]) -> dict[str, int]:
    """``SsssCcccPpppRrrrAaaa`` (a path, or a name with or without ``.skeleton``) -> setup, camera, subject,
    replication, action as ints (formats.md 1.1). Anything else raises ``ValueError``."""
    stem = Path(name).name
    stem = stem.removesuffix(".skeleton")
    m = _NAME.match(stem)
    if m is None:
        raise ValueError(f"not an NTU sample name (SsssCcccPpppRrrrAaaa): {str(name)!r}")
    return dict(zip(("setup", "camera", "subject", "replication", "action"), map(int, m.groups()), strict=True))


def in_split(name: str | os.PathLike[str], benchmark: str, part: str) -> bool:
    """Whether sample ``name`` is in ``part`` ("train"/"val") of ``benchmark`` (formats.md 1.4):
    xsub / xsub120 by training subject, xview by camera (2, 3 train), xset120 by setup parity (even = train)."""
    if benchmark not in BENCHMARKS or part not in PARTS:
        raise UsageError(f"unknown NTU split {benchmark}/{part}; benchmarks {', '.join(BENCHMARKS)}, parts train, val")
    f = parse_name(name)
    if benchmark == "xsub":
        train = f["subject"] in NTU60_XSUB_TRAIN
    elif benchmark == "xsub120":
        train = f["subject"] in NTU120_XSUB_TRAIN
    elif benchmark == "xview":
        train = f["camera"] in XVIEW_TRAIN_CAMERAS
    else:
        train = f["setup"] % 2 == 0
    return train == (part == "train")


def read_missing(path: Path | str) -> set[str]:
    """Sample names of an official missing-skeleton list: its 3 header lines are skipped by keeping only lines
    that start with ``S`` (formats.md 1.3); CRLF-safe."""
    return {s for s in (ln.strip() for ln in Path(path).read_text(encoding="utf-8-sig").splitlines())
            if s.startswith("S")}


def _parse_split(split: str) -> tuple[str, str] | None:
    """``"all"`` -> None; ``"train"``/``"val"`` -> xsub; ``"<benchmark>/<part>"``; anything else: UsageError."""
    if split == "all":
        return None
    bench, _, part = split.rpartition("/")
    bench = bench or "xsub"
    if bench not in BENCHMARKS or part not in PARTS:
        raise UsageError(f"unknown NTU split {split!r}; use all, train, val or <benchmark>/<part> with benchmark "
                         f"in {', '.join(BENCHMARKS)} and part train or val")
    return bench, part


class NTUReader:
    """The :class:`~xcore.data.base.Dataset` of NTU RGB+D skeletons under ``root`` (ST-GCN preprocessing).

    ``root`` holds ``*.skeleton`` files directly or in ``nturgb+d_skeletons/``; names that do not follow the NTU
    pattern are ignored. Missing-skeleton samples (``missing=`` path, else any of :data:`MISSING_FILES` in root)
    are removed before splitting. ``split``: ``"<benchmark>/<part>"``, ``"train"``/``"val"`` (= xsub) or
    ``"all"``. Classes: the lines of ``root/actions.txt`` (line k = action k), else ``A001`` .. ``A<max action>``.
    ``load(i)`` gives x float32 (3, max_frames, 25, max_bodies), label = action - 1.
    """

    name = "ntu"

    def __init__(self, root: Path | str, split: str = "xsub/val", *, max_frames: int = 300, max_bodies: int = 2,
                 missing: Path | str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"dataset root {self.root} does not exist")
        if max_frames < 1 or max_bodies < 1:
            raise UsageError("NTUReader needs max_frames >= 1 and max_bodies >= 1")
        self.split, self.max_frames, self.max_bodies = split, max_frames, max_bodies
        selector = _parse_split(split)
        self.folder, names = self._index()
        actions = [parse_name(n)["action"] for n in names]
        self.classes = self._classes(max(actions))
        drop = self._missing(missing)
        self._names = [n for n in names if n not in drop and (selector is None or in_split(n, *selector))]
        self._fields = [parse_name(n) for n in self._names]

    def _index(self) -> tuple[Path, list[str]]:
        for folder in (self.root / SKELETON_DIR, self.root):
            if folder.is_dir():
                names = sorted(f[:-9] for f in os.listdir(folder) if f.endswith(".skeleton") and _NAME.match(f[:-9]))
                if names:
                    return folder, names
        raise UsageError(f"{self.root} holds no NTU .skeleton files (looked in . and {SKELETON_DIR}/)")

    def _classes(self, max_action: int) -> list[str]:
        path = self.root / "actions.txt"
        if not path.is_file():
            return [f"A{a:03d}" for a in range(1, max_action + 1)]
        classes = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        if len(classes) < max_action:
            raise UsageError(f"{path} names {len(classes)} actions but the files go up to A{max_action:03d}")
        return classes

    def _missing(self, missing: Path | str | None) -> set[str]:
        if missing is not None:
            if not Path(missing).is_file():
                raise UsageError(f"missing-skeleton list {missing} does not exist")
            return read_missing(missing)
        return set().union(*(read_missing(self.root / f) for f in MISSING_FILES if (self.root / f).is_file()))

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"NTUReader({str(self.root)!r}, split={self.split!r}, n={len(self)})"

    def path(self, index: int) -> Path:
        return self.folder / f"{self._names[index]}.skeleton"

    def sample_id(self, index: int) -> str:
        return self._names[index]

    def label(self, index: int) -> int:
        return self._fields[index]["action"] - 1

    def load(self, index: int) -> Sample:
        frames = parse_skeleton(self.path(index))
        data = skeleton_array(frames, self.max_bodies)
        valid = min(data.shape[1], self.max_frames)
        x = torch.zeros((3, self.max_frames, NUM_JOINTS, self.max_bodies), dtype=torch.float32)
        x[:, :valid] = torch.from_numpy(data[:, :valid])
        meta = {"valid_frames": valid, **self._fields[index], "bodies": max(len(b) for b in frames),
                "path": str(self.path(index))}
        del meta["action"]
        return Sample(self._names[index], x, self.label(index), meta)


DATASETS.add("ntu", NTUReader)
