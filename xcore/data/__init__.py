"""Data: the reader protocol, readers of the real on-disk formats, and the synthetic ground-truth generators.

Readers index their files on construction and decode one sample per ``load``. Which reader serves which dataset
kind, with which options, is said by the descriptors of :mod:`xcore.datasets`.
"""

from __future__ import annotations

import os
from pathlib import Path

from xcore.data.base import Dataset, Sample
from xcore.data.imagenet import ImageNetReader
from xcore.data.ntu import NTUReader
from xcore.data.synthetic_images import generate_images
from xcore.data.synthetic_skeletons import generate_skeletons
from xcore.data.synthetic_videos import generate_videos
from xcore.data.transforms import ImageTransform
from xcore.data.video_readers import HMDB51Reader, KineticsReader, UCF101Reader

__all__ = [
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
]


def default_data_root() -> Path:
    """Where the synthetic images live: ``$XCORE_DATA`` or ``.xcore/data/shapes`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_DATA", ".xcore/data/shapes"))


def default_skeleton_root() -> Path:
    """Where the synthetic skeletons live: ``$XCORE_SKELETON_DATA`` or ``.xcore/data/ntu`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_SKELETON_DATA", ".xcore/data/ntu"))


def default_video_root() -> Path:
    """Where the synthetic videos live: ``$XCORE_VIDEO_DATA`` or ``.xcore/data/ucf`` (relative to the CWD)."""
    return Path(os.environ.get("XCORE_VIDEO_DATA", ".xcore/data/ucf"))
