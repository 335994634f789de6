"""Video decoding, clip sampling and clip preprocessing (formats.md sections 9 and 10.1-10.2).

Decoding (formats.md 9): decord is the primary backend but has known hangs (``get_batch`` spins forever holding the
GIL when ``len()`` is too high, dmlc/decord#373), so it only ever runs in a helper *process* with a per-video
timeout: a thread cannot be interrupted while it holds the GIL. On a timeout the helper is killed and restarted.
PyAV is the fallback: it decodes forward from the start and keeps the requested frames (frame-accurate; ``seek``
is not). Every failure tied to one file raises :class:`~xcore.errors.SampleError` with a one-line reason naming it.

Preprocessing (formats.md 10.1-10.2) lives in :mod:`xcore.data.video_transforms` and is re-exported here.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from xcore.errors import SampleError

__all__ = ["BACKENDS", "DEFAULT_TIMEOUT", "centre_indices", "frame_count", "read_clip", "sliding_indices", "write_video"]

BACKENDS = ("auto", "decord", "pyav")
DEFAULT_TIMEOUT = 60.0

# The decord helper: stdin/stdout carry pickled (path, indices) requests and ("ok", array) / (kind, reason) replies.
# It imports only numpy and decord, so it starts fast; fd 1 is pointed at stderr so library chatter cannot corrupt
# the reply stream.
_DECORD_HELPER = r"""
import os, sys
from multiprocessing.connection import Connection
out = Connection(os.dup(1), readable=False)
os.dup2(2, 1)
inp = Connection(0, writable=False)
try:
    import decord
except Exception as err:
    decord, missing = None, f"decord unavailable: {type(err).__name__}: {err}"
while True:
    try:
        path, indices = inp.recv()
    except EOFError:
        break
    if decord is None:
        out.send(("missing", missing))
        continue
    try:
        vr = decord.VideoReader(path, num_threads=1)
        n = len(vr)
        if indices and max(indices) >= n:
            out.send(("short", n))
            continue
        out.send(("ok", vr.get_batch(list(indices)).asnumpy() if indices else None))
    except Exception as err:
        out.send(("error", f"{type(err).__name__}: {err}"))
"""


def _fail(path: Path | str, reason: str) -> SampleError:
    """A one-line :class:`SampleError` naming the file."""
    return SampleError("load", f"{Path(path).name}: {' '.join(str(reason).split())}")


class _DecordHelper:
    """One long-lived decord process per Python process, used under a lock (formats.md 9.1: per-video timeout)."""

    def __init__(self, script: str = _DECORD_HELPER) -> None:
        self.script = script
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None

    def _start(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", self.script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None and proc.stdout is not None
        self._send = Connection(os.dup(proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(proc.stdout.fileno()), writable=False)
        proc.stdin.close()
        proc.stdout.close()
        self._proc = proc

    def stop(self) -> None:
        """Kill the helper (if running) and forget it; the next request starts a fresh one."""
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = self._send = self._recv = None

    def request(self, path: str, indices: list[int], timeout: float) -> tuple[str, Any]:
        """(kind, payload) for one read; ("timeout", seconds) when decord did not answer in time."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.stop()
                self._start()
            assert self._send is not None and self._recv is not None
            try:
                self._send.send((path, indices))
                if self._recv.poll(timeout):
                    return self._recv.recv()
            except (EOFError, OSError) as err:
                self.stop()
                return "error", f"decord helper died: {type(err).__name__}"
            self.stop()
            return "timeout", timeout


_HELPER = _DecordHelper()
atexit.register(_HELPER.stop)


def _decord_read(path: Path, indices: list[int], timeout: float | None) -> np.ndarray:
    """Decode ``indices`` (sorted, unique) with decord; in-process when ``timeout`` is None (no hang guard)."""
    if timeout is None:
        try:
            import decord
        except ImportError as err:
            raise _fail(path, f"decord unavailable: {err}") from None
        try:
            vr = decord.VideoReader(str(path), num_threads=1)
            n = len(vr)
            batch = vr.get_batch(indices).asnumpy() if indices[-1] < n else None
        except (RuntimeError, ValueError, decord.DECORDError) as err:  # decord raises RuntimeError on open
            raise _fail(path, f"decord cannot read: {err}") from None
        if batch is None:
            raise _fail(path, f"too short: frame {indices[-1]} requested, video has {n} frames")
        return batch
    kind, payload = _HELPER.request(str(path), indices, timeout)
    if kind == "ok":
        return payload
    if kind == "short":
        raise _fail(path, f"too short: frame {indices[-1]} requested, video has {payload} frames")
    if kind == "timeout":
        raise _fail(path, f"decord timed out after {payload:g} s")
    raise _fail(path, f"decord cannot read: {payload}")


