"""A seeded synthetic UCF-101-style video dataset whose classes only motion can decide, in the real file formats.

The frames, classes and ground truth of each video are drawn by :mod:`xcore.data.synthetic_video_frames`; this
module writes the set. Layout (docs/formats/ucf101.md, docs/formats/ucf101-24.md):
``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (MPEG-4 part 2, 320x240, 25 fps), ``ucfTrainTestlist/classInd.txt``,
``trainlist01.txt`` (with 1-based labels) and ``testlist01.txt`` (paths only), all CRLF; test = groups 01-07,
train = groups 08-25 as in split 1. ``pyannot.pkl`` is a UCF101-24 format (a2) pickle (``db``, ``trainvideos``,
``classes``): one tube per video with ``sf`` 0-based, ``ef`` exclusive and the mover's tight x, y, w, h box on
every frame it is in, hidden parts included (uint8 when every value fits, else uint16, as in the real file).
``xcore_ground_truth.json`` names what decides the classes and, per video, the mover, look-alikes and occluder;
``.complete`` holds the parameters. Everything is written to a hidden sibling folder renamed into place.
"""

from __future__ import annotations

import json
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from xcore.data.synthetic_video_frames import (
    CLASSES,
    HEIGHT,
    MOTIONS,
    VISIBLE,
    WIDTH,
    centre_region,
    render_video,
    trajectory,
)
from xcore.data.video_encode import write_video
from xcore.errors import UsageError
from xcore.io.atomic import materialise_dir

__all__ = ["CLASSES", "FORMAT_VERSION", "FPS", "MAX_FRAMES", "MOTIONS", "TEST_GROUPS", "VISIBLE", "centre_region",
           "generate_videos", "py2_pickle", "render_video", "trajectory", "video_key"]

FORMAT_VERSION = 1
FPS = 25
MAX_FRAMES = 40
TEST_GROUPS = 7
"""Split 1: groups 01-07 are the test set, train groups start at 08 (docs/formats/ucf101.md §2)."""


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
