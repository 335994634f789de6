"""Reader for COCO instance annotations (Lin et al., Microsoft COCO, ECCV 2014 / cocodataset.org data format), the
way the pointing game reads them (thesis §5.4.4.1; facebookresearch/TorchRay torchray/benchmark/pointing_game.py).

Layout: ``root/annotations/instances_<split><year>.json``, images in ``root/<split><year>/`` (or
``root/images/<split><year>/``). Classes are the ``categories`` in ascending id order: the sparse ids (1..90 in
COCO) map to 0..K-1. There is one sample per (image, category present in it): images in ascending id, categories in
ascending id; an image without annotations gives none. A sample's ``x`` is the image with its shorter side resized
to ``size``, aspect kept, no crop (TorchRay), mean/std-normalised; its ``meta["masks"]`` is the bool (H₀, W₀) union
of all the masks of that category in the image, crowd annotations included, at the ORIGINAL size.

Masks are decoded by pycocotools only (``frPyObjects``, ``merge``, ``decode``: what ``COCO.annToMask`` does per
annotation). The annotation file is parsed once on construction and checked structurally there (``UsageError``
naming the file): the three lists, known ``image_id`` / ``category_id``, and every segmentation readable — polygons
of ≥ 3 points, an RLE whose ``size`` is the image's and whose list ``counts`` sum to H₀·W₀. What only decoding can
tell — a compressed ``counts`` string that does not cover exactly H₀·W₀ pixels (pycocotools 2.0.11 decodes a short
one into uninitialised memory and ``merge`` loops forever on it) or is not in pycocotools' canonical form — is a
``ValueError`` of ``load`` naming the file and the annotation id. Files are opened through
:class:`~xcore.data.confine.DatasetRoot`; a ``file_name`` that is absolute or climbs out with ``..`` is refused by
``load``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.data.base import Sample
from xcore.data.confine import DatasetRoot
from xcore.data.image_modes import to_rgb
from xcore.data.transforms import ImageTransform
from xcore.errors import UsageError

DIFFICULT_FRACTION = 0.25
"""A class region covering less than this fraction of the image, with another class present, is *difficult*."""
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ShorterSide:
    """PIL image -> float32 (3, H, W): shorter side resized to ``size`` with PIL ``BILINEAR``, the longer side to
    ``round(size · long / short)`` (aspect kept, no crop, as TorchRay's pointing benchmark), then
    ``x = (v / 255 − mean) / std`` per channel. Any PIL mode is made 8-bit RGB first
    (:func:`xcore.data.image_modes.to_rgb`)."""

    def __init__(self, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if int(size) < 1 or len(mean) != 3 or len(std) != 3 or min(float(s) for s in std) <= 0:
            raise UsageError(f"shorter-side transform needs size >= 1 and 3 means and 3 positive stds; got size={size}")
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return f"ShorterSide(size={self.size}, mean={self.mean}, std={self.std})"

    def shape(self, width: int, height: int) -> tuple[int, int]:
        """The resized ``(width, height)`` of a ``width``×``height`` image."""
        if width <= height:
            return self.size, round(self.size * height / width)
        return round(self.size * width / height), self.size

    def __call__(self, img: Image.Image) -> Tensor:
        img = to_rgb(img)
        scaled = self.shape(*img.size)
        if img.size != scaled:
            img = img.resize(scaled, Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(self.mean, dtype=x.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(3, 1, 1)
        return (x - mean) / std


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why pycocotools cannot read ``seg`` for a ``height``×``width`` image (a phrase), or ``None`` when it can:
    a non-empty list of polygons ``[x1, y1, x2, y2, ...]`` of ≥ 3 points, or an RLE ``{"counts", "size"}`` with
    ``size == [height, width]`` and ``counts`` a string (compressed) or non-negative ints summing to height·width."""
    if isinstance(seg, list):
        if not seg:
            return "an empty polygon list"
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_is_num, p)) for p in seg):
            return "a polygon that is not a flat list of at least 3 (x, y) number pairs"
        return None
    if not isinstance(seg, dict):
        return "a segmentation that is neither a polygon list nor an RLE"
    size, counts = seg.get("size"), seg.get("counts")
    if size != [height, width] or not all(map(_is_int, size)):
        return f"an RLE of size {size!r} on a {height}x{width} image"
    if isinstance(counts, str):
        return None
    if not (isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts)):
        return "RLE counts that are neither a string nor a list of non-negative integers"
    total = sum(counts)
    return None if total == height * width else f"RLE counts summing to {total}, not {height * width}"


