"""The ``bam`` kind: BAM's object-on-scene images (Yang & Kim, *Benchmarking Attribution Methods with Relative Feature
Importance*, arXiv 1907.09701; google-research-datasets/bam), read by :class:`xcore.data.bam.BAMReader`.

Reader options come from the checkpoint: its recorded preprocessing (input size, resize, mean / std, as the
``imagenet`` kind) and the labelling it was trained on (``bam_labels``, written by
:func:`xcore.models.train_bam.train_bam`; ``"obj"`` when unrecorded). The embedded default is the synthetic BAM
(:func:`xcore.data.synthetic_bam.generate_bam`); the kind has no demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xcore.data.bam import BAMReader
from xcore.data.synthetic_bam import default_bam_root, generate_bam
from xcore.datasets.base import DatasetKind, register
from xcore.datasets.imagenet import transform_of
from xcore.models.train_bam import train_bam


def bam_options(meta: dict[str, Any]) -> dict[str, Any]:
    """The reader options a checkpoint implies: its transform and its BAM labelling."""
    return {"transform": transform_of(meta), "labels": meta.get("bam_labels") or "obj"}


def generate() -> Path:
    return generate_bam(default_bam_root())


BAM = register(DatasetKind("bam", BAMReader, "image", options=bam_options, train=train_bam, generate=generate))
