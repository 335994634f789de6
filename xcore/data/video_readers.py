"""Video dataset readers: UCF-101 (+ UCF101-24 boxes), HMDB51 and Kinetics-400 (formats.md sections 3-5).

Each reader indexes split files and folders on construction (no decoding); ``load(i)`` decodes the entry's clip of
``clip_len`` frames — the centre clip (:func:`~xcore.data.video_decode.centre_indices`) unless the entry names its start
(UCF-101 ``clips="localisation"``) — and returns a :class:`~xcore.data.base.Sample` with ``x`` float (C, T, H, W)
and ``meta`` = ``frames`` (decodable frame count), ``indices`` (0-based frames of the clip), ``path`` and, for
UCF-101 videos with UCF101-24 tubes, ``boxes``: one list of [xmin, ymin, xmax, ymax] per clip frame, in the pixels
of ``x``. A missing, unreadable or too-short video raises :class:`SampleError`.
The UCF101-24 pickles are read by :mod:`xcore.data.ucf24` (a restricted unpickler, formats.md 4).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from xcore.data.base import DATASETS, Sample
from xcore.data.ucf24 import UCF24_FILES, VideoBoxes, load_ucf24
from xcore.data.video_decode import DEFAULT_TIMEOUT, centre_indices, frame_count, read_clip, sliding_indices
from xcore.data.video_transforms import VideoTransform
from xcore.errors import UsageError

VIDEO_EXTS = frozenset({".avi", ".mp4", ".mkv", ".webm", ".mov"})


def _lines(path: Path) -> list[str]:
    """Non-blank stripped lines; CRLF (all UCF-101 split files, formats.md 3.1), a BOM and blanks tolerated."""
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None


def _first_dir(root: Path, candidates: Sequence[str], marker: str | None = None) -> Path | None:
    """The first ``root/<candidate>`` folder (holding ``marker`` when given)."""
    for c in candidates:
        d = root / c
        if d.is_dir() and (marker is None or (d / marker).exists()):
            return d
    return None


# ---------------------------------------------------------------------------------------------- UCF101-24 boxes

LOCALISATION_STEP = 8  # localisation clips start every 8 frames (metrics.md §3.2)


def localisation_video(video: VideoBoxes, clip_len: int = 16) -> bool:
    """The thesis's video rules (metrics.md §3.2): a tube, at most one box on every frame (single actor) and at
    least ``clip_len`` (16) contiguous annotated frames."""
    frames = np.concatenate([t.frames for t in video.tubes] or [np.zeros(0, np.int64)])
    annotated = np.unique(frames)
    if len(annotated) < len(frames) or len(annotated) == 0:  # no tube, or two boxes on one frame
        return False
    breaks = np.flatnonzero(np.diff(annotated) != 1)
    runs = np.diff(np.concatenate([[-1], breaks, [len(annotated) - 1]]))
    return int(runs.max()) >= clip_len


def localisation_starts(video: VideoBoxes, clip_len: int = 16, step: int = LOCALISATION_STEP,
                        stride: int = 1) -> list[int]:
    """First frames of the thesis's weak-localisation clips of one UCF101-24 video (metrics.md §3.2, §4.5.3).

    No clips for a video :func:`localisation_video` drops; otherwise clips start at frames 0, ``step``, 2 ``step``...
    of the video's ``n_frames`` (those that fit, :func:`~xcore.data.video_decode.sliding_indices`) and are kept only if
    every frame of the clip has a GT box.
    """
    if not localisation_video(video, clip_len) or video.n_frames < (clip_len - 1) * stride + 1:
        return []
    have = {int(f) for t in video.tubes for f in t.frames}
    return [clip[0] for clip in sliding_indices(video.n_frames, clip_len, step, stride) if have.issuperset(clip)]


# ---------------------------------------------------------------------------------------------- readers

def _video_dir(root: Path, candidates: Sequence[str], classes: Sequence[str]) -> Path:
    """The first candidate folder holding a class folder (any case), else ``root``."""
    wanted = {c.lower() for c in classes}
    for c in candidates:
        d = root / c
        if d.is_dir() and any(p.is_dir() and p.name.lower() in wanted for p in d.iterdir()):
            return d
    return root


class _Resolver:
    """Finds ``<folder>/<file>`` under ``root`` case-insensitively (UCF-101 ``HandStandPushups``, formats.md 3.1)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
        self._files: dict[str, dict[str, Path]] = {}

    def find(self, folder: str, name: str) -> Path:
        """The file on disk, or the literal path (which ``load`` then reports as missing)."""
        d = self._dirs.get(folder.lower())
        if d is None:
            return self.root / folder / name
        if d.name not in self._files:
            self._files[d.name] = {p.name.lower(): p for p in d.iterdir()}
        return self._files[d.name].get(name.lower(), d / name)


