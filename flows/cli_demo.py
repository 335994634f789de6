"""``xai demo`` and ``xai train``: the embedded default data of each modality, its demo model trained in-process,
and the explain flow over it. Which data, model, methods and metrics a modality uses is said by the dataset kind
descriptors of :mod:`xcore.datasets` (``generate``, ``train``, ``demo``); nothing here names a dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows.cli_options import fail
from flows.launch import console, execute
from xcore.errors import UsageError


def demo_kind(modality: str) -> Any:
    """The dataset kind that provides ``modality``'s demo; ``UsageError`` naming the known modalities."""
    from xcore.datasets import modalities

    kinds = modalities()
    if modality not in kinds:
        names = list(kinds)
        raise UsageError(f"unknown modality {modality!r}; use {', '.join(names[:-1])} or {names[-1]}")
    return kinds[modality]


def available(names: tuple[str, ...], registered: list[str]) -> dict[str, dict[str, Any]]:
    """The demo's ``names`` that are registered, each with default parameters."""
    return {n: {} for n in names if n in registered}


def train(data: Path | None = typer.Option(None, help="dataset root (default: the modality's synthetic data)"),
          out: Path | None = typer.Option(None, help="checkpoint path (default: the modality's demo model)"),
          modality: str = typer.Option("image", help="image, skeleton or video (the kinds with a demo)"),
          arch: str | None = None, epochs: int | None = None, seed: int = 0,
          benchmark: str | None = typer.Option(None, help="skeleton: xsub, xview, ... (default xsub)"),
          width: float | None = typer.Option(None, help="skeleton: ST-GCN channel multiplier (default 0.125)")
          ) -> None:
    """Train a modality's demo model on a dataset's train split (generates the synthetic data when missing)."""
    try:
        kind = demo_kind(modality)
        options = {k: v for k, v in {"arch": arch, "epochs": epochs, "benchmark": benchmark, "width": width}.items()
                   if v is not None}
        train_checkpoint(kind, data or kind.generate(), out or Path(kind.demo.model), seed=seed, **options)
    except UsageError as err:
        raise fail(err) from None


def train_checkpoint(kind: Any, root: Path, out: Path, **kw: Any) -> dict[str, Any]:
    """The kind's trainer with a per-epoch progress line; an option it does not take is a ``UsageError``."""
    if kind.train is None:
        raise UsageError(f"dataset kind {kind.name!r} has no default trainer")

    def progress(info: dict[str, Any]) -> None:
        console.print(f"epoch {info.get('epoch')}/{info.get('epochs')}: loss {info.get('loss', 0):.3f}, "
                      f"val accuracy {info.get('val_accuracy', 0):.3f} ({info.get('seconds', 0):.0f} s)")

    try:
        meta = kind.train(root, out, progress=progress, **kw)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        raise UsageError(f"the {kind.name} trainer does not take that option: {err}") from None
    console.print(f"saved {out} (val accuracy {meta.get('val_accuracy')})")
    return meta


def demo(out: Path = typer.Option(Path(".xcore/runs"), help="output root"),
         modality: str = typer.Option("all", help="image, skeleton, video or all"),
         executor: str = "ray", shard_size: int = 32, batch_size: int = 16) -> None:
    """Synthetic data -> small models trained here -> explanations + metrics -> summary and report."""
    import xcore.explain
    import xcore.metrics
    from xcore.datasets import modalities

    code = 0
    for mod in list(modalities()) if modality == "all" else [modality]:
        try:
            kind = demo_kind(mod)
            root, model = kind.generate(), Path(kind.demo.model)
            if not model.is_file():
                console.print(f"training the {mod} demo model -> {model}")
                train_checkpoint(kind, root, model)
        except UsageError as err:
            raise fail(err) from None
        config = {"dataset": str(root), "model": str(model), "out": str(out), "split": kind.demo.split,
                  "dataset_kind": kind.name, "shard_size": shard_size, "batch_size": batch_size,
                  "methods": available(kind.demo.methods, xcore.explain.available()),
                  "metrics": available(kind.demo.metrics, xcore.metrics.available())}
        code = max(code, execute("explain", config, {"executor": executor}))
    raise typer.Exit(code)
