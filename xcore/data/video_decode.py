"""Video decoding: uint8 RGB frames at chosen indices, and frame counts.

decord is the primary backend, run in a guarded helper process (:mod:`xcore.data.decord_helper`: its
``get_batch`` can hang, dmlc/decord issue #373); PyAV is the fallback: it decodes forward from the start and keeps
the requested frames (frame-accurate; its ``seek`` lands on a keyframe). Every failure tied to one file raises
:class:`~xcore.errors.SampleError` with a one-line reason naming it. Clip sampling
(:mod:`xcore.data.clip_sampling`) and encoding (:mod:`xcore.data.video_encode`) are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xcore.data.clip_sampling import centre_indices, sliding_indices
from xcore.data.decord_helper import decode_error, decord_read
from xcore.data.video_encode import write_video
from xcore.errors import SampleError

__all__ = ["BACKENDS", "DEFAULT_TIMEOUT", "centre_indices", "frame_count", "read_clip", "sliding_indices",
           "write_video"]

BACKENDS = ("auto", "decord", "pyav")
DEFAULT_TIMEOUT = 60.0


def _pyav_read(path: Path, indices: list[int], timeout: float | None) -> np.ndarray:
    """Decode forward from frame 0 and keep ``indices`` (sorted, unique); frame-accurate (PyAV's ``seek`` lands on a
    keyframe, so decoding forward is the frame-accurate way)."""
    import av

    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise decode_error(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if n in wanted:
                    frames[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > indices[-1]:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise decode_error(path, f"PyAV timed out after {timeout:g} s")
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise decode_error(path, f"PyAV cannot read: {err}") from None
    if n <= indices[-1]:
        raise decode_error(path, f"too short: frame {indices[-1]} requested, video has {n} frames")
    return np.stack([frames[i] for i in indices])


def read_clip(path: Path | str, indices: Sequence[int], *, backend: str = "auto",
              timeout: float | None = DEFAULT_TIMEOUT) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at the 0-based ``indices`` (any order, repeats allowed) of ``path``.

    ``backend``: "decord" (in a helper process, killed after ``timeout`` seconds; ``timeout=None`` runs it in-process
    without a guard), "pyav" (``timeout`` checked between frames), or "auto": decord, then PyAV when decord is
    missing, fails or times out. A missing, unreadable or empty file, or an index at or beyond the
    last decodable frame, raises :class:`SampleError`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; use one of {', '.join(BACKENDS)}")
    path = Path(path)
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("read_clip needs at least one frame index")
    if min(idx) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(idx)}")
    if not path.is_file():
        raise decode_error(path, "no such file")
    if path.stat().st_size == 0:
        raise decode_error(path, "empty file (0 bytes)")
    unique = sorted(set(idx))
    if backend == "pyav":
        frames = _pyav_read(path, unique, timeout)
    elif backend == "decord":
        frames = decord_read(path, unique, timeout)
    else:
        try:
            frames = decord_read(path, unique, timeout)
        except SampleError:
            frames = _pyav_read(path, unique, timeout)
    return frames[np.searchsorted(unique, idx)]


def frame_count(path: Path | str) -> int:
    """Number of frames of the first video stream (PyAV): container metadata, else counted by demuxing packets.

    decord's ``len()`` is not used: it can be too high (dmlc/decord issue #373). An unreadable file or one with no
    frames raises :class:`SampleError`.
    """
    import av

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise decode_error(path, "no such file" if not path.is_file() else "empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise decode_error(path, "no video stream")
            stream = container.streams.video[0]
            n = int(stream.frames or 0)
            if n <= 0:
                n = sum(1 for p in container.demux(stream) if p.size > 0)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise decode_error(path, f"PyAV cannot read: {err}") from None
    if n <= 0:
        raise decode_error(path, "video has zero frames")
    return n
