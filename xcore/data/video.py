"""Video decoding, clip sampling and clip preprocessing (formats.md sections 9 and 10.1-10.2).

Decoding (formats.md 9): decord is the primary backend but has known hangs (``get_batch`` spins forever holding the
GIL when ``len()`` is too high, dmlc/decord#373), so it only ever runs in a helper *process* with a per-video
timeout: a thread cannot be interrupted while it holds the GIL. On a timeout the helper is killed and restarted.
PyAV is the fallback: it decodes forward from the start and keeps the requested frames (frame-accurate; ``seek``
is not). Every failure tied to one file raises :class:`~xcore.errors.SampleError` with a one-line reason naming it.

Preprocessing (formats.md 10.1-10.2): :class:`VideoTransform` resizes (bilinear, no antialias, rounded back to
uint8 like torchvision's uint8 path), centre-crops, scales and normalises, and returns (C, T, H, W) float32.
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
import torch
import torch.nn.functional as F
from torch import Tensor

from xcore.data.transforms import Geometry, ImageTransform
from xcore.errors import SampleError

BACKENDS = ("auto", "decord", "pyav")
DEFAULT_TIMEOUT = 60.0
KINETICS_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
C3D_MEAN_BGR: tuple[float, float, float] = (90.0, 98.0, 102.0)
"""jfzhang95/pytorch-video-recognition subtracts this from OpenCV (BGR) frames in 0..255 (formats.md 10.2)."""

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


class VideoTransform(ImageTransform):
    """uint8 (T, H, W, 3) RGB frames -> float32 (C, T, H, W): resize, centre crop, channel order, scale, normalise.

    ``resize`` is an int (shorter side, aspect kept) or ``(height, width)`` (exact, as torchvision's video presets,
    formats.md 10.1). Resizing is bilinear without antialias and rounded back to uint8. The crop offsets follow
    torchvision (``round((H - size) / 2)``): 128x171 -> 112 takes rows 8-119 and columns 30-141, as C3D does
    (formats.md 10.2). ``bgr`` reverses the channels *before* normalising, so ``mean``/``std`` are in the output
    order; ``scale`` multiplies the uint8 values first (1/255 for torchvision, 1.0 for C3D). Boxes map through
    the same geometry (:meth:`map_boxes`, inherited).
    """

    def __init__(self, size: int = 112, resize: int | tuple[int, int] | None = (128, 171),
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD,
                 scale: float = 1.0 / 255.0, bgr: bool = False) -> None:
        if isinstance(resize, Sequence):
            if len(resize) != 2 or min(resize) < size:
                raise ValueError(f"resize {resize} must be (height, width), both at least the crop size {size}")
            self.resize_hw: tuple[int, int] | None = (int(resize[0]), int(resize[1]))
            super().__init__(size, None, mean, std)
        else:
            self.resize_hw = None
            super().__init__(size, resize, mean, std)
        self.scale = float(scale)
        self.bgr = bool(bgr)

    def __repr__(self) -> str:
        resize = self.resize_hw if self.resize_hw is not None else self.resize
        return (f"VideoTransform(size={self.size}, resize={resize}, mean={self.mean}, std={self.std}, "
                f"scale={self.scale:g}, bgr={self.bgr})")

    def geometry(self, width: int, height: int) -> Geometry:
        """The resize and crop applied to frames of ``width``×``height``."""
        if self.resize_hw is None:
            return super().geometry(width, height)
        h, w = self.resize_hw
        return Geometry(width, height, (w, h), round((w - self.size) / 2.0), round((h - self.size) / 2.0), self.size)

    def resize_crop(self, frames: np.ndarray) -> Tensor:
        """uint8 (T, H, W, 3) -> uint8 (T, 3, size, size), still RGB."""
        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected frames of shape (T, H, W, 3), got {arr.shape}")
        geo = self.geometry(arr.shape[2], arr.shape[1])
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
        if (arr.shape[2], arr.shape[1]) != geo.scaled:
            x = F.interpolate(x.float(), size=(geo.scaled[1], geo.scaled[0]), mode="bilinear", align_corners=False,
                              antialias=False).round_().clamp_(0, 255).to(torch.uint8)
        return x[:, :, geo.top:geo.top + self.size, geo.left:geo.left + self.size].contiguous()

    def normalize(self, x: Tensor) -> Tensor:
        """(3, …) channel-first values in the output channel order -> ``(x * scale - mean) / std``, float32."""
        x = x.float() * self.scale
        shape = (3,) + (1,) * (x.dim() - 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def input_bounds(self) -> tuple[list[float], list[float]]:
        """Per-channel (low, high) of the model's input space: uint8 0 and 255 normalised (LRP's z^β bounds,
        methods.md §8: "use the true min/max of the model's input space")."""
        return ([(0.0 - m) / s for m, s in zip(self.mean, self.std, strict=True)],
                [(255.0 * self.scale - m) / s for m, s in zip(self.mean, self.std, strict=True)])

    def __call__(self, frames: np.ndarray) -> Tensor:  # type: ignore[override]
        x = self.resize_crop(frames).permute(1, 0, 2, 3)  # (3, T, size, size)
        if self.bgr:
            x = x.flip(0)
        return self.normalize(x).contiguous()


def kinetics_transform() -> VideoTransform:
    """torchvision ``VideoClassification`` preset of r3d_18 / mc3_18 / r2plus1d_18 (formats.md 10.1)."""
    return VideoTransform(112, (128, 171), KINETICS_MEAN, KINETICS_STD, 1.0 / 255.0, bgr=False)


def c3d_transform() -> VideoTransform:
    """C3D (jfzhang95): BGR, 0..255, minus (90, 98, 102), no std, 128x171 -> 112 (formats.md 10.2)."""
    return VideoTransform(112, (128, 171), C3D_MEAN_BGR, (1.0, 1.0, 1.0), 1.0, bgr=True)


def small_transform() -> VideoTransform:
    """The "kinetics" preset at half size for CPU training: 64x85 -> centre crop 56, Kinetics mean / std (keeps
    the same part of the frame as 128x171 -> 112)."""
    return VideoTransform(56, (64, 85), KINETICS_MEAN, KINETICS_STD, 1.0 / 255.0, bgr=False)


PRESETS = {"kinetics": kinetics_transform, "c3d": c3d_transform, "small": small_transform}


def video_preset(name: str) -> VideoTransform:
    """The named preprocessing preset: "kinetics", "c3d" or "small"."""
    if name not in PRESETS:
        raise ValueError(f"unknown video preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]()


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
