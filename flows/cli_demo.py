"""``xai demo`` and ``xai train``: the embedded default data of each modality, its demo model trained in-process,
and the explain flow over it. Which data, model, methods and metrics a modality uses is said by the dataset kind
descriptors of :mod:`xcore.datasets` (``generate``, ``train``, ``demo``); nothing here names a dataset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
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
        acc = info.get("val_accuracy")
        console.print(f"epoch {info.get('epoch')}/{info.get('epochs')}: loss {info.get('loss', 0):.3f}"
                      + ("" if acc is None else f", val accuracy {acc:.3f}") + f" ({info.get('seconds', 0):.0f} s)")

    try:
        meta = kind.train(root, out, progress=progress, **kw)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        raise UsageError(f"the {kind.name} trainer does not take that option: {err}") from None
    console.print(f"saved {out} (val accuracy {meta.get('val_accuracy')})")
    return meta


def demo_spec(kind: Any, full: bool) -> Any:
    """The demo a kind runs: its quick one (the default ten-minute demo) unless ``full`` or it has none."""
    return kind.demo if full or kind.quick is None else kind.quick


def model_owner(kind: Any, full: bool) -> Any:
    """The kind whose demo trains the model ``kind``'s demo explains (itself, or the kind its demo ``uses``)."""
    from xcore.datasets import DATASETS

    spec = demo_spec(kind, full)
    return kind if spec.uses is None else model_owner(DATASETS.get(spec.uses), full)


def demo_model(kind_name: str, full: bool, niceness: int = 0) -> str:
    """The checkpoint ``kind_name``'s demo explains, trained now when missing. A fresh model below the demo's
    accuracy band is retrained once with the next seed, and the reason is logged. Runs in a worker process of
    :func:`training` (so it takes and returns plain values), at ``niceness`` when > 0."""
    from xcore.datasets import DATASETS

    if niceness > 0:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)

    kind = model_owner(DATASETS.get(kind_name), full)
    spec = demo_spec(kind, full)
    path = Path(spec.model)
    if not path.is_file():
        console.print(f"training the {kind.modality} demo model -> {path}")
        meta = train_checkpoint(kind, kind.generate(), path, **spec.train)
        acc = float(meta.get("val_accuracy") or 0.0)
        if acc < spec.min_accuracy:
            seed = int(spec.train.get("seed", 0)) + 1
            console.print(f"retraining the {kind.modality} demo model with seed {seed}: val accuracy {acc:.3f} is "
                          f"below the demo's band (>= {spec.min_accuracy})", highlight=False)
            train_checkpoint(kind, kind.generate(), path, **{**spec.train, "seed": seed})
    return str(path)


def train_seconds(kind: Any, full: bool) -> float:
    """About how long the model ``kind``'s demo explains still takes to train (0 when it is there)."""
    spec = demo_spec(model_owner(kind, full), full)
    return 0.0 if Path(spec.model).is_file() else spec.train_seconds


def training_order(kinds: list[Any], full: bool) -> list[str]:
    """The owners of ``kinds``' missing demo models in the order two workers should train them: the longest
    first (it sets the end), then the others shortest first (so the explanations can start soonest)."""
    owners = {model_owner(k, full).name: model_owner(k, full) for k in kinds}
    todo = sorted((n for n, k in owners.items() if train_seconds(k, full) > 0),
                  key=lambda n: train_seconds(owners[n], full))
    return todo[-1:] + todo[:-1]


