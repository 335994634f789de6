"""The shared part of the video readers: an index of clips (sample id, path, label, start) and ``load``.

Also the helpers every reader needs to find its files: tolerant line reading (CRLF split files, docs/formats/ucf101.md
§2), the first existing candidate folder, and case-insensitive lookup (UCF-101's ``HandStandPushups`` files in the
``HandstandPushups`` folder, docs/formats/ucf101.md §3). Every path goes through the reader's
:class:`~xcore.data.confine.DatasetRoot` (issue 12): a list file or a folder to list outside the root is a
UsageError; a clip outside it, or a list entry that is absolute or climbs out with ``..``, is a ``load`` error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from xcore.data.base import Sample
from xcore.data.clip_sampling import centre_indices
from xcore.data.confine import DatasetRoot
from xcore.data.ucf24 import VideoBoxes
from xcore.data.video_decode import DEFAULT_TIMEOUT, frame_count, read_clip
from xcore.data.video_transforms import VideoTransform
from xcore.errors import UsageError

VIDEO_EXTS = frozenset({".avi", ".mp4", ".mkv", ".webm", ".mov"})


def read_lines(path: Path) -> list[str]:
    """Non-blank stripped lines; CRLF (all UCF-101 split files), a BOM and blanks tolerated."""
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None


def first_dir(jail: DatasetRoot, candidates: Sequence[str], marker: str | None = None) -> Path | None:
    """The first ``root/<candidate>`` folder (holding ``marker`` when given); UsageError if it leaves the root."""
    for c in candidates:
        d = jail.root / c
        if d.is_dir() and (marker is None or (d / marker).exists()):
            jail.part(d)
            return d
    return None


def video_dir(jail: DatasetRoot, candidates: Sequence[str], classes: Sequence[str]) -> Path:
    """The first candidate folder holding a class folder (any case), else the root; UsageError if it leaves it."""
    wanted = {c.lower() for c in classes}
    for c in candidates:
        d = jail.root / c
        if d.is_dir() and any(p.is_dir() and p.name.lower() in wanted for p in jail.part(d).iterdir()):
            return d
    return jail.root


class Resolver:
    """Finds ``<folder>/<file>`` under ``root`` case-insensitively (UCF-101 ``HandStandPushups``). A class folder
    that leads out of the dataset root is not listed: its files keep their literal path, which ``load`` refuses."""

    def __init__(self, root: Path, jail: DatasetRoot) -> None:
        self.root, self.jail = root, jail
        self._dirs = {p.name.lower(): root / p.name for p in jail.part(root).iterdir() if p.is_dir()} \
            if root.is_dir() else {}
        self._files: dict[str, dict[str, Path]] = {}

    def find(self, folder: str, name: str) -> Path:
        """The file on disk, or the literal path (which ``load`` then reports as missing or refuses)."""
        d = self._dirs.get(folder.lower())
        if d is None:
            return self.root / folder / name
        if d.name not in self._files:  # a folder out of the root is not listed: nothing found in it
            self._files[d.name] = {p.name.lower(): d / p.name for p in d.iterdir()} if self.jail.contains(d) else {}
        return self._files[d.name].get(name.lower(), d / name)


class Entry(NamedTuple):
    """One indexed clip: ``start`` is its first frame, ``None`` for the video's centre clip; ``refused``: why its
    list entry is refused (:meth:`~xcore.data.confine.DatasetRoot.entry`), raised by ``load``."""

    sample_id: str
    path: Path
    label: int
    start: int | None = None
    refused: str | None = None


class VideoFolderDataset:
    """Shared part of the video readers: an index of :class:`Entry` (sample id, path, label, start) and ``load``.

    ``follow_links``: let symbolic links lead out of ``root`` (:mod:`xcore.data.confine`)."""

    name = "video"

    def __init__(self, root: Path | str, transform: VideoTransform | None = None, clip_len: int = 16,
                 stride: int = 1, backend: str = "auto", timeout: float | None = DEFAULT_TIMEOUT,
                 follow_links: bool = False) -> None:
        self.root = Path(root)
        self.jail = DatasetRoot(self.root, follow_links)
        self.transform = transform if transform is not None else VideoTransform()
        self.clip_len, self.stride, self.backend, self.timeout = clip_len, stride, backend, timeout
        self.classes: list[str] = []
        self._items: list[Entry] = []

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={len(self.classes)}, clip_len={self.clip_len})"

    def path(self, index: int) -> Path:
        return self._items[index].path

    def sample_id(self, index: int) -> str:
        return self._items[index].sample_id

    def label(self, index: int) -> int:
        return self._items[index].label

    def annotation(self, index: int) -> VideoBoxes | None:
        """Spatio-temporal boxes of the video, when the reader has them."""
        return None

    def clip_indices(self, index: int, n_frames: int) -> list[int]:
        """The 0-based frames of entry ``index``'s clip: from its ``start``, else the centre clip."""
        start = self._items[index].start  # a clip past the end: read_clip raises "too short"
        return centre_indices(n_frames, self.clip_len, self.stride) if start is None else [
            start + k * self.stride for k in range(self.clip_len)]

    def load(self, index: int) -> Sample:
        entry = self._items[index]
        if entry.refused is not None:
            raise self.jail.refuse(entry.path, entry.refused)
        path = self.jail.file(entry.path)
        n = frame_count(path)
        indices = self.clip_indices(index, n)
        frames = read_clip(path, indices, backend=self.backend, timeout=self.timeout)
        meta: dict[str, Any] = {"frames": n, "indices": indices, "path": str(entry.path)}
        ann = self.annotation(index)
        if ann is not None:
            height, width = frames.shape[1:3]
            sy, sx = height / ann.resolution[0], width / ann.resolution[1]
            boxes = [self.transform.map_boxes([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
                                               for b in ann.boxes_at(i)], width, height) for i in indices]
            if any(boxes):  # a clip outside the tube has no annotation (box metrics skip it, no NaN row)
                meta["boxes"] = boxes
        return Sample(self.sample_id(index), self.transform(frames), self.label(index), meta)


def is_test_split(split: str, dataset: str) -> bool:
    if split in ("test", "val"):
        return True
    if split == "train":
        return False
    raise UsageError(f"unknown {dataset} split {split!r}; use 'train', 'test' or 'val' (= test)")


def check_fold(fold: int, dataset: str) -> None:
    if fold not in (1, 2, 3):
        raise UsageError(f"{dataset} has splits 1, 2 and 3, not {fold}")
