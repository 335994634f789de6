"""The NTU RGB+D ``.skeleton`` text file: parser, writer and the (3, T, 25, M) x, y, z array.

The grammar is that of the dataset's official reader (shahroudy/NTURGB-D ``Matlab/read_skeleton_file.m``),
written out in docs/formats/ntu.md §2. The array follows ST-GCN's preprocessing (yysijie/st-gcn
``tools/ntu_gendata.py``, docs/formats/ntu.md §6): x, y, z only, body slot = the body's order *within each frame*
(no bodyID tracking), bodies beyond ``max_bodies`` dropped, zero-body frames kept as zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xcore.data.ntu_joints import NUM_JOINTS
from xcore.errors import SampleError

BODY_FIELDS: tuple[tuple[str, type], ...] = (
    ("body_id", int), ("cliped_edges", int), ("hand_left_confidence", int), ("hand_left_state", int),
    ("hand_right_confidence", int), ("hand_right_state", int), ("is_resticted", int), ("lean_x", float),
    ("lean_y", float), ("tracking_state", int))
"""The 10 body-info fields in file order, official (misspelled) names in snake case, with their types."""
JOINT_FIELDS: tuple[str, ...] = ("x", "y", "z", "depth_x", "depth_y", "color_x", "color_y", "orient_w", "orient_x",
                                 "orient_y", "orient_z", "tracking_state")
"""The 12 joint fields in file order (columns of :attr:`Body.joints`)."""

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
    """The file's lines with a read position; errors name the file and the 1-based line (docs/formats/ntu.md §2)."""

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
    """Parse a ``.skeleton`` file (grammar: docs/formats/ntu.md §2) into frames, each a list of :class:`Body`.

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
    """Frames -> float32 (3, T, 25, max_bodies) of x, y, z; slot m = body order within the frame."""
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