class Entry(NamedTuple):
    """One indexed clip: ``start`` is its first frame, ``None`` for the video's centre clip."""

    sample_id: str
    path: Path
    label: int
    start: int | None = None


class VideoFolderDataset:
    """Shared part of the video readers: an index of :class:`Entry` (sample id, path, label, start) and ``load``."""

    name = "video"

    def __init__(self, transform: VideoTransform | None = None, clip_len: int = 16, stride: int = 1,
                 backend: str = "auto", timeout: float | None = DEFAULT_TIMEOUT) -> None:
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
        path = self.path(index)
        n = frame_count(path)
        indices = self.clip_indices(index, n)
        frames = read_clip(path, indices, backend=self.backend, timeout=self.timeout)
        meta: dict[str, Any] = {"frames": n, "indices": indices, "path": str(path)}
        ann = self.annotation(index)
        if ann is not None:
            height, width = frames.shape[1:3]
            sy, sx = height / ann.resolution[0], width / ann.resolution[1]
            boxes = [self.transform.map_boxes([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
                                               for b in ann.boxes_at(i)], width, height) for i in indices]
            if any(boxes):  # a clip outside the tube has no annotation (box metrics skip it, no NaN row)
                meta["boxes"] = boxes
        return Sample(self.sample_id(index), self.transform(frames), self.label(index), meta)


def _test_split(split: str, dataset: str) -> bool:
    if split in ("test", "val"):
        return True
    if split == "train":
        return False
    raise UsageError(f"unknown {dataset} split {split!r}; use 'train', 'test' or 'val' (= test)")


def _check_fold(fold: int, dataset: str) -> None:
    if fold not in (1, 2, 3):
        raise UsageError(f"{dataset} has splits 1, 2 and 3, not {fold}")


