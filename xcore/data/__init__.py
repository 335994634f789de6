"""Datasets: the reader protocol, the ImageNet-style and NTU RGB+D readers, and the synthetic generators."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xcore.data.base import DATASETS, Dataset, Sample
from xcore.data.imagenet import ImageNetReader
from xcore.data.ntu import NTUReader  # registers "ntu"
from xcore.data.synthetic_skeletons import generate_skeletons
from xcore.data.synthetic_images import generate_images
from xcore.data.transforms import ImageTransform
from xcore.data.video_readers import HMDB51Reader, KineticsReader, UCF101Reader
from xcore.data.synthetic_videos import generate_videos
from xcore.errors import UsageError

DATASETS.add("imagenet", ImageNetReader)

__all__ = [
    "DATASETS",
    "Dataset",
    "HMDB51Reader",
    "ImageNetReader",
    "ImageTransform",
    "KineticsReader",
    "NTUReader",
    "Sample",
    "UCF101Reader",
    "default_data_root",
    "default_skeleton_root",
    "default_video_root",
    "generate_images",
    "generate_skeletons",
    "generate_videos",
    "open_dataset",
]


def default_data_root() -> Path:
    """Where the synthetic data lives: ``$XCORE_DATA`` or ``.xcore/data/shapes`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_DATA", ".xcore/data/shapes"))


def default_skeleton_root() -> Path:
    """Where the synthetic skeletons live: ``$XCORE_SKELETON_DATA`` or ``.xcore/data/ntu`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_SKELETON_DATA", ".xcore/data/ntu"))


def default_video_root() -> Path:
    """Where the synthetic videos live: ``$XCORE_VIDEO_DATA`` or ``.xcore/data/ucf`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_VIDEO_DATA", ".xcore/data/ucf"))


def open_dataset(kind: str, root: Path | str, split: str = "val", **kw: Any) -> Dataset:
    """Open dataset ``kind`` at ``root``; a missing root or split raises :class:`UsageError` (one line)."""
    factory = DATASETS.get(kind)
    path = Path(root)
    if not path.is_dir():
        raise UsageError(f"dataset root {path} does not exist")
    try:
        return factory(path, split=split, **kw)
    except TypeError as err:  # an option this reader does not take (e.g. --reader clips=... on images)
        if "unexpected keyword" not in str(err):
            raise
        raise UsageError(f"the {kind} reader does not take that option: {err}") from None
