"""Reader for ImageNet-style folders: real ILSVRC2012 (devkit or Kaggle layout) and the synthetic shapes set.

Class order: ``LOC_synset_mapping.txt`` (line order) if present, else sorted ``train/`` folder names, else the
sorted leaf WNIDs of the devkit ``meta.mat``. Val labels, in order of preference: ``LOC_val_solution.csv``,
per-image box XML (``object/name``), devkit ground truth + ``meta.mat``. The devkit ground truth holds
ILSVRC2012_IDs, *not* class indices: they are mapped id -> WNID -> position in the class list.

Every file and folder is opened through :class:`~xcore.data.confine.DatasetRoot` (issue 12): an image outside the
root (a symbolic link out of it) is a ``load`` error, a list file or a folder to list outside it a ``UsageError``,
unless ``follow_links=True``. Images are found by listing folders; list entries (image ids, WNIDs) never become paths.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xcore.data.base import FileList, Sample
from xcore.data.confine import DatasetRoot
from xcore.data.transforms import ImageTransform
from xcore.errors import UsageError

IMAGE_EXTS = frozenset({".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"})  # torchvision's
VAL_DIRS = ("val", "ILSVRC/Data/CLS-LOC/val")
TRAIN_DIRS = ("train", "ILSVRC/Data/CLS-LOC/train")
XML_DIRS = ("val_boxes", "ILSVRC/Annotations/CLS-LOC/val")
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", "devkit/data", "data")
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
_WNID = re.compile(r"^n\d{8}$")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _lines(path: Path) -> list[str]:
    """Non-blank, stripped lines; tolerates CRLF, a BOM and trailing blanks."""
    text = path.read_text(encoding="utf-8-sig")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _images(folder: Path, jail: DatasetRoot) -> list[Path]:
    """The image files of ``folder`` (a folder that leads out of the root is a UsageError: it is not listed)."""
    return sorted(folder / p.name for p in jail.part(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _first_dir(root: Path, candidates: tuple[str, ...]) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_dir()), None)


def read_synset_mapping(path: Path) -> tuple[list[str], list[str]]:
    """``<wnid> <names>`` per line -> (wnids, names) in line order."""
    wnids, names = [], []
    for ln in _lines(path):
        wnid, _, name = ln.partition(" ")
        wnids.append(wnid)
        names.append(name.strip() or wnid)
    return wnids, names


def read_val_solution(path: Path) -> dict[str, list[tuple[str, list[int]]]]:
    """Kaggle ``LOC_val_solution.csv`` -> {image id: [(wnid, [xmin, ymin, xmax, ymax]), ...]}."""
    out: dict[str, list[tuple[str, list[int]]]] = {}
    for ln in _lines(path):
        image_id, _, pred = ln.partition(",")
        if image_id == "ImageId":
            continue
        tok = pred.split()
        out[image_id.strip()] = [(tok[k], [int(float(v)) for v in tok[k + 1:k + 5]])
                                 for k in range(0, len(tok) - 4, 5)]
    return out


def read_box_xml(path: Path) -> list[tuple[str, list[int]]]:
    """All ``object`` elements of a PASCAL-VOC file -> [(wnid, [xmin, ymin, xmax, ymax]), ...]."""
    objects = []
    for obj in ET.parse(path).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        box = [int(float((bb.findtext(k) or "0").strip())) for k in ("xmin", "ymin", "xmax", "ymax")] \
            if bb is not None else []
        objects.append((name, box))
    return objects


def read_devkit(data_dir: Path) -> tuple[list[str], list[str]]:
    """Devkit ``data/`` -> (sorted leaf wnids, the WNID of each ground-truth line, in line order)."""
    import scipy.io

    synsets = scipy.io.loadmat(str(data_dir / "meta.mat"), squeeze_me=True)["synsets"]
    id_to_wnid: dict[int, str] = {}
    for s in np.atleast_1d(synsets):
        if int(s["num_children"]) == 0:
            id_to_wnid[int(s["ILSVRC2012_ID"])] = str(s["WNID"]).strip()
    gt = [id_to_wnid[int(v)] for v in _lines(data_dir / GROUND_TRUTH)]
    return sorted(id_to_wnid.values()), gt


def _image_number(stem: str) -> int:
    m = _TRAILING_NUMBER.search(stem)
    if m is None:
        raise UsageError(f"cannot number val image {stem!r} for the devkit ground truth")
    return int(m.group(1))


class ImageNetReader(FileList):
    """The :class:`~xcore.data.base.Dataset` of an ImageNet-style ``split`` ("val" or "train") under ``root``.

    ``load(i)`` returns a :class:`Sample` whose ``meta`` holds ``boxes`` (all annotated objects, in the
    coordinates of ``x``), ``mask`` (bool array from ``val_masks/<stem>.png``, for train images from
    ``train_masks/<wnid>/<stem>.png``, in the coordinates of ``x``; ``None`` when there is no such file), ``path``
    and ``wnid``. A corrupt or truncated image raises from PIL. ``follow_links``: let symbolic links lead out of
    ``root`` (:mod:`xcore.data.confine`).
    """

    name = "imagenet"

    def __init__(self, root: Path | str, split: str = "val", transform: ImageTransform | None = None,
                 size: int = 224, follow_links: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"dataset root {self.root} does not exist")
        self.jail = DatasetRoot(self.root, follow_links)
        if split not in ("val", "train"):
            raise UsageError(f"unknown ImageNet split {split!r}; use 'val' or 'train'")
        self.split = split
        self.transform = transform if transform is not None else ImageTransform(size)
        self._objects: dict[str, list[tuple[str, list[int]]]] = {}
        self._xml_dir = _first_dir(self.root, XML_DIRS) if split == "val" else None
        self._mask_dir = self.root / f"{split}_masks"
        devkit = None
        train_dir = _first_dir(self.root, TRAIN_DIRS)
        mapping = self.root / "LOC_synset_mapping.txt"
        if mapping.is_file():
            self.classes, self.class_names = read_synset_mapping(self.jail.part(mapping))
        elif train_dir is not None:
            self.classes = sorted(p.name for p in self.jail.part(train_dir).iterdir() if p.is_dir())
            self.class_names = list(self.classes)
        else:
            devkit = self._read_devkit()
            self.classes, self.class_names = (list(devkit[0]), list(devkit[0])) if devkit else ([], [])
        self._index = {w: i for i, w in enumerate(self.classes)}
        if split == "train":
            self._paths, wnids = self._index_folders(train_dir, "train")
        else:
            self._paths, wnids = self._index_val(devkit)
        if not self.classes:  # no class list anywhere: the labels seen, sorted
            self.classes = sorted(set(wnids))
            self.class_names = list(self.classes)
            self._index = {w: i for i, w in enumerate(self.classes)}
        unknown = sorted(set(wnids) - set(self._index))
        if unknown:
            raise UsageError(f"{self.root}: labels {', '.join(unknown[:5])} are not in the class list")
        self._labels = [self._index[w] for w in wnids]

    def _read_devkit(self) -> tuple[list[str], list[str]] | None:
        data_dir = next((self.root / d for d in DEVKIT_DIRS
                         if (self.root / d / GROUND_TRUTH).is_file() and (self.root / d / "meta.mat").is_file()),
                        None)
        if data_dir is None:
            return None
        self.jail.part(data_dir / GROUND_TRUTH), self.jail.part(data_dir / "meta.mat")
        try:
            return read_devkit(data_dir)
        except (OSError, KeyError, ValueError) as err:
            raise UsageError(f"unreadable ImageNet devkit in {data_dir}: {err}") from None

    def _index_folders(self, folder: Path | None, split: str) -> tuple[list[Path], list[str]]:
        if folder is None:
            raise UsageError(f"{self.root} has no {split} split (looked for {', '.join(TRAIN_DIRS)})")
        paths: list[Path] = []
        wnids: list[str] = []
        for sub in sorted(p for p in self.jail.part(folder).iterdir() if p.is_dir()):
            files = _images(folder / sub.name, self.jail)
            paths += files
            wnids += [sub.name] * len(files)
        if not paths:
            raise UsageError(f"{folder} holds no images")
        return paths, wnids

    def _index_val(self, devkit: tuple[list[str], list[str]] | None) -> tuple[list[Path], list[str]]:
        folder = _first_dir(self.root, VAL_DIRS)
        if folder is None:
            raise UsageError(f"{self.root} has no val split (looked for {', '.join(VAL_DIRS)})")
        if any(p.is_dir() and _WNID.match(p.name) for p in self.jail.part(folder).iterdir()):
            return self._index_folders(folder, "val")  # torchvision's re-arranged val/<wnid>/ layout
        paths = _images(folder, self.jail)
        if not paths:
            raise UsageError(f"{folder} holds no images")
        stems = [p.stem for p in paths]
        solution = self.root / "LOC_val_solution.csv"
        if solution.is_file():
            self._objects = read_val_solution(self.jail.part(solution))
            missing = [s for s in stems if not self._objects.get(s)]
            if missing:
                raise UsageError(f"{solution} has no label for {missing[0]} ({len(missing)} images)")
            return paths, [self._objects[s][0][0] for s in stems]
        if self._xml_dir is not None:
            try:
                self._objects = {s: read_box_xml(self.jail.part(self._xml_dir / f"{s}.xml")) for s in stems}
            except (OSError, ET.ParseError) as err:
                raise UsageError(f"unreadable val box XML in {self._xml_dir}: {err}") from None
            empty = [s for s in stems if not self._objects[s]]
            if empty:
                raise UsageError(f"{self._xml_dir / empty[0]}.xml has no object")
            return paths, [self._objects[s][0][0] for s in stems]
        devkit = devkit if devkit is not None else self._read_devkit()
        if devkit is None:
            raise UsageError(f"{self.root}: no val labels (LOC_val_solution.csv, box XML or devkit ground truth)")
        gt = devkit[1]
        numbers = [_image_number(s) for s in stems]
        bad = [s for s, n in zip(stems, numbers, strict=True) if not 1 <= n <= len(gt)]
        if bad:
            raise UsageError(f"val image {bad[0]} is beyond the {len(gt)} devkit ground-truth lines")
        return paths, [gt[n - 1] for n in numbers]

    def __repr__(self) -> str:
        return f"ImageNetReader({str(self.root)!r}, split={self.split!r}, n={len(self)})"

    def _boxes(self, stem: str) -> list[list[int]]:
        objects = self._objects.get(stem)
        if objects is None and self._xml_dir is not None and (self._xml_dir / f"{stem}.xml").is_file():
            objects = read_box_xml(self.jail.file(self._xml_dir / f"{stem}.xml"))
        return [box for _, box in objects or [] if len(box) == 4]

    def _mask(self, image: Path) -> np.ndarray | None:
        """The object mask of ``image``: ``val_masks/<stem>.png``; ``train_masks/<wnid folder>/<stem>.png``."""
        folder = self._mask_dir / image.parent.name if self.split == "train" else self._mask_dir
        path = folder / f"{image.stem}.png"
        if not path.is_file():
            return None
        with Image.open(self.jail.file(path)) as m:
            return np.asarray(m.convert("L")) > 127

    def load(self, index: int) -> Sample:
        path = self._paths[index]
        stem = path.stem
        with Image.open(self.jail.file(path)) as img:
            img.load()
            width, height = img.size
            x = self.transform(img)
        meta: dict[str, Any] = {
            "boxes": self.transform.map_boxes(self._boxes(stem), width, height),
            "mask": None,
            "path": str(path),
            "wnid": self.classes[self._labels[index]],
        }
        mask = self._mask(path)
        if mask is not None:
            meta["mask"] = self.transform.map_mask(mask)
        return Sample(stem, x, self._labels[index], meta)