class UCF101Reader(VideoFolderDataset):
    """UCF-101 official split ``fold`` (formats.md 3.1); ``split`` "train" or "test" ("val" is an alias of test).

    Labels come from ``classInd.txt`` (1-based on disk, 0-based here): train lists carry them, test lists do not,
    so the folder part of the path names the class, matched case-insensitively, and files are found
    case-insensitively. ``annotations``: a UCF101-24 pickle (default: the first of :data:`UCF24_FILES` under
    ``root``); videos it covers get ``meta["boxes"]``.

    ``clips="centre"`` (default): one sample per video, its centre clip. ``clips="localisation"``: the thesis's
    weak-localisation set (metrics.md §3.2; 697 videos / 10,704 clips on test split 1): for every listed video with
    a tube, the clips of :func:`localisation_starts` (every 8 frames, every frame boxed, single-actor videos with
    >= 16 contiguous annotated frames), sample ids ``<video>@<start>``; ``localisation_videos`` names the kept
    videos (annotation keys), including those that yield no clip.
    """

    name = "ucf101"
    LIST_DIRS = ("ucfTrainTestlist", ".")
    VIDEO_DIRS = ("UCF-101", "UCF101", "videos", ".")

    def __init__(self, root: Path | str, split: str = "test", fold: int = 1, annotations: Path | str | None = None,
                 clips: str = "centre", **kw: Any) -> None:
        super().__init__(**kw)
        self.root, self.split, self.fold, self.clips = Path(root), split, fold, clips
        if clips not in ("centre", "localisation"):
            raise UsageError(f"unknown UCF-101 clips {clips!r}; use 'centre' or 'localisation'")
        _check_fold(fold, "UCF-101")
        test = _test_split(split, "UCF-101")
        lists = _first_dir(self.root, self.LIST_DIRS, "classInd.txt")
        if lists is None:
            raise UsageError(f"{self.root} has no classInd.txt (looked in {', '.join(self.LIST_DIRS)})")
        self.classes = read_class_ind(lists / "classInd.txt")
        by_name = {c.lower(): i for i, c in enumerate(self.classes)}
        split_file = lists / f"{'testlist' if test else 'trainlist'}0{fold}.txt"
        if not split_file.is_file():
            raise UsageError(f"split file {split_file} does not exist")
        videos = _Resolver(_video_dir(self.root, self.VIDEO_DIRS, self.classes))
        self._keys: list[str] = []
        for ln in _lines(split_file):
            rel, _, given = ln.partition(" ")
            folder, _, fname = rel.replace("\\", "/").rpartition("/")
            if folder.lower() not in by_name:
                raise UsageError(f"{split_file}: {rel} is not in a classInd class folder")
            label = int(given) - 1 if given.strip() else by_name[folder.lower()]
            self._items.append(Entry(Path(fname).stem, videos.find(folder, fname), label))
            self._keys.append(f"{folder}/{Path(fname).stem}".lower())
        ann_path = Path(annotations) if annotations is not None else next(
            (self.root / f for f in UCF24_FILES if (self.root / f).is_file()), None)
        self.boxes: dict[str, VideoBoxes] = {}
        if ann_path is not None:
            self.boxes = {k.lower(): v for k, v in load_ucf24(ann_path).videos.items()}
        self.localisation_videos: list[str] = []
        if clips == "localisation":
            self._localisation_clips()

    def _localisation_clips(self) -> None:
        """Replace the one-clip-per-video index by the localisation clips (:func:`localisation_starts`)."""
        if not self.boxes:
            raise UsageError(f"clips='localisation' needs UCF101-24 annotations ({' or '.join(UCF24_FILES)} under "
                             f"{self.root}, or annotations=)")
        items: list[Entry] = []
        keys: list[str] = []
        for entry, key in zip(self._items, self._keys, strict=True):
            video = self.boxes.get(key)
            if video is None or not localisation_video(video, self.clip_len):
                continue
            self.localisation_videos.append(key)
            starts = localisation_starts(video, self.clip_len, LOCALISATION_STEP, self.stride)
            items += [entry._replace(sample_id=f"{entry.sample_id}@{s}", start=s) for s in starts]
            keys += [key] * len(starts)
        self._items, self._keys = items, keys

    def annotation(self, index: int) -> VideoBoxes | None:
        return self.boxes.get(self._keys[index])


def read_class_ind(path: Path) -> list[str]:
    """``classInd.txt`` (``<1-based index> <ClassName>``) -> class names in index order."""
    pairs = [ln.split(maxsplit=1) for ln in _lines(path)]
    try:
        order = {int(i): name.strip() for i, name in pairs}
    except ValueError:
        raise UsageError(f"{path}: expected '<index> <ClassName>' lines") from None
    if sorted(order) != list(range(1, len(order) + 1)):
        raise UsageError(f"{path}: class indices are not 1..{len(order)}")
    return [order[i] for i in range(1, len(order) + 1)]