def class_masks(anns: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """Bool (``height``, ``width``) union of the masks of ``anns`` (polygons, compressed or uncompressed RLE; crowd
    included), via pycocotools: ``frPyObjects`` per polygon list or uncompressed RLE (a compressed RLE is taken as
    it is, as ``COCO.annToRLE``), ``merge`` (union), ``decode``. An RLE is decoded once and re-encoded (canonical
    runs, exactly height·width pixels) before the merge; a compressed ``counts`` string that does not give itself
    back is refused. ``ValueError`` naming the annotation id when one cannot be read. No annotation: all False."""
    from pycocotools import mask as mask_utils

    rles: list[dict[str, Any]] = []
    for ann in anns:
        seg = ann.get("segmentation")
        why = segmentation_problem(seg, height, width)
        try:
            if why is None and isinstance(seg, list):
                rles += mask_utils.frPyObjects(seg, height, width)
            elif why is None:
                rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else \
                    {"size": seg["size"], "counts": seg["counts"]}  # compressed: as is (COCO.annToRLE)
                again = mask_utils.encode(np.asfortranarray(mask_utils.decode(rle)))
                given = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else again["counts"]
                if given != again["counts"]:
                    why = "a compressed RLE that does not cover the image exactly (or is not in canonical form)"
                rles.append(again)
        except (ValueError, TypeError, UnicodeError) as err:
            why = f"a segmentation pycocotools cannot read ({err})"
        if why is not None:
            raise ValueError(f"annotation {ann.get('id')!r} has {why}")
    if not rles:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles, intersect=False)).astype(bool)


def difficult_flag(mask: np.ndarray, others: int) -> bool:
    """The EBP "difficult" rule (Zhang et al.; thesis §5.4.4.1): the class covers less than 25 % of the image —
    ``4 · #mask pixels < H₀·W₀`` — and ``others`` ≥ 1 other categories are present in the image."""
    return others > 0 and 4 * int(np.count_nonzero(mask)) < int(np.asarray(mask).size)


def _index(data: Any, where: Path) -> tuple[dict[int, str], dict[int, dict[str, Any]],
                                            dict[int, dict[int, list[dict[str, Any]]]]]:
    """(category names by id, images by id, {image id: {category id: [annotations]}}); UsageError if malformed."""

    def bad(what: str) -> UsageError:
        return UsageError(f"{where}: malformed COCO annotation file: {what}")

    if not isinstance(data, dict):
        raise bad("the top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise bad(f"no {key!r} list")
    cats: dict[int, str] = {}
    for c in data["categories"]:
        if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)):
            raise bad("a category without an integer id and a name")
        if c["id"] in cats:
            raise bad(f"category id {c['id']} appears twice")
        cats[c["id"]] = c["name"]
    images: dict[int, dict[str, Any]] = {}
    for im in data["images"]:
        if not (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)
                and im["file_name"] and all(_is_int(im.get(k)) and im[k] > 0 for k in ("width", "height"))):
            raise bad("an image without an integer id, a file_name and a positive integer width and height")
        if im["id"] in images:
            raise bad(f"image id {im['id']} appears twice")
        images[im["id"]] = im
    groups: dict[int, dict[int, list[dict[str, Any]]]] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict):
            raise bad("an annotation that is not an object")
        image_id, cat = a.get("image_id"), a.get("category_id")
        if not (_is_int(image_id) and image_id in images):
            raise bad(f"annotation {a.get('id')!r} has unknown image_id {image_id!r}")
        if not (_is_int(cat) and cat in cats):
            raise bad(f"annotation {a.get('id')!r} has unknown category_id {cat!r}")
        why = segmentation_problem(a.get("segmentation"), images[image_id]["height"], images[image_id]["width"])
        if why is not None:
            raise bad(f"annotation {a.get('id')!r} has {why}")
        groups.setdefault(image_id, {}).setdefault(cat, []).append(a)
    return cats, images, groups


