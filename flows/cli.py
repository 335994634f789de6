"""The ``xai`` command line: demo, train, run, summary, query, analyse.

Configuration is validated (paths, checkpoint, methods, parameters, layers, metrics) before Ray or Prefect
is imported: a wrong value prints one line on stderr and exits with code 2. A run exits 0 when every shard
was written (per-sample errors are counted and reported) and 1 when shards still failed after retries.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from flows.progress import ShardProgress, print_rows
from xcore.errors import UsageError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Explain image classifiers over whole datasets and measure the explanations.")
console = Console()
DEMO_METHODS = ("gradient", "guided_backprop", "input_x_gradient", "gradcam", "centre", "random")
DEMO_MODEL = Path(".xcore/models/smallcnn.pt")
SKELETON_MODEL = Path(".xcore/models/stgcn.pt")
SKELETON_METHODS = ("stg_gradcam", "stg_gradient", "random")  # stg_cam ranks like stg_gradcam (a scaled copy)
SKELETON_METRICS = ("deletion_insertion", "node_masking")
VIDEO_MODEL = Path(".xcore/models/small3d.pt")
VIDEO_METHODS = ("gradcam", "gradcam_pp", "saliency_tubes", "swag_v", "discriminative", "guided_backprop", "centre",
                 "random")
VIDEO_METRICS = ("deletion_insertion", "weak_localisation")
MODALITIES = ("image", "skeleton", "video")


def fail(err: Exception, code: int = 2) -> typer.Exit:
    """Print ``err`` as one line on stderr; the exit to raise."""
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def parse_value(text: str) -> Any:
    """``3`` -> int, ``0.5`` -> float, ``true`` / ``null`` / JSON lists -> Python, anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(methods: list[str], params: list[str]) -> dict[str, dict[str, Any]]:
    """``--method m`` and ``--param m.key=value`` -> ``{method: {key: value}}`` (UsageError on a bad spec).

    ``methods`` may hold metric names too: a parameter goes to whichever selected name it starts with.
    """
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for spec in params:
        name, sep, value = spec.partition("=")
        method, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise UsageError(f"--param {spec!r}: use METHOD.NAME=VALUE")
        if method not in out:
            raise UsageError(f"--param {spec!r}: {method!r} is not selected with --method / --metric")
        out[method][key] = parse_value(value)
    return out


def execute(config: dict[str, Any], *, executor: str, max_attempts: int, shard_timeout: float | None,
            actors: int | None = None, report: bool = True) -> int:
    """Validate ``config`` (exit 2 on a usage error), run the flow with a progress bar, print the summary."""
    from xcore.pipeline import ExplainJob, explain_config

    try:
        cfg = explain_config(config)
        job = ExplainJob(cfg)
        if executor not in ("ray", "local"):
            raise UsageError(f"unknown executor {executor!r}; use ray or local")
    except UsageError as err:
        raise fail(err) from None
    console.print(f"run [bold]{job.run_id}[/] -> {job.run_dir} ({job.n_samples} samples, "
                  f"{len(job.shards())} shards, executor {executor})")
    from flows.explain import explain_dataset  # imports Prefect; Ray starts inside the dispatch task

    params = {k: cfg[k] for k in ("dataset", "model", "methods", "metrics", "shard_size", "out", "run_id",
                                  "split", "dataset_kind", "batch_size", "device", "seed", "target", "reader")}
    with ShardProgress(console):
        state = explain_dataset(**params, executor=executor, max_attempts=max_attempts,
                                shard_timeout=shard_timeout, actors=actors, return_state=True)
    if (Path(job.run_dir) / "metrics").is_dir():
        show_summary(job.run_dir)
    for path in sorted((Path(job.run_dir) / "analysis").glob("skeleton_*.json")) if report else []:
        print_report(json.loads(path.read_text()), path)
    video = Path(job.run_dir) / "analysis" / "video.json"
    if report and video.is_file():
        print_video_report(json.loads(video.read_text()), video)
    if state.is_failed():
        print(f"error: run failed: {' '.join(str(state.message).split())}", file=sys.stderr)
        return 1
    return 0


