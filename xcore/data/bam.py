"""Reader for BAM (Yang & Kim, *Benchmarking Attribution Methods with Relative Feature Importance*, arXiv 1907.09701;
google-research-datasets/bam ``bam/attributions.py``, ``bam/metrics.py``): objects pasted onto scenes, labelled by
object (``obj``), by scene (``scene``) or scene without object (``scene_only``).

``root`` is BAM's ``data/`` folder; ``labels`` picks ``root/<labels>/``::

    train/<class>/*.jpg      classes = the sorted folder names
    val/*.jpg                flat; names <obj>-<scene>-<iiii>.jpg
    val.txt                  <fname> <class_idx>              (class order = the sorted train folders)
    val_loc.txt              <fname> <row_min>,<col_min>,<row_max>,<col_max>   rows first, max exclusive, image px
    val_mask                 .npy without extension: object array of cropped binary masks,
                             index obj_idx * 100 + the last two digits of iiii

``load(i)`` gives ``meta["region"]``: the object region I_c of the model contrast score (Hartley, *An Investigation
into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021, §3.5.4, eq 3.7), as the
reference builds it: the box is scaled to ``x``'s pixels and truncated (``int(l · size / 128)`` for BAM's 128 px
images), the cropped mask (binarised, as float) is resized *bilinearly* (PIL) to the box and placed in it, zero
elsewhere. ``obj_idx`` is the position of the object's name among the sorted folders of ``root/obj/train`` (the
reference's fixed object list is sorted), or among the sorted object names in ``val.txt`` when that folder is absent.

The mask file is a pickle; it is unpickled with a whitelist (NumPy arrays and dtypes only), so a crafted file cannot
run code. Files and folders are opened through :class:`~xcore.data.confine.DatasetRoot`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xcore.data.base import FileList, Sample
from xcore.data.confine import DatasetRoot
from xcore.data.imagenet import IMAGE_EXTS
from xcore.data.transforms import ImageTransform
from xcore.errors import SampleError, UsageError

LABELS: tuple[str, ...] = ("obj", "scene", "scene_only")
_SAFE_GLOBALS = frozenset({("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
                           ("numpy", "ndarray"), ("numpy", "dtype")})


def _lines(path: Path) -> list[str]:
    """Non-blank, stripped lines; tolerates CRLF, a BOM and trailing blanks."""
    return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays only (the globals an object array's pickle names); anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        short = module.rsplit(".", 1)[-1] if module.startswith("numpy.") else module
        if (short, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        if module.startswith("numpy.core."):  # NumPy 1's name of numpy._core
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def load_masks(path: Path) -> np.ndarray:
    """BAM's ``val_mask``: a ``.npy`` object array of masks (or a plain (N, h, w) array), without running code."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            if not dtype.hasobject:
                fh.seek(0)
                return np.asarray(np.load(fh, allow_pickle=False))
            masks = _ArrayUnpickler(fh, encoding="latin1").load()  # latin1: Python 2 pickles too
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as err:
        raise UsageError(f"unreadable BAM mask file {path}: {err}") from None
    if not isinstance(masks, np.ndarray) or masks.shape != shape:
        raise UsageError(f"unreadable BAM mask file {path}: not an array of shape {shape}")
    return masks


def parse_name(stem: str) -> tuple[str, str, int] | None:
    """``<obj>-<scene>-<iiii>`` -> (obj, scene, iiii); the scene may hold ``-``; ``None`` for another name."""
    parts = stem.split("-")
    if len(parts) < 3 or not parts[-1].isdigit() or not parts[0]:
        return None
    return parts[0], "-".join(parts[1:-1]), int(parts[-1])