class CocoReader:
    """The :class:`~xcore.data.base.Dataset` of COCO split ``<split><year>`` under ``root`` (module docstring).

    ``load(i)`` returns a :class:`Sample` with ``x`` float32 (3, H, W) (:class:`ShorterSide`), ``label`` the
    contiguous class index and ``meta``: ``masks`` (bool (H₀, W₀), :func:`class_masks`), ``difficult``
    (:func:`difficult_flag`), ``image_id``, ``category_id``, ``path`` and ``size`` = [H₀, W₀]. ``transform``: an
    :class:`~xcore.data.transforms.ImageTransform` whose ``size``, ``mean`` and ``std`` replace the keyword ones (its
    crop is not applied). ``load`` raises when the image is missing or unreadable, when its decoded size differs
    from the annotation file's (``ValueError``) and when a segmentation cannot be decoded (``ValueError``).
    """

    name = "coco"

    def __init__(self, root: Path | str, split: str = "val", transform: ImageTransform | None = None,
                 size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 year: str | int = "2014", follow_links: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"dataset root {self.root} does not exist")
        self.jail = DatasetRoot(self.root, follow_links)
        self.split, self.year = str(split), str(year)
        if not (_NAME.match(self.split) and _NAME.match(self.year)):
            raise UsageError(f"COCO split {split!r} and year {year!r} must be plain names such as 'val' and '2014'")
        tag = f"{self.split}{self.year}"
        if transform is not None:
            size, mean, std = transform.size, transform.mean, transform.std
        self.transform = ShorterSide(size, mean, std)
        self.ann_file = self.root / "annotations" / f"instances_{tag}.json"
        if not self.ann_file.is_file():
            raise UsageError(f"{self.root} has no COCO annotation file annotations/instances_{tag}.json")
        folder = next((d for d in (self.root / tag, self.root / "images" / tag) if d.is_dir()), None)
        if folder is None:
            raise UsageError(f"{self.root} has no image folder {tag}/ or images/{tag}/")
        self.jail.part(folder)
        self.image_dir = folder
        try:
            data = json.loads(self.jail.part(self.ann_file).read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as err:  # ValueError: invalid JSON or bytes that are not UTF-8
            raise UsageError(f"{self.ann_file}: unreadable COCO annotation file ({err})") from None
        cats, self._images, self._groups = _index(data, self.ann_file)
        self.category_ids: list[int] = sorted(cats)
        self.classes: list[str] = [cats[c] for c in self.category_ids]
        self.class_names: list[str] = list(self.classes)
        self._label = {c: i for i, c in enumerate(self.category_ids)}
        self._samples = [(im, c) for im in sorted(self._groups) for c in sorted(self._groups[im])]

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        return f"CocoReader({str(self.root)!r}, split={self.split!r}, year={self.year!r}, n={len(self)})"

    def path(self, index: int) -> Path:
        return self.image_dir / self._images[self._samples[index][0]]["file_name"]

    def sample_id(self, index: int) -> str:
        image_id, cat = self._samples[index]
        return f"{PurePosixPath(self._images[image_id]['file_name']).stem}__{cat}"

    def label(self, index: int) -> int:
        return self._label[self._samples[index][1]]

    def load(self, index: int) -> Sample:
        image_id, cat = self._samples[index]
        image = self._images[image_id]
        height, width = image["height"], image["width"]
        path = self.path(index)
        why = self.jail.entry(image["file_name"])
        if why is not None:
            raise self.jail.refuse(path, why)
        with Image.open(self.jail.file(path)) as img:
            img.load()
            if img.size != (width, height):
                raise ValueError(f"{path}: the image is {img.size[0]}x{img.size[1]} (width x height) but "
                                 f"{self.ann_file.name} says {width}x{height}")
            x = self.transform(img)
        try:
            mask = class_masks(self._groups[image_id][cat], height, width)
        except ValueError as err:
            raise ValueError(f"{self.ann_file}: {err}") from None
        meta: dict[str, Any] = {
            "masks": mask,
            "difficult": difficult_flag(mask, len(self._groups[image_id]) - 1),
            "image_id": image_id,
            "category_id": cat,
            "path": str(path),
            "size": [height, width],
        }
        return Sample(self.sample_id(index), x, self._label[cat], meta)
