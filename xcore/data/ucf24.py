"""UCF101-24 spatio-temporal annotations (docs/formats/ucf101-24.md): both pickle layouts, read safely.

The pickles go through :func:`safe_load_pickle`, which refuses every global but four numpy ones; boxes come back
per video and frame with the documented frame base and the uint8 overflow fixed.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xcore.errors import UsageError

UCF24_CLASSES: tuple[str, ...] = (
    "Basketball", "BasketballDunk", "Biking", "CliffDiving", "CricketBowling", "Diving", "Fencing", "FloorGymnastics",
    "GolfSwing", "HorseRiding", "IceDancing", "LongJump", "PoleVault", "RopeClimbing", "SalsaSpin", "SkateBoarding",
    "Skiing", "Skijet", "SoccerJuggling", "Surfing", "TennisSwing", "TrampolineJumping", "VolleyballSpiking",
    "WalkingWithDog")
"""UCF101-24 class order (docs/formats/ucf101-24.md §1)."""
UCF24_FILES = ("pyannot_with_class_names.pkl", "pyannot.pkl", "UCF101v2-GT.pkl")
UCF24_RESOLUTION = (240, 320)
"""(height, width) of the frames format (a) boxes refer to (docs/formats/ucf101-24.md §1)."""
_SAFE_GLOBALS = frozenset({("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numpy", "ndarray"),
                           ("numpy", "dtype")})
_MULTIARRAY_MODULES = frozenset({"numpy.core.multiarray", "numpy._core.multiarray"})


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only numpy's ``_reconstruct``, ``scalar``, ``ndarray`` and ``dtype`` (docs/formats/ucf101-24.md §2)."""

    def find_class(self, module: str, name: str) -> Any:
        short = "multiarray" if module in _MULTIARRAY_MODULES else module
        if (short, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
        if short == "multiarray":
            core = getattr(np, "_core", None)
            multiarray = core.multiarray if core is not None else np.core.multiarray
            return getattr(multiarray, name)
        return getattr(np, name)


def safe_load_pickle(path: Path | str) -> Any:
    """Unpickle a (Python 2) annotation file with ``encoding='latin1'``; any other global raises UsageError."""
    path = Path(path)
    try:
        return _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise UsageError(f"unsafe or unreadable pickle {path}: {err}") from None


@dataclass
class Tube:
    """One action tube: ``frames`` 0-based int64 (n,), ``boxes`` float64 (n, 4) as x1, y1, x2, y2."""

    label: int
    frames: np.ndarray
    boxes: np.ndarray


@dataclass
class VideoBoxes:
    """The tubes of one video; ``resolution`` is the (height, width) the boxes are in."""

    label: int
    n_frames: int
    tubes: list[Tube]
    resolution: tuple[int, int] = UCF24_RESOLUTION

    def boxes_at(self, frame: int) -> list[list[float]]:
        """All boxes on the 0-based ``frame``, one per tube that covers it."""
        return [t.boxes[k].tolist() for t in self.tubes for k in np.flatnonzero(t.frames == frame)]


@dataclass
class UCF24Annotations:
    """Both pickle formats normalised: 0-based frames, x1 y1 x2 y2 floats (docs/formats/ucf101-24.md §3)."""

    classes: list[str]
    videos: dict[str, VideoBoxes]
    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


def _tube_a(tube: dict[str, Any]) -> Tube:
    """Format (a): ``sf`` 0-based, ``ef`` exclusive, boxes x, y, w, h in uint8/uint16: widen before adding."""
    xywh = np.asarray(tube["boxes"]).astype(np.int64).reshape(-1, 4)
    frames = int(tube["sf"]) + np.arange(len(xywh), dtype=np.int64)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float64)
    return Tube(int(tube["label"]), frames, boxes)


def _format_a(obj: dict[str, Any]) -> UCF24Annotations:
    db = obj.get("db", obj)
    videos = {str(k): VideoBoxes(int(v["label"]), int(v["numf"]), [_tube_a(t) for t in v["annotations"]])
              for k, v in db.items()}
    classes = [str(c) for c in obj.get("classes", UCF24_CLASSES)]
    train = [str(v) for v in obj.get("trainvideos", []) if str(v) in videos]
    in_train = set(train)
    test = [v for v in videos if v not in in_train] if "trainvideos" in obj else []
    return UCF24Annotations(classes, videos, train, test)


def _format_b(obj: dict[str, Any]) -> UCF24Annotations:
    """Format (b): ``gttubes[video][label]`` = arrays (n, 5) of 1-based frame, x1, y1, x2, y2."""
    videos: dict[str, VideoBoxes] = {}
    for key, by_label in obj["gttubes"].items():
        tubes = []
        for label, arrays in by_label.items():
            for arr in arrays:
                a = np.asarray(arr, dtype=np.float64).reshape(-1, 5)
                tubes.append(Tube(int(label), a[:, 0].astype(np.int64) - 1, a[:, 1:].copy()))
        h, w = obj.get("resolution", {}).get(key, UCF24_RESOLUTION)
        label = tubes[0].label if tubes else -1
        videos[str(key)] = VideoBoxes(label, int(obj["nframes"][key]), tubes, (int(h), int(w)))

    def split(name: str) -> list[str]:
        lists = obj.get(name) or [[]]
        return [str(v) for v in lists[0]]

    return UCF24Annotations([str(c) for c in obj["labels"]], videos, split("train_videos"), split("test_videos"))


def load_ucf24(path: Path | str) -> UCF24Annotations:
    """Either UCF101-24 pickle: (a1) ``{video: entry}``, (a2) ``{db, trainvideos, classes}`` or (b) ``UCF101v2-GT``."""
    obj = safe_load_pickle(path)
    try:
        if isinstance(obj, dict) and "gttubes" in obj:
            return _format_b(obj)
        if isinstance(obj, dict):
            return _format_a(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UsageError(f"{path}: not a UCF101-24 annotation pickle ({type(err).__name__}: {err})") from None
    raise UsageError(f"{path}: not a UCF101-24 annotation pickle (top level is {type(obj).__name__})")
