"""Dataset kinds as descriptors: one registered object per kind says everything the runtime needs to know of it.

A :class:`DatasetKind` carries the reader (the class that indexes and decodes the real on-disk format), the reader
options a checkpoint implies (its preprocessing), the split rule (how a bare split name resolves against a
checkpoint), the default trainer, the embedded default data and demo settings, and the report that runs after a
flow. The explain job, the flows and the CLI read these fields and never branch on a kind's name, so adding a
dataset kind is adding one module to this package (``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xcore.analysis.blocks import Block
from xcore.data.base import Dataset
from xcore.errors import UsageError
from xcore.registry import Registry

Meta = dict[str, Any]  # a checkpoint's metadata (its JSON sidecar)


def _no_options(meta: Meta) -> dict[str, Any]:
    return {}


def _same_split(split: str, meta: Meta) -> str:
    return split


@dataclass(frozen=True)
class Demo:
    """What ``xai demo --modality NAME`` runs on this kind's embedded default data."""

    model: str  # checkpoint path, relative to the working directory (trained in-process when missing)
    methods: tuple[str, ...]
    metrics: tuple[str, ...] = ("deletion_insertion",)
    split: str = "val"


@dataclass(frozen=True)
class DatasetKind:
    """One dataset kind (see the module docstring).

    - ``reader(root, split=..., **options) -> Dataset``: the reader class or factory;
    - ``options(meta)``: the reader options a checkpoint's metadata implies (e.g. its image transform);
    - ``split(split, meta)``: the split name the reader takes for a configured ``split`` and checkpoint;
    - ``modality``: ``"image"``, ``"video"`` or ``"skeleton"`` (recorded in ``run.json``; ``xai demo/train``);
    - ``train(root, out, progress=..., **kw) -> meta``: the default trainer of a demo model on this kind;
    - ``generate() -> root``: writes the embedded synthetic data (idempotent) and returns its root;
    - ``demo``: the demo's model, methods, metrics and split;
    - ``report(run_dir, config, methods) -> list[Block]``: the analysis after a flow (writes ``<run>/analysis``).
    """

    name: str
    reader: Callable[..., Dataset]
    modality: str
    options: Callable[[Meta], dict[str, Any]] = _no_options
    split: Callable[[str, Meta], str] = _same_split
    train: Callable[..., dict[str, Any]] | None = None
    generate: Callable[[], Path] | None = None
    demo: Demo | None = None
    report: Callable[[str, dict[str, Any], list[str] | None], list[Block]] | None = None
    train_options: dict[str, Any] = field(default_factory=dict)

    def open(self, root: Path | str, split: str = "val", **options: Any) -> Dataset:
        """The reader over ``root``; a missing root or an option the reader does not take is a ``UsageError``."""
        path = Path(root)
        if not path.is_dir():
            raise UsageError(f"dataset root {path} does not exist")
        try:
            return self.reader(path, split=split, **options)
        except TypeError as err:  # an option this reader does not take (e.g. --reader clips=... on images)
            if "unexpected keyword" not in str(err):
                raise
            raise UsageError(f"the {self.name} reader does not take that option: {err}") from None


DATASETS: Registry[DatasetKind] = Registry("dataset kind")


def register(kind: DatasetKind) -> DatasetKind:
    """Register ``kind`` under ``kind.name`` (a second registration of a name is an error)."""
    return DATASETS.add(kind.name, kind)


def open_dataset(kind: str, root: Path | str, split: str = "val", **options: Any) -> Dataset:
    """Open dataset ``kind`` at ``root`` (``UsageError`` for an unknown kind, a missing root or a bad option)."""
    return DATASETS.get(kind).open(root, split, **options)


def modalities() -> dict[str, DatasetKind]:
    """The first kind (by name) with a demo and embedded data for each modality, by modality name."""
    out: dict[str, DatasetKind] = {}
    for name in DATASETS.names():
        kind = DATASETS.get(name)
        if kind.demo is not None and kind.generate is not None:
            out.setdefault(kind.modality, kind)
    return dict(sorted(out.items()))
