"""Video dataset readers: UCF-101 (+ UCF101-24 boxes), HMDB51 and Kinetics-400 (docs/formats/ucf101.md,
hmdb51.md, ucf101-24.md, kinetics400.md).

Each reader indexes split files and folders on construction (no decoding); ``load(i)`` decodes the entry's clip of
``clip_len`` frames — the centre clip (:func:`~xcore.data.clip_sampling.centre_indices`) unless the entry names its
start (UCF-101 ``clips="localisation"``, :mod:`xcore.data.ucf24_clips`) — and returns a
:class:`~xcore.data.base.Sample` with ``x`` float (C, T, H, W) and ``meta`` = ``frames`` (decodable frame count),
``indices`` (0-based frames of the clip), ``path`` and, for UCF-101 videos with UCF101-24 tubes, ``boxes``: one list
of [xmin, ymin, xmax, ymax] per clip frame, in the pixels of ``x``. A missing, unreadable or too-short video raises
:class:`SampleError`. The shared index and ``load`` are :class:`~xcore.data.video_folder.VideoFolderDataset`; the
UCF101-24 pickles are read by :mod:`xcore.data.ucf24` (a restricted unpickler). Every reader is confined to its root
(:mod:`xcore.data.confine`, option ``follow_links``): a split-list entry that is absolute or climbs out with ``..``, or
a clip outside the root, is a ``load`` error; a list file or a folder to list outside it, a UsageError.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xcore.data.ucf24 import UCF24_FILES, VideoBoxes, load_ucf24
from xcore.data.ucf24_clips import LOCALISATION_STEP, localisation_starts, localisation_video
from xcore.data.video_folder import (
    VIDEO_EXTS,
    Entry,
    Resolver,
    VideoFolderDataset,
    check_fold,
    first_dir,
    is_test_split,
    read_lines,
    video_dir,
)
from xcore.errors import UsageError

__all__ = ["LOCALISATION_STEP", "VIDEO_EXTS", "Entry", "HMDB51Reader", "KineticsReader", "UCF101Reader",
           "VideoFolderDataset", "clip_name", "localisation_starts", "localisation_video", "read_class_ind",
           "read_kinetics_csv"]


class UCF101Reader(VideoFolderDataset):
    """UCF-101 official split ``fold`` (docs/formats/ucf101.md §2); ``split`` "train" or "test" ("val" is an alias
    of test).

    Labels come from ``classInd.txt`` (1-based on disk, 0-based here): train lists carry them, test lists do not,
    so the folder part of the path names the class, matched case-insensitively, and files are found
    case-insensitively. ``annotations``: a UCF101-24 pickle (default: the first of :data:`UCF24_FILES` under
    ``root``); videos it covers get ``meta["boxes"]``.

    ``clips="centre"`` (default): one sample per video, its centre clip. ``clips="localisation"``: the thesis's
    weak-localisation set (thesis §4.5.3; 697 videos / 10,704 clips on test split 1): for every listed video with
    a tube, the clips of :func:`localisation_starts` (every 8 frames, every frame boxed, single-actor videos with
    >= 16 contiguous annotated frames), sample ids ``<video>@<start>``; ``localisation_videos`` names the kept
    videos (annotation keys), including those that yield no clip.
    """

    name = "ucf101"
    LIST_DIRS = ("ucfTrainTestlist", ".")
    VIDEO_DIRS = ("UCF-101", "UCF101", "videos", ".")

    def __init__(self, root: Path | str, split: str = "test", fold: int = 1, annotations: Path | str | None = None,
                 clips: str = "centre", **kw: Any) -> None:
        super().__init__(root, **kw)
        self.split, self.fold, self.clips = split, fold, clips
        if clips not in ("centre", "localisation"):
            raise UsageError(f"unknown UCF-101 clips {clips!r}; use 'centre' or 'localisation'")
        check_fold(fold, "UCF-101")
        test = is_test_split(split, "UCF-101")
        lists = first_dir(self.jail, self.LIST_DIRS, "classInd.txt")
        if lists is None:
            raise UsageError(f"{self.root} has no classInd.txt (looked in {', '.join(self.LIST_DIRS)})")
        self.classes = read_class_ind(self.jail.part(lists / "classInd.txt"))
        by_name = {c.lower(): i for i, c in enumerate(self.classes)}
        split_file = lists / f"{'testlist' if test else 'trainlist'}0{fold}.txt"
        if not split_file.is_file():
            raise UsageError(f"split file {split_file} does not exist")
        videos = Resolver(video_dir(self.jail, self.VIDEO_DIRS, self.classes), self.jail)
        self._keys: list[str] = []
        for ln in read_lines(self.jail.part(split_file)):
            rel, _, given = ln.partition(" ")
            folder, _, fname = rel.replace("\\", "/").rpartition("/")
            refused = self.jail.entry(rel)
            if refused is not None:  # never resolved nor decoded: load raises (one errors row)
                label = int(given) - 1 if given.strip() else by_name.get(folder.lower(), -1)
                self._items.append(Entry(Path(fname).stem, videos.root / rel, label, refused=refused))
                self._keys.append(rel.lower())
                continue
            if folder.lower() not in by_name:
                raise UsageError(f"{split_file}: {rel} is not in a classInd class folder")
            label = int(given) - 1 if given.strip() else by_name[folder.lower()]
            self._items.append(Entry(Path(fname).stem, videos.find(folder, fname), label))
            self._keys.append(f"{folder}/{Path(fname).stem}".lower())
        ann_path = Path(annotations) if annotations is not None else next(
            (self.jail.part(self.root / f) for f in UCF24_FILES if (self.root / f).is_file()), None)
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
    pairs = [ln.split(maxsplit=1) for ln in read_lines(path)]
    try:
        order = {int(i): name.strip() for i, name in pairs}
    except ValueError:
        raise UsageError(f"{path}: expected '<index> <ClassName>' lines") from None
    if sorted(order) != list(range(1, len(order) + 1)):
        raise UsageError(f"{path}: class indices are not 1..{len(order)}")
    return [order[i] for i in range(1, len(order) + 1)]


class HMDB51Reader(VideoFolderDataset):
    """HMDB51 split ``fold``: ``<class>_test_split<fold>.txt`` tags 1 = train, 2 = test, 0 = unused
    (docs/formats/hmdb51.md).

    Classes are the sorted class names of the split files; videos live in ``<root>/<class>/`` (or under
    ``hmdb51_org/`` or ``videos/``), matched case-insensitively.
    """

    name = "hmdb51"
    SPLIT_DIRS = ("testTrainMulti_7030_splits", "splits", ".")
    VIDEO_DIRS = ("hmdb51_org", "videos", ".")

    def __init__(self, root: Path | str, split: str = "test", fold: int = 1, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.split, self.fold = split, fold
        check_fold(fold, "HMDB51")
        tag = "2" if is_test_split(split, "HMDB51") else "1"
        suffix = f"_test_split{fold}.txt"
        folder = next((d for d in (first_dir(self.jail, [c]) for c in self.SPLIT_DIRS)
                       if d is not None and any(f.endswith(suffix) for f in os.listdir(self.jail.part(d)))), None)
        if folder is None:
            raise UsageError(f"{self.root} has no *{suffix} files (looked in {', '.join(self.SPLIT_DIRS)})")
        files = sorted(f for f in os.listdir(folder) if f.endswith(suffix))
        self.classes = [f[:-len(suffix)] for f in files]
        videos = Resolver(video_dir(self.jail, self.VIDEO_DIRS, self.classes), self.jail)
        for label, (cls, fname) in enumerate(zip(self.classes, files, strict=True)):
            for ln in read_lines(self.jail.part(folder / fname)):
                parts = ln.rsplit(maxsplit=1)
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise UsageError(f"{folder / fname}: expected '<video>.avi <0|1|2>', got {ln!r}")
                if parts[1] != tag:
                    continue
                refused = self.jail.entry(parts[0])
                if refused is not None:  # never resolved nor decoded: load raises (one errors row)
                    self._items.append(Entry(Path(parts[0]).stem, videos.root / cls / parts[0], label, refused=refused))
                else:
                    self._items.append(Entry(Path(parts[0]).stem, videos.find(cls, parts[0]), label))


class KineticsReader(VideoFolderDataset):
    """Kinetics-400 from a CVDF / DeepMind CSV and trimmed clips ``<id>_<start:06d>_<end:06d>.mp4``
    (docs/formats/kinetics400.md).

    CSV: ``annotations`` or ``<root>/annotations/<split>.csv`` (``validate`` accepted for val); ``label``, ``is_cc``
    and ``split`` columns optional. Clips are indexed by file name anywhere under ``<root>/<split>/`` (flat or
    class folders with spaces or underscores) or ``<root>/``; files under ``<root>/replacement*`` win. Rows whose
    clip is absent are skipped (expected: clips go missing) and counted in ``missing``. Classes: ``classes`` (names or a
    file, one per line), else ``<root>/classes.txt``, else the sorted labels of every CSV beside the split's.
    Rows without a label get label -1.
    """

    name = "kinetics400"

    def __init__(self, root: Path | str, split: str = "val", annotations: Path | str | None = None,
                 classes: Sequence[str] | Path | str | None = None, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.split = split
        names = ("val", "validate") if split in ("val", "validate") else (split,)
        csv_path = Path(annotations) if annotations is not None else next(
            (p for n in names for p in (self.root / "annotations" / f"{n}.csv", self.root / f"{n}.csv")
             if p.is_file()), None)
        if annotations is None and csv_path is not None:
            self.jail.part(csv_path)
        if csv_path is None or not csv_path.is_file():
            raise UsageError(f"{self.root}: no Kinetics CSV for split {split!r} (looked in annotations/ and .)")
        rows = [r for r in read_kinetics_csv(csv_path) if r.get("split") in (None, "", *names)]
        self.classes = self._classes(classes, csv_path, annotations is not None)
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

    def _classes(self, classes: Sequence[str] | Path | str | None, csv_path: Path, explicit: bool) -> list[str]:
        """``classes`` as given (names or a file), else ``root/classes.txt``, else the labels of the CSVs; files
        found under the root are confined to it, paths the user names are not."""
        if classes is None and (self.root / "classes.txt").is_file():
            classes = self.jail.part(self.root / "classes.txt")
        if isinstance(classes, (str, Path)):
            return read_lines(Path(classes))
        if classes is not None:
            return list(classes)
        csvs = sorted(csv_path.parent.glob("*.csv")) if csv_path.parent.name == "annotations" else [csv_path]
        return sorted({r["label"] for p in csvs for r in read_kinetics_csv(p if explicit else self.jail.part(p))
                       if r.get("label")})

    def _index_clips(self, names: Sequence[str]) -> dict[str, Path]:
        """Clips by stem under the split folder (or the root) and ``replacement*``; symbolic links to folders are
        followed once each (a loop is walked once), and one that leads out of the root is a UsageError."""
        tops = [self.root / n for n in names if (self.root / n).is_dir()] or [self.root]
        tops += sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("replacement"))
        clips: dict[str, Path] = {}
        seen: set[str] = set()
        for top in tops:
            self.jail.part(top)
            for dirpath, dirs, files in os.walk(top, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:
                    dirs[:] = []
                    continue
                seen.add(real)
                for d in dirs:
                    self.jail.part(Path(dirpath, d))
                for f in files:
                    p = Path(dirpath, f)
                    if p.suffix.lower() in VIDEO_EXTS:
                        clips[p.stem] = p
        return clips


def clip_name(youtube_id: str, time_start: str | float, time_end: str | float) -> str:
    """Trimmed-clip stem ``<youtube_id>_<start:06d>_<end:06d>`` (activitynet/ActivityNet
    ``Crawler/Kinetics/download.py``)."""
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