class BAMReader(FileList):
    """The :class:`~xcore.data.base.Dataset` of BAM's ``split`` ("val" or "train") of labelling ``labels``.

    ``meta`` of a sample: ``obj`` and ``scene`` (from the file name; ``None`` when it does not follow
    ``<obj>-<scene>-<iiii>``), ``path``, and for val images with ``val_loc.txt`` and ``val_mask``: ``region`` (float32
    (size, size), see the module docstring), ``box`` (the scaled loc box in ``x``'s pixels, ``[xmin, ymin, xmax,
    ymax]`` inclusive like xcore's boxes) and ``boxes`` = ``[box]``; otherwise ``region`` is ``None``.
    """

    name = "bam"

    def __init__(self, root: Path | str, split: str = "val", labels: str = "obj",
                 transform: ImageTransform | None = None, size: int = 224, follow_links: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"dataset root {self.root} does not exist")
        if split not in ("val", "train"):
            raise UsageError(f"unknown BAM split {split!r}; use 'val' or 'train'")
        if labels not in LABELS:
            raise UsageError(f"unknown BAM labels {labels!r}; use one of {', '.join(LABELS)}")
        self.jail = DatasetRoot(self.root, follow_links)
        self.split, self.labels = split, labels
        self.base = self.root / labels
        self.transform = transform if transform is not None else ImageTransform(size)
        train = self.base / "train"
        self.classes = sorted(p.name for p in self.jail.part(train).iterdir() if p.is_dir()) if train.is_dir() else []
        self.class_names = list(self.classes)
        self._locs: dict[str, tuple[int, int, int, int]] = {}
        self._mask_index: dict[str, int] = {}
        self._masks: np.ndarray | None = None
        if split == "train":
            if not self.classes:
                raise UsageError(f"{train} holds no class folders")
            self._paths, self._labels = [], []
            for k, cls in enumerate(self.classes):
                files = self._images(train / cls)
                self._paths += files
                self._labels += [k] * len(files)
        else:
            self._index_val()
        if not self._paths:
            raise UsageError(f"{self.base / split} holds no images")

    def _images(self, folder: Path) -> list[Path]:
        if not folder.is_dir():
            raise UsageError(f"{folder} does not exist (BAM {self.split} images)")
        return sorted(folder / p.name for p in self.jail.part(folder).iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTS)

    def _table(self, name: str) -> dict[str, str]:
        """``<fname> <value>`` lines of ``base/name`` -> {fname: value}; a malformed line is a UsageError."""
        path = self.base / name
        out: dict[str, str] = {}
        for ln in _lines(self.jail.part(path)):
            fname, _, value = ln.rpartition(" ")
            if not fname.strip() or not value:
                raise UsageError(f"{path}: malformed line {ln!r} (expected '<fname> <value>')")
            out[fname.strip()] = value
        return out

    def _index_val(self) -> None:
        val_txt = self.base / "val.txt"
        if not val_txt.is_file():
            raise UsageError(f"{val_txt} does not exist (BAM val labels)")
        table = self._table("val.txt")
        self._paths = self._images(self.base / "val")
        missing = [p.name for p in self._paths if p.name not in table]
        if missing:
            raise UsageError(f"{val_txt} has no label for {missing[0]} ({len(missing)} images)")
        try:
            self._labels = [int(table[p.name]) for p in self._paths]
        except ValueError:
            raise UsageError(f"{val_txt}: a class index is not an integer") from None
        if not self.classes:  # no train folders: the indices seen name the classes
            self.classes = [str(k) for k in range(max(self._labels, default=-1) + 1)]
            self.class_names = list(self.classes)
        bad = [p.name for p, y in zip(self._paths, self._labels, strict=True) if not 0 <= y < len(self.classes)]
        if bad:
            raise UsageError(f"{val_txt}: class index of {bad[0]} is outside the {len(self.classes)} classes")
        loc_txt, mask_file = self.base / "val_loc.txt", self.base / "val_mask"
        if not (loc_txt.is_file() and mask_file.is_file()):
            return
        for fname, value in self._table("val_loc.txt").items():
            try:
                loc = tuple(int(v) for v in value.split(","))
            except ValueError:
                loc = ()
            if len(loc) != 4:
                raise UsageError(f"{loc_txt}: bad box {value!r} for {fname} (expected r0,c0,r1,c1)")
            self._locs[fname] = loc  # type: ignore[assignment]
        self._masks = load_masks(self.jail.part(mask_file))
        obj_train = self.root / "obj" / "train"
        objects = sorted(p.name for p in self.jail.part(obj_train).iterdir() if p.is_dir()) if obj_train.is_dir() \
            else sorted({n[0] for n in map(parse_name, (Path(f).stem for f in table)) if n is not None})
        obj_index = {o: k for k, o in enumerate(objects)}
        for p in self._paths:
            parsed = parse_name(p.stem)
            if p.name not in self._locs or parsed is None or parsed[0] not in obj_index:
                why = "no box in val_loc.txt" if p.name not in self._locs else "no <obj>-<scene>-<iiii> name"
                raise UsageError(f"{p}: {why} for its object mask (objects: {', '.join(objects)})")
            k = obj_index[parsed[0]] * 100 + parsed[2] % 100
            if k >= len(self._masks):
                raise UsageError(f"{mask_file} has {len(self._masks)} masks; {p.name} needs mask {k}")
            self._mask_index[p.name] = k

    def __repr__(self) -> str:
        return f"BAMReader({str(self.root)!r}, split={self.split!r}, labels={self.labels!r}, n={len(self)})"

    def region(self, name: str, width: int, height: int) -> tuple[np.ndarray, list[int]]:
        """Image ``name``'s object region in ``x``'s pixels (float32 (size, size)) and its box [x0, y0, x1, y1]."""
        assert self._masks is not None
        geo = self.transform.geometry(width, height)
        sx, sy = geo.scale
        r0, c0, r1, c1 = self._locs[name]
        r0, r1 = int(r0 * sy) - geo.top, int(r1 * sy) - geo.top
        c0, c1 = int(c0 * sx) - geo.left, int(c1 * sx) - geo.left
        mask = np.asarray(self._masks[self._mask_index[name]])
        if mask.ndim != 2 or mask.size == 0:
            raise SampleError("load", f"{self.base / 'val_mask'}: mask {self._mask_index[name]} of {name} is not a "
                                      f"non-empty 2-D array")
        out = np.zeros((geo.size, geo.size), np.float32)
        if r1 > r0 and c1 > c0:
            binary = Image.fromarray((mask != 0).astype(np.float32))  # mode "F"
            resized = np.asarray(binary.resize((c1 - c0, r1 - r0), Image.Resampling.BILINEAR), np.float32)
            rows, cols = slice(max(r0, 0), min(r1, geo.size)), slice(max(c0, 0), min(c1, geo.size))
            out[rows, cols] = resized[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]
        box = [max(c0, 0), max(r0, 0), min(c1, geo.size) - 1, min(r1, geo.size) - 1]
        return out, box

    def load(self, index: int) -> Sample:
        path = self._paths[index]
        with Image.open(self.jail.file(path)) as img:
            img.load()
            width, height = img.size
            x = self.transform(img)
        parsed = parse_name(path.stem)
        meta: dict[str, Any] = {"obj": parsed[0] if parsed else None, "scene": parsed[1] if parsed else None,
                                "path": str(path), "region": None}
        if path.name in self._mask_index:
            meta["region"], box = self.region(path.name, width, height)
            meta["box"], meta["boxes"] = box, [box]
        return Sample(path.stem, x, self._labels[index], meta)