@contextlib.contextmanager
def training(kinds: list[Any], full: bool) -> Iterator[Callable[[Any], None]]:
    """Generate the data and train the missing demo models of ``kinds`` in two worker processes (each training uses
    one thread, reproducible whatever the load) at nice 10, the longest first;
    yields ``ready(kind)``, which waits for the
    model ``kind``'s demo explains, so the explanations of one modality run while the next one trains."""
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    todo = training_order(kinds, full)
    futures: dict[str, Future[str]] = {}
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) if todo else None
    try:
        # at nice 10 (the measured best of 0 / 10 / longest 0 and the rest 10 or 19): the explanations in this
        # process come first, while Ray's actors (Ray runs its workers at nice 15) still get a share
        for name in todo:
            futures[name] = pool.submit(demo_model, name, full, 10)  # type: ignore[union-attr]
        for k in kinds:  # meanwhile, here: the data of the kinds nobody trains on (idempotent)
            if k.name not in futures and k.generate is not None:
                k.generate()

        def ready(kind: Any) -> None:
            fut = futures.get(model_owner(kind, full).name)
            if fut is not None:
                fut.result()

        yield ready
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def demo_runs(modality: str, full: bool, out: Path, shard_size: int, batch_size: int) -> list[dict[str, Any]]:
    """The explain configs of a modality's demo: its own kind's, then its companions' (e.g. COCO's pointing game)."""
    import xcore.explain
    import xcore.metrics
    from xcore.datasets.base import companions

    kind = demo_kind(modality)
    configs = []
    for k in [kind, *companions(kind)]:
        spec = demo_spec(k, full)
        model = demo_model(k.name, full)
        configs.append({"dataset": str(k.generate()), "model": str(model), "out": str(out), "split": spec.split,
                        "dataset_kind": k.name, "shard_size": shard_size, "batch_size": batch_size,
                        "samples": spec.samples, "target": spec.target,
                        "methods": available(spec.methods, xcore.explain.available()),
                        "metrics": available(spec.metrics, xcore.metrics.available())})
    return configs


def demo(out: Path = typer.Option(Path(".xcore/runs"), help="output root"),
         modality: str = typer.Option("all", help="image, skeleton, video or all"),
         full: bool = typer.Option(False, "--full", help="the full demo: full training recipes, whole splits"),
         executor: str = "ray", shard_size: int = 32, batch_size: int = 16) -> None:
    """Synthetic data -> small models trained here -> explanations + metrics -> summaries and one HTML report per
    run (the ten-minute demo; --full: the full one)."""
    from xcore.datasets import modalities
    from xcore.datasets.base import companions
    from xcore.pipeline import open_job
    from xcore.report.build import write_report

    code, pages = 0, []
    mods = list(modalities()) if modality == "all" else [modality]
    try:
        kinds = [k for m in mods for k in (demo_kind(m), *companions(demo_kind(m)))]
    except UsageError as err:
        raise fail(err) from None
    mods.sort(key=lambda m: train_seconds(demo_kind(m), full))  # the first model ready is explained first
    if executor == "ray":  # Ray starts now, on idle cores, not beside the trainings; every run reuses it
        from tasks.processes import start_ray

        start_ray()
    with training(kinds, full) as ready:
        for mod in mods:
            try:
                for k in (demo_kind(mod), *companions(demo_kind(mod))):
                    ready(k)
                configs = demo_runs(mod, full, out, shard_size, batch_size)
            except UsageError as err:
                raise fail(err) from None
            for config in configs:  # each report right after its run: they overlap the next model's training
                code = max(code, execute("explain", config, {"executor": executor}))
                pages.append(write_report(Path(open_job("explain", config).run_dir)))
    for path in [*pages, write_index(pages, out)]:
        console.print(f"HTML report: {path}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def write_index(pages: list[Path], out: Path) -> Path:
    """``OUT/index.html`` linking the runs' HTML reports (:func:`xcore.report.build.write_report`); its path."""
    from xcore.io.atomic import atomic_open

    links = "".join(f'<li><a href="{p.relative_to(out.absolute()).as_posix()}">{p.parent.name}</a></li>'
                    for p in (q.absolute() for q in pages))
    index = out / "index.html"
    with atomic_open(index, "w") as fh:
        fh.write(f"<!doctype html><meta charset=utf-8><title>xcore demo</title><h1>xcore demo</h1><ul>{links}</ul>")
    return index.absolute()
