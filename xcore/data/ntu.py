"""NTU RGB+D 60 / 120 skeletons: sample names, evaluation splits, missing-skeleton lists and the dataset reader.

Names, protocols and the official missing-skeleton lists are described in docs/formats/ntu.md §1, §3 and §4; the
reader builds the ST-GCN input of yysijie/st-gcn ``tools/ntu_gendata.py`` (docs/formats/ntu.md §6): frames
zero-padded at the end to ``max_frames``, no centering or normalisation. The ``.skeleton`` file itself is
:mod:`xcore.data.ntu_skeleton`, the joint layout :mod:`xcore.data.ntu_joints`; both are re-exported here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from xcore.data.base import Sample
from xcore.data.confine import DatasetRoot
from xcore.data.ntu_joints import CENTER_JOINT, JOINT_NAMES, NTU_BONES, NUM_JOINTS, STGCN_EDGES
from xcore.data.ntu_skeleton import (
    BODY_FIELDS,
    JOINT_FIELDS,
    Body,
    format_skeleton,
    parse_skeleton,
    read_skeleton,
    skeleton_array,
)
from xcore.errors import UsageError

__all__ = [
    "BENCHMARKS", "BODY_FIELDS", "CENTER_JOINT", "JOINT_FIELDS", "JOINT_NAMES", "MISSING_FILES", "NTU60_XSUB_TRAIN",
    "NTU120_XSUB_TRAIN", "NTU_BONES", "NUM_JOINTS", "PARTS", "SKELETON_DIR", "STGCN_EDGES", "XVIEW_TRAIN_CAMERAS",
    "Body", "NTUReader", "format_skeleton", "in_split", "parse_name", "parse_skeleton", "read_missing",
    "read_skeleton", "skeleton_array",
]

NTU60_XSUB_TRAIN = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU120_XSUB_TRAIN = NTU60_XSUB_TRAIN | {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82,
                                         83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103}
XVIEW_TRAIN_CAMERAS = frozenset({2, 3})
BENCHMARKS = ("xsub", "xview", "xsub120", "xset120")
PARTS = ("train", "val")
SKELETON_DIR = "nturgb+d_skeletons"
MISSING_FILES = ("samples_with_missing_skeletons.txt", "NTU_RGBD_samples_with_missing_skeletons.txt",
                 "NTU_RGBD120_samples_with_missing_skeletons.txt")
_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")


def parse_name(name: str | os.PathLike[str]) -> dict[str, int]:
    """``SsssCcccPpppRrrrAaaa`` (a path, or a name with or without ``.skeleton``) -> setup, camera, subject,
    replication, action as ints (docs/formats/ntu.md §1). Anything else raises ``ValueError``."""
    stem = Path(name).name
    stem = stem.removesuffix(".skeleton")
    m = _NAME.match(stem)
    if m is None:
        raise ValueError(f"not an NTU sample name (SsssCcccPpppRrrrAaaa): {str(name)!r}")
    return dict(zip(("setup", "camera", "subject", "replication", "action"), map(int, m.groups()), strict=True))


def in_split(name: str | os.PathLike[str], benchmark: str, part: str) -> bool:
    """Whether sample ``name`` is in ``part`` ("train"/"val") of ``benchmark`` (docs/formats/ntu.md §4):
    xsub / xsub120 by training subject, xview by camera (2, 3 train), xset120 by setup parity (even = train)."""
    if benchmark not in BENCHMARKS or part not in PARTS:
        raise UsageError(f"unknown NTU split {benchmark}/{part}; benchmarks {', '.join(BENCHMARKS)}, parts train, val")
    f = parse_name(name)
    if benchmark == "xsub":
        train = f["subject"] in NTU60_XSUB_TRAIN
    elif benchmark == "xsub120":
        train = f["subject"] in NTU120_XSUB_TRAIN
    elif benchmark == "xview":
        train = f["camera"] in XVIEW_TRAIN_CAMERAS
    else:
        train = f["setup"] % 2 == 0
    return train == (part == "train")


def read_missing(path: Path | str) -> set[str]:
    """Sample names of an official missing-skeleton list: its 3 header lines are skipped by keeping only lines
    that start with ``S`` (docs/formats/ntu.md §3); CRLF-safe."""
    return {s for s in (ln.strip() for ln in Path(path).read_text(encoding="utf-8-sig").splitlines())
            if s.startswith("S")}


def _parse_split(split: str) -> tuple[str, str] | None:
    """``"all"`` -> None; ``"train"``/``"val"`` -> xsub; ``"<benchmark>/<part>"``; anything else: UsageError."""
    if split == "all":
        return None
    bench, _, part = split.rpartition("/")
    bench = bench or "xsub"
    if bench not in BENCHMARKS or part not in PARTS:
        raise UsageError(f"unknown NTU split {split!r}; use all, train, val or <benchmark>/<part> with benchmark "
                         f"in {', '.join(BENCHMARKS)} and part train or val")
    return bench, part


class NTUReader:
    """The :class:`~xcore.data.base.Dataset` of NTU RGB+D skeletons under ``root`` (ST-GCN preprocessing).

    ``root`` holds ``*.skeleton`` files directly or in ``nturgb+d_skeletons/``; names that do not follow the NTU
    pattern are ignored. Missing-skeleton samples (``missing=`` path, else any of :data:`MISSING_FILES` in root)
    are removed before splitting. ``split``: ``"<benchmark>/<part>"``, ``"train"``/``"val"`` (= xsub) or
    ``"all"``. Classes: the lines of ``root/actions.txt`` (line k = action k), else ``A001`` .. ``A<max action>``.
    ``load(i)`` gives x float32 (3, max_frames, 25, max_bodies), label = action - 1. Files and folders are opened
    through :class:`~xcore.data.confine.DatasetRoot`: a ``.skeleton`` outside ``root`` (a symbolic link out of it)
    is a ``load`` error, ``actions.txt``, a missing-skeleton list or the skeleton folder outside it a UsageError,
    unless ``follow_links=True``.
    """

    name = "ntu"

    def __init__(self, root: Path | str, split: str = "xsub/val", *, max_frames: int = 300, max_bodies: int = 2,
                 missing: Path | str | None = None, follow_links: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"dataset root {self.root} does not exist")
        self.jail = DatasetRoot(self.root, follow_links)
        if max_frames < 1 or max_bodies < 1:
            raise UsageError("NTUReader needs max_frames >= 1 and max_bodies >= 1")
        self.split, self.max_frames, self.max_bodies = split, max_frames, max_bodies
        selector = _parse_split(split)
        self.folder, names = self._index()
        actions = [parse_name(n)["action"] for n in names]
        self.classes = self._classes(max(actions))
        drop = self._missing(missing)
        self._names = [n for n in names if n not in drop and (selector is None or in_split(n, *selector))]
        self._fields = [parse_name(n) for n in self._names]

    def _index(self) -> tuple[Path, list[str]]:
        for folder in (self.root / SKELETON_DIR, self.root):
            if folder.is_dir():
                names = sorted(f[:-9] for f in os.listdir(self.jail.part(folder))
                               if f.endswith(".skeleton") and _NAME.match(f[:-9]))
                if names:
                    return folder, names
        raise UsageError(f"{self.root} holds no NTU .skeleton files (looked in . and {SKELETON_DIR}/)")

    def _classes(self, max_action: int) -> list[str]:
        path = self.root / "actions.txt"
        if not path.is_file():
            return [f"A{a:03d}" for a in range(1, max_action + 1)]
        text = self.jail.part(path).read_text(encoding="utf-8-sig")
        classes = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(classes) < max_action:
            raise UsageError(f"{path} names {len(classes)} actions but the files go up to A{max_action:03d}")
        return classes

    def _missing(self, missing: Path | str | None) -> set[str]:
        if missing is not None:
            if not Path(missing).is_file():
                raise UsageError(f"missing-skeleton list {missing} does not exist")
            return read_missing(missing)
        return set().union(*(read_missing(self.jail.part(self.root / f)) for f in MISSING_FILES
                             if (self.root / f).is_file()))

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"NTUReader({str(self.root)!r}, split={self.split!r}, n={len(self)})"

    def path(self, index: int) -> Path:
        return self.folder / f"{self._names[index]}.skeleton"

    def sample_id(self, index: int) -> str:
        return self._names[index]

    def label(self, index: int) -> int:
        return self._fields[index]["action"] - 1

    def load(self, index: int) -> Sample:
        frames = parse_skeleton(self.jail.file(self.path(index)))
        data = skeleton_array(frames, self.max_bodies)
        valid = min(data.shape[1], self.max_frames)
        x = torch.zeros((3, self.max_frames, NUM_JOINTS, self.max_bodies), dtype=torch.float32)
        x[:, :valid] = torch.from_numpy(data[:, :valid])
        meta = {"valid_frames": valid, **self._fields[index], "bodies": max(len(b) for b in frames),
                "path": str(self.path(index))}
        del meta["action"]
        return Sample(self._names[index], x, self.label(index), meta)