def show_summary(run_dir: str | Path) -> None:
    """The per-method table (mean AUCs over ok rows) and the error count."""
    from xcore.io.query import connect, method_summary

    print_rows(console, f"{run_dir}", method_summary(run_dir))
    con = connect(run_dir)
    errors = con.execute("SELECT count(*) FROM errors").fetchone()[0]  # type: ignore[index]
    con.close()
    console.print(f"errors: {errors} (query them with: xai query {run_dir} \"SELECT * FROM errors\")")


@app.command()
def run(dataset: Path = typer.Option(..., help="dataset root"),
        model: Path = typer.Option(..., help="checkpoint (.pt with a .json sidecar)"),
        method: list[str] = typer.Option(..., "--method", "-m", help="explanation method (repeat)"),
        param: list[str] = typer.Option([], "--param", "-p", help="METHOD.NAME=VALUE or METRIC.NAME=VALUE (repeat)"),
        metric: list[str] = typer.Option(["deletion_insertion"], "--metric", help="metric (repeat)"),
        shard_size: int = typer.Option(256, help="samples per shard (one Parquet file per table)"),
        out: Path = typer.Option(Path("runs"), help="output root; the run goes to OUT/RUN_ID"),
        run_id: str | None = typer.Option(None, help="run directory name (default: the run key)"),
        split: str = typer.Option("val", help="split; for NTU a bare part means the checkpoint's benchmark"),
        dataset_kind: str | None = typer.Option(None, help="imagenet or ntu (default: the checkpoint's)"),
        batch_size: int = typer.Option(16, help="samples per explain batch"),
        device: str | None = None, seed: int = 0,
        executor: str = typer.Option("ray", help="ray (actor pool) or local (in process)"),
        max_attempts: int = 3, shard_timeout: float | None = None,
        actors: int | None = typer.Option(None, help="actor count (default: one per GPU, else one)"),
        target: str = typer.Option("pred", help="explained class: pred (clean prediction) or label (ground truth)"),
        reader: list[str] = typer.Option([], "--reader", help="reader option NAME=VALUE, e.g. clips=localisation")
        ) -> None:
    """Explain a dataset with a checkpoint: shards -> Ray actors -> Parquet under OUT/RUN_ID."""
    try:
        if set(method) & set(metric):
            raise UsageError(f"{sorted(set(method) & set(metric))[0]!r} is named both as a method and a metric")
        both = parse_params([*method, *metric], param)
        options = {}
        for spec in reader:
            key, sep, value = spec.partition("=")
            if not sep or not key:
                raise UsageError(f"--reader {spec!r}: use NAME=VALUE")
            options[key] = parse_value(value)
    except UsageError as err:
        raise fail(err) from None
    config = {"dataset": str(dataset), "model": str(model), "methods": {m: both[m] for m in method},
              "metrics": {m: both[m] for m in metric}, "shard_size": shard_size, "out": str(out), "run_id": run_id,
              "split": split, "dataset_kind": dataset_kind, "batch_size": batch_size, "device": device,
              "seed": seed, "target": target, "reader": options}
    raise typer.Exit(execute(config, executor=executor, max_attempts=max_attempts, shard_timeout=shard_timeout,
                             actors=actors))


@app.command()
def train(data: Path | None = typer.Option(None, help="dataset root (default: the synthetic data)"),
          out: Path | None = typer.Option(None, help="checkpoint path (default: the demo model of the modality)"),
          modality: str = typer.Option("image", help="image (small CNN), skeleton (ST-GCN) or video (3-D CNN)"),
          arch: str | None = None, benchmark: str = typer.Option("xsub", help="skeleton: xsub, xview, ..."),
          width: float | None = typer.Option(None, help="skeleton: ST-GCN channel multiplier (default 0.125)"),
          epochs: int | None = None, seed: int = 0) -> None:
    """Train a model on a dataset's train split (generates the synthetic data when missing)."""
    try:
        if modality not in MODALITIES:
            raise UsageError(f"unknown modality {modality!r}; use image, skeleton or video")
        kw: dict[str, Any] = {"seed": seed}
        if epochs is not None:
            kw["epochs"] = epochs
        if arch is not None:
            kw["arch"] = arch
        if modality == "skeleton":
            from xcore.models.train_skeleton import SKELETON_DEFAULTS

            kw.update(benchmark=benchmark, arch_kwargs={**SKELETON_DEFAULTS, **({} if width is None else
                                                                               {"width": width})})
        train_checkpoint(modality, data or synthetic_root(modality), out or demo_model(modality), **kw)
    except UsageError as err:
        raise fail(err) from None


