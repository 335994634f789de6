"""The dataset protocol every reader implements (images now; video clips and skeletons later).

A reader indexes its files cheaply on construction (no decoding) and decodes one sample per ``load``.
``load`` raises on a corrupt or unreadable file; the pipeline turns that into an ``errors`` row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor


@dataclass
class Sample:
    """One decoded, preprocessed sample.

    ``x`` is (C, *S): C×H×W image, C×T×H×W clip or C×T×V×M skeleton, float32, mean/std-normalised.
    ``meta`` holds annotations in the coordinates of ``x``: ``boxes`` (list of [xmin, ymin, xmax, ymax],
    pixels, inclusive), ``mask`` (bool numpy array of the spatial shape), and anything reader-specific.
    """

    sample_id: str
    x: Tensor
    label: int
    meta: dict[str, Any] = field(default_factory=dict)


class Dataset(Protocol):
    name: str
    classes: list[str]

    def __len__(self) -> int: ...

    def sample_id(self, index: int) -> str: ...

    def label(self, index: int) -> int: ...

    def load(self, index: int) -> Sample: ...


class FileList:
    """The index half of a reader whose samples are one file each: ``_paths`` and their ``_labels``.

    Readers that keep a sorted list of sample files (ImageNet, BAM) inherit ``len``, ``path``, ``sample_id``
    (the file's stem) and ``label`` from here and implement ``load``.
    """

    _paths: list[Path]
    _labels: list[int]

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> Path:
        return self._paths[index]

    def sample_id(self, index: int) -> str:
        return self._paths[index].stem

    def label(self, index: int) -> int:
        return self._labels[index]
