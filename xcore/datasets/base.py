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
    """What ``xai demo --modality NAME`` runs on this kind's embedded default data.

    ``model`` is a checkpoint path relative to the working directory, trained in-process when missing with the
    kind's trainer and ``train`` options, or, with ``uses``, the demo model of that other kind (e.g. the pointing
    game on COCO explains the shapes model). ``samples`` evaluates an evenly spaced subset of the split (``None``:
    all of it); ``target`` is the explained class (``"label"`` for the pointing game); ``min_accuracy`` is the
    band a freshly trained model must reach, else it is retrained once with the next seed (the reason logged);
    ``train_seconds`` is about how long that training takes on one idle thread (the demo starts the longest first).
    """

    model: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...] = ("deletion_insertion",)
    split: str = "val"
    samples: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    target: str = "pred"
    uses: str | None = None
    min_accuracy: float = 0.0
    train_seconds: float = 0.0


@dataclass(frozen=True)
class DatasetKind:
    """One dataset kind (see the module docstring).

    - ``reader(root, split=..., **options) -> Dataset``: the reader class or factory;
    - ``options(meta)``: the reader options a checkpoint's metadata implies (e.g. its image transform);
    - ``split(split, meta)``: the split name the reader takes for a configured ``split`` and checkpoint;
    - ``modality``: ``"image"``, ``"video"`` or ``"skeleton"`` (recorded in ``run.json``; ``xai demo/train``);
    - ``train(root, out, progress=..., **kw) -> meta``: the default trainer of a demo model on this kind;
    - ``generate() -> root``: writes the embedded synthetic data (idempotent) and returns its root;
    - ``demo``: the full demo's model, methods, metrics and split (``xai demo --full``); ``quick``: the ten-minute
      demo's (``xai demo``; smaller training and evaluation subsets), when it differs;
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
    quick: Demo | None = None
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
    """The first kind (by name) with a demo of its own model and embedded data for each modality, by modality
    name."""
    out: dict[str, DatasetKind] = {}
    for name in DATASETS.names():
        kind = DATASETS.get(name)
        if kind.demo is not None and kind.demo.uses is None and kind.generate is not None:
            out.setdefault(kind.modality, kind)
    return dict(sorted(out.items()))


def companions(kind: DatasetKind) -> list[DatasetKind]:
    """The kinds whose demo explains ``kind``'s demo model on their own data (e.g. ``coco`` for ``imagenet``)."""
    return [k for k in (DATASETS.get(n) for n in DATASETS.names())
            if k.demo is not None and k.demo.uses == kind.name and k.generate is not None]