class HMDB51Reader(VideoFolderDataset):
    """HMDB51 split ``fold``: ``<class>_test_split<fold>.txt`` tags 1 = train, 2 = test, 0 = unused (3.2).

    Classes are the sorted class names of the split files; videos live in ``<root>/<class>/`` (or under
    ``hmdb51_org/`` or ``videos/``), matched case-insensitively.
    """

    name = "hmdb51"
    SPLIT_DIRS = ("testTrainMulti_7030_splits", "splits", ".")
    VIDEO_DIRS = ("hmdb51_org", "videos", ".")

    def __init__(self, root: Path | str, split: str = "test", fold: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        self.root, self.split, self.fold = Path(root), split, fold
        _check_fold(fold, "HMDB51")
        tag = "2" if _test_split(split, "HMDB51") else "1"
        suffix = f"_test_split{fold}.txt"
        folder = next((d for d in (_first_dir(self.root, [c]) for c in self.SPLIT_DIRS)
                       if d is not None and any(f.endswith(suffix) for f in os.listdir(d))), None)
        if folder is None:
            raise UsageError(f"{self.root} has no *{suffix} files (looked in {', '.join(self.SPLIT_DIRS)})")
        files = sorted(f for f in os.listdir(folder) if f.endswith(suffix))
        self.classes = [f[:-len(suffix)] for f in files]
        videos = _Resolver(_video_dir(self.root, self.VIDEO_DIRS, self.classes))
        for label, (cls, fname) in enumerate(zip(self.classes, files, strict=True)):
            for ln in _lines(folder / fname):
                parts = ln.rsplit(maxsplit=1)
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise UsageError(f"{folder / fname}: expected '<video>.avi <0|1|2>', got {ln!r}")
                if parts[1] == tag:
                    self._items.append(Entry(Path(parts[0]).stem, videos.find(cls, parts[0]), label))


class KineticsReader(VideoFolderDataset):
    """Kinetics-400 from a CVDF / DeepMind CSV and trimmed clips ``<id>_<start:06d>_<end:06d>.mp4`` (section 5).

    CSV: ``annotations`` or ``<root>/annotations/<split>.csv`` (``validate`` accepted for val); ``label``, ``is_cc``
    and ``split`` columns optional. Clips are indexed by file name anywhere under ``<root>/<split>/`` (flat or
    class folders with spaces or underscores) or ``<root>/``; files under ``<root>/replacement*`` win. Rows whose
    clip is absent are skipped (expected, section 5) and counted in ``missing``. Classes: ``classes`` (names or a
    file, one per line), else ``<root>/classes.txt``, else the sorted labels of every CSV beside the split's.
    Rows without a label get label -1.
    """

    name = "kinetics400"

    def __init__(self, root: Path | str, split: str = "val", annotations: Path | str | None = None,
                 classes: Sequence[str] | Path | str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.root, self.split = Path(root), split
        names = ("val", "validate") if split in ("val", "validate") else (split,)
        csv_path = Path(annotations) if annotations is not None else next(
            (p for n in names for p in (self.root / "annotations" / f"{n}.csv", self.root / f"{n}.csv")
             if p.is_file()), None)
        if csv_path is None or not csv_path.is_file():
            raise UsageError(f"{self.root}: no Kinetics CSV for split {split!r} (looked in annotations/ and .)")
        rows = [r for r in read_kinetics_csv(csv_path) if r.get("split") in (None, "", *names)]
        self.classes = self._classes(classes, csv_path)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({r["label"] for r in rows if r.get("label") and r["label"] not in index})
        if unknown:
            raise UsageError(f"{csv_path}: labels {', '.join(unknown[:5])} are not in the class list")
        clips = self._index_clips(names)
        self.missing = 0
        for r in rows:
            stem = clip_name(r["youtube_id"], r["time_start"], r["time_end"])
            if stem not in clips:
                self.missing += 1
                continue
            self._items.append(Entry(stem, clips[stem], index[r["label"]] if r.get("label") else -1))

    def _classes(self, classes: Sequence[str] | Path | str | None, csv_path: Path) -> list[str]:
        if classes is None and (self.root / "classes.txt").is_file():
            classes = self.root / "classes.txt"
        if isinstance(classes, (str, Path)):
            return _lines(Path(classes))
        if classes is not None:
            return list(classes)
        csvs = sorted(csv_path.parent.glob("*.csv")) if csv_path.parent.name == "annotations" else [csv_path]
        return sorted({r["label"] for p in csvs for r in read_kinetics_csv(p) if r.get("label")})

    def _index_clips(self, names: Sequence[str]) -> dict[str, Path]:
        tops = [self.root / n for n in names if (self.root / n).is_dir()] or [self.root]
        tops += sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("replacement"))
        clips: dict[str, Path] = {}
        for top in tops:
            for dirpath, _, files in os.walk(top):
                for f in files:
                    p = Path(dirpath, f)
                    if p.suffix.lower() in VIDEO_EXTS:
                        clips[p.stem] = p
        return clips


def clip_name(youtube_id: str, time_start: str | float, time_end: str | float) -> str:
    """Trimmed-clip stem ``<youtube_id>_<start:06d>_<end:06d>`` (ActivityNet crawler, formats.md 5)."""
    return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}"


def read_kinetics_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a Kinetics CSV as dicts (a real CSV parser: quoted labels hold spaces and commas)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    if rows and not {"youtube_id", "time_start", "time_end"} <= set(rows[0]):
        raise UsageError(f"{path}: needs youtube_id, time_start and time_end columns")
    return [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in rows]


DATASETS.add("ucf101", UCF101Reader)
DATASETS.add("hmdb51", HMDB51Reader)
DATASETS.add("kinetics400", KineticsReader)