def _pyav_read(path: Path, indices: list[int], timeout: float | None) -> np.ndarray:
    """Decode forward from frame 0 and keep ``indices`` (sorted, unique); frame-accurate (formats.md 9.2)."""
    import av

    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _fail(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if n in wanted:
                    frames[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > indices[-1]:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise _fail(path, f"PyAV timed out after {timeout:g} s")
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise _fail(path, f"PyAV cannot read: {err}") from None
    if n <= indices[-1]:
        raise _fail(path, f"too short: frame {indices[-1]} requested, video has {n} frames")
    return np.stack([frames[i] for i in indices])


def read_clip(path: Path | str, indices: Sequence[int], *, backend: str = "auto",
              timeout: float | None = DEFAULT_TIMEOUT) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames at the 0-based ``indices`` (any order, repeats allowed) of ``path``.

    ``backend``: "decord" (in a helper process, killed after ``timeout`` seconds; ``timeout=None`` runs it in-process
    without a guard), "pyav" (``timeout`` checked between frames), or "auto": decord, then PyAV when decord is
    missing, fails or times out (formats.md 9). A missing, unreadable or empty file, or an index at or beyond the
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
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    unique = sorted(set(idx))
    if backend == "pyav":
        frames = _pyav_read(path, unique, timeout)
    elif backend == "decord":
        frames = _decord_read(path, unique, timeout)
    else:
        try:
            frames = _decord_read(path, unique, timeout)
        except SampleError:
            frames = _pyav_read(path, unique, timeout)
    return frames[np.searchsorted(unique, idx)]


def frame_count(path: Path | str) -> int:
    """Number of frames of the first video stream (PyAV): container metadata, else counted by demuxing packets.

    decord's ``len()`` is not used: it can be too high (formats.md 9.1, #373). An unreadable file or one with no
    frames raises :class:`SampleError`.
    """
    import av

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise _fail(path, "no such file" if not path.is_file() else "empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _fail(path, "no video stream")
            stream = container.streams.video[0]
            n = int(stream.frames or 0)
            if n <= 0:
                n = sum(1 for p in container.demux(stream) if p.size > 0)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise _fail(path, f"PyAV cannot read: {err}") from None
    if n <= 0:
        raise _fail(path, "video has zero frames")
    return n


def _span(clip_len: int, stride: int) -> int:
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be positive, got {clip_len} and {stride}")
    return (clip_len - 1) * stride + 1


def _too_short(n_frames: int, span: int) -> SampleError:
    return SampleError("load", f"video too short: {n_frames} frames, the clip spans {span}")


def centre_indices(n_frames: int, clip_len: int, stride: int = 1) -> list[int]:
    """The ``clip_len`` indices, ``stride`` apart, of the clip centred in ``n_frames`` (start rounded down).

    A video shorter than the clip's span ``(clip_len - 1) * stride + 1`` raises :class:`SampleError` "too short"
    (no looping or padding: the spec is silent and padding would change what is explained).
    """
    span = _span(clip_len, stride)
    if n_frames < span:
        raise _too_short(n_frames, span)
    start = (n_frames - span) // 2
    return [start + k * stride for k in range(clip_len)]


def sliding_indices(n_frames: int, clip_len: int, step: int, stride: int = 1) -> list[list[int]]:
    """Clips starting at 0, ``step``, 2 ``step``... that fit entirely in the video; a tail shorter than a clip is
    dropped. A video shorter than one clip raises :class:`SampleError` "too short"."""
    span = _span(clip_len, stride)
    if step < 1:
        raise ValueError(f"step must be positive, got {step}")
    if n_frames < span:
        raise _too_short(n_frames, span)
    return [[s + k * stride for k in range(clip_len)] for s in range(0, n_frames - span + 1, step)]


def write_video(path: Path | str, frames: np.ndarray, fps: int = 25, codec: str | None = None) -> Path:
    """Encode uint8 (T, H, W, 3) RGB ``frames`` with PyAV (fixtures, synthetic data); returns ``path``.

    Default codec: MPEG-4 part 2 for ``.avi``, otherwise near-lossless libx264 in yuv444p (any frame size, odd
    ones included), or MPEG-4 when libx264 is not built in.
    """
    import av

    path = Path(path)
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"expected non-empty uint8 frames (T, H, W, 3), got {arr.dtype} {arr.shape}")
    if codec is None:
        codec = "libx264" if path.suffix.lower() != ".avi" and "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = int(arr.shape[1]), int(arr.shape[2])
        if codec == "libx264":
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": "4", "preset": "veryfast"}
        else:
            stream.pix_fmt = "yuv420p"
            stream.options = {"qscale": "2"}
        for frame in arr:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path