def synthetic_root(modality: str) -> Path:
    """The embedded default data of ``modality``, generated on first use (seeded, idempotent)."""
    import xcore.data as data

    if modality == "video":
        return data.generate_videos(data.default_video_root())
    if modality == "skeleton":
        return data.generate_skeletons(data.default_skeleton_root())
    return data.generate_images(data.default_data_root())


def demo_model(modality: str) -> Path:
    return {"skeleton": SKELETON_MODEL, "video": VIDEO_MODEL}.get(modality, DEMO_MODEL)


def demo_methods(modality: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The demo's (methods, metrics) of ``modality``; the video ones that are not registered (yet) are left out."""
    if modality == "skeleton":
        return SKELETON_METHODS, SKELETON_METRICS
    if modality == "video":
        import xcore.explain
        import xcore.metrics

        methods, metrics = set(xcore.explain.available()), set(xcore.metrics.available())
        return (tuple(m for m in VIDEO_METHODS if m in methods), tuple(m for m in VIDEO_METRICS if m in metrics))
    return DEMO_METHODS, ("deletion_insertion",)


def train_checkpoint(modality: str, root: Path, out: Path, **kw: Any) -> dict[str, Any]:
    """``train_model`` / ``train_skeleton`` / ``train_video`` with a per-epoch progress line."""
    from xcore.models import train_model, train_skeleton, train_video

    def progress(info: dict[str, Any]) -> None:
        console.print(f"epoch {info.get('epoch')}/{info.get('epochs')}: loss {info.get('loss', 0):.3f}, "
                      f"val accuracy {info.get('val_accuracy', 0):.3f} ({info.get('seconds', 0):.0f} s)")

    trainer = {"skeleton": train_skeleton, "video": train_video}.get(modality, train_model)
    meta = trainer(root, out, progress=progress, **kw)
    console.print(f"saved {out} (val accuracy {meta.get('val_accuracy')})")
    return meta


@app.command()
def demo(out: Path = typer.Option(Path(".xcore/runs"), help="output root"),
         modality: str = typer.Option("all", help="image, skeleton, video or all"),
         executor: str = "ray", shard_size: int = 32, batch_size: int = 16) -> None:
    """Synthetic data -> small models trained here -> explanations + metrics -> summary (and skeleton report)."""
    modalities = MODALITIES if modality == "all" else (modality,)
    code = 0
    for mod in modalities:
        try:
            if mod not in MODALITIES:
                raise UsageError(f"unknown modality {mod!r}; use image, skeleton, video or all")
            root, model = synthetic_root(mod), demo_model(mod)
            if not model.is_file():
                console.print(f"training the {mod} demo model -> {model}")
                train_checkpoint(mod, root, model)
        except UsageError as err:
            raise fail(err) from None
        methods, metrics = demo_methods(mod)
        config = {"dataset": str(root), "model": str(model), "methods": {m: {} for m in methods},
                  "metrics": {m: {} for m in metrics}, "shard_size": shard_size, "out": str(out),
                  "batch_size": batch_size, "split": "test" if mod == "video" else None}
        code = max(code, execute(config, executor=executor, max_attempts=3, shard_timeout=None))
    raise typer.Exit(code)


@app.command()
def analyse(run_dir: Path, method: str = typer.Option("stg_gradcam", help="skeleton: the method to analyse"),
            figures: bool = True) -> None:
    """A run's report under RUN_DIR/analysis: skeleton (joint importance ψ, faithfulness, contrastivity, figures)
    or video (deletion / insertion, localisation error, mass in boxes, freeze frames), by the run's data."""
    if not (run_dir / "explanations").is_dir():
        raise fail(UsageError(f"{run_dir} holds no explanations table"))
    from xcore.io.runs import read_json

    kind = (read_json(run_dir / "run.json") or {}).get("config", {}).get("dataset_kind")
    try:
        if kind in ("ucf101", "hmdb51", "kinetics400"):
            from xcore.analysis.video import write_video_report

            print_video_report(write_video_report(run_dir), run_dir / "analysis" / "video.json")
        else:
            show_report(run_dir, method, figures)
    except ValueError as err:
        raise fail(UsageError(str(err))) from None


def show_report(run_dir: Path, method: str, figures: bool = True) -> dict[str, Any]:
    from xcore.analysis.skeleton_report import write_report

    rep = write_report(run_dir, method, figures=figures)
    print_report(rep, run_dir / "analysis" / f"skeleton_{method}.json")
    return rep


def print_report(rep: dict[str, Any], path: Path) -> None:
    """One skeleton report in three lines."""
    method = rep.get("method")
    faith = rep.get("faithfulness") or {}
    hits = rep.get("top5_hit_rate") or {}
    console.print(f"[bold]{method}[/bold]: contrastivity {fmt(rep.get('contrastivity'))}, "
                  f"β_faithful important {fmt(faith.get('beta_important'))} / unimportant "
                  f"{fmt(faith.get('beta_unimportant'))}, top-5 ground-truth hit rate {fmt(hits.get('mean'))}")
    if faith:
        console.print(f"accuracy {fmt(faith['accuracy'])}; masked at {faith['fractions']}: important "
                      f"{[round(a, 3) for a in faith['accuracy_important']]}, unimportant "
                      f"{[round(a, 3) for a in faith['accuracy_unimportant']]}")
    console.print(f"report: {path}")


def print_video_report(rep: dict[str, Any], path: Path) -> None:
    """The video report: one table row per method, then the discriminative parts and freeze frames."""
    cols = {"method": "method", "clips": "clips", "deletion_auc": "deletion", "insertion_auc": "insertion",
            "loc_val_error": "loc err % val", "loc_mean_error": "mean", "loc_energy_error": "energy"}
    print_rows(console, "video report (localisation: best α per family)",
               [{c: r.get(k) for k, c in cols.items()} for r in rep.get("methods", [])])
    for method, parts in rep.get("mass_in_boxes", {}).items():
        if len(parts) > 1:
            shares = ", ".join(f"{p} {fmt(v['mass_in_boxes'])}" for p, v in parts.items())
            chance = fmt(next(iter(parts.values()))["chance"])
            console.print(f"{method}: positive mass inside the boxes: {shares} (chance {chance})")
    for method, fr in rep.get("freeze_frames", {}).items():
        console.print(f"{method}: freeze-frame clips predicted as the label {fmt(fr.get('freeze_accuracy'))}, "
                      f"as the clip's prediction {fmt(fr.get('freeze_agreement'))}")
    console.print(f"report: {path}")


def fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@app.command()
def summary(run_dir: Path) -> None:
    """Mean deletion / insertion AUC per method over status='ok' rows, and the error count."""
    if not (run_dir / "metrics").is_dir():
        raise fail(UsageError(f"{run_dir} holds no metrics table"))
    show_summary(run_dir)


@app.command()
def query(run_dir: Path, sql: str) -> None:
    """Run SQL over the views ``metrics``, ``explanations`` and ``errors`` of a run (DuckDB)."""
    import duckdb

    from xcore.io.query import connect, rows

    if not run_dir.is_dir():
        raise fail(UsageError(f"run directory {run_dir} does not exist"))
    try:
        cols, data = rows(connect(run_dir), sql)
    except duckdb.Error as err:
        raise fail(UsageError(str(err).splitlines()[0])) from None
    print_rows(console, sql, [dict(zip(cols, r, strict=True)) for r in data])


def main() -> None:
    """Console-script entry point (``xai``)."""
    app()


if __name__ == "__main__":
    main()
