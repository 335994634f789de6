"""The ``xai`` command line: run, job, summary, query, analyse (and demo, train from :mod:`flows.cli_demo`, verify
from :mod:`flows.cli_verify`, roar from :mod:`flows.cli_roar`, filters from :mod:`flows.cli_filters`).

Configuration is validated (paths, checkpoint, methods, parameters, layers, metrics) before Ray or Prefect is
imported: a wrong value prints one line on stderr and exits with code 2. A run exits 0 when every shard was
written (per-sample errors are counted and reported) and 1 when shards still failed after retries. The options of
``xai run`` come from :class:`~xcore.pipeline.config.ExplainConfig` and :class:`~tasks.options.RunOptions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows.cli_clean import clean
from flows.cli_demo import demo, train
from flows.cli_filters import filters
from flows.cli_options import fail, parse_assignments, parse_params, with_model_options
from flows.cli_query import query
from flows.cli_report import report
from flows.cli_roar import roar
from flows.cli_verify import committed_run, require_run, verify
from flows.launch import console, execute
from flows.progress import print_blocks, print_rows
from tasks.options import RunOptions
from xcore.errors import UsageError
from xcore.pipeline.config import ExplainConfig

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Explain image, video and skeleton classifiers over whole datasets and measure the "
                       "explanations.")
app.command()(demo)
app.command()(train)
app.command()(verify)
app.command()(clean)
app.command()(roar)
app.command()(filters)


@app.command()
@with_model_options(ExplainConfig, RunOptions)
def run(method: list[str] = typer.Option(..., "--method", "-m", help="explanation method (repeat)"),
        metric: list[str] = typer.Option(["deletion_insertion"], "--metric", help="metric (repeat)"),
        param: list[str] = typer.Option([], "--param", "-p", help="METHOD.NAME=VALUE or METRIC.NAME=VALUE (repeat)"),
        reader: list[str] = typer.Option([], "--reader", help="reader option NAME=VALUE, e.g. clips=localisation"),
        values: list[dict[str, Any]] | None = None) -> None:
    """Explain a dataset with a checkpoint: shards -> Ray actors -> Parquet under OUT/RUN_ID."""
    config, options = values or [{}, {}]
    try:
        if set(method) & set(metric):
            raise UsageError(f"{sorted(set(method) & set(metric))[0]!r} is named both as a method and a metric")
        both = parse_params([*method, *metric], param)
        config = {**config, "methods": {m: both[m] for m in method}, "metrics": {m: both[m] for m in metric},
                  "reader": parse_assignments("--reader", reader)}
    except UsageError as err:
        raise fail(err) from None
    raise typer.Exit(execute("explain", config, options))


@app.command()
@with_model_options(RunOptions)
def job(kind: str = typer.Argument(..., help="a registered job kind, or a plug-in module:factory"),
        config: Path = typer.Option(..., "--config", help="the job's config as YAML or JSON"),
        set_: list[str] = typer.Option([], "--set", help="override a top-level config key: NAME=VALUE (repeat)"),
        values: list[dict[str, Any]] | None = None) -> None:
    """Run any job kind (``explain``, …) from a config file: plan -> dispatch -> reduce -> report."""
    try:
        cfg = read_config(config)
        cfg.update(parse_assignments("--set", set_))
    except UsageError as err:
        raise fail(err) from None
    raise typer.Exit(execute(kind, cfg, (values or [{}])[0]))


def read_config(path: Path) -> dict[str, Any]:
    """A job config file: a YAML (or JSON) mapping; ``UsageError`` when missing or not a mapping."""
    import yaml

    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UsageError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of config keys")
    return data


@app.command()
def analyse(run_dir: Path, method: list[str] = typer.Option([], "--method", help="only these methods (repeat)")
            ) -> None:
    """The run's report under RUN_DIR/analysis, as its job and dataset kind define it (skeleton: joint importance,
    faithfulness, contrastivity, figures; video: deletion / insertion, localisation error, mass in boxes; roar:
    curves, AUCs, figure)."""
    from xcore.io.runs import read_json
    from xcore.pipeline import open_job

    info = read_json(run_dir / "run.json") or {}
    if not info.get("kind") or not info.get("config"):
        raise fail(UsageError(f"{run_dir} holds no finished run (no run.json)"))
    try:
        blocks = open_job(info["kind"], {**info["config"], "run_id": run_dir.name,
                                         "out": str(run_dir.parent)}).report(method or None)
    except (UsageError, ValueError) as err:
        raise fail(UsageError(str(err))) from None
    print_blocks(console, blocks or [f"{run_dir}: its dataset kind defines no report"])


@app.command()
def summary(run_dir: Path) -> None:
    """Mean deletion / insertion AUC per method over status='ok' rows of the committed shards (a roar run: the
    method × t accuracy table with the AUC per mode), and the error count (exit 1 with one line when a committed
    file is unreadable; :mod:`flows.cli_verify`)."""
    from xcore.analysis.roar import summary_blocks
    from xcore.io.query import summarise
    from xcore.io.runs import read_json

    info = read_json(run_dir / "run.json") or {}
    with committed_run(run_dir) as con:
        if info.get("kind") == "roar":
            print_blocks(console, [str(run_dir), *summary_blocks(con, info["config"].get("auc", "trapezoid"))])
        elif info.get("kind") == "filter_scores":
            from xcore.analysis.filters import summary_blocks as filter_blocks

            print_blocks(console, [str(run_dir), *filter_blocks(info.get("summary") or {})])
        else:
            from xcore.analysis.evaluation import evaluation_blocks

            print_rows(console, f"{run_dir}", summarise(con))
            print_blocks(console, evaluation_blocks(con, run_dir))
        errors = con.execute("SELECT count(*) FROM errors").fetchone()[0]  # type: ignore[index]
    console.print(f"errors: {errors} (query them with: xai query {run_dir} \"SELECT * FROM errors\")")


@app.command()
def sanity(pred_run: Path, random_run: Path) -> None:
    """The random-target sanity check (thesis §3.6.4, Table 3.5): per method, deletion AUC of a run explaining the
    prediction beside a run of the same data with --target random (deletion tracks the prediction in both)."""
    import duckdb

    from xcore.analysis.evaluation import random_target_rows

    for run in (pred_run, random_run):
        require_run(run)  # one clear line (exit 2) for a path that is not a run
    try:
        data = random_target_rows(pred_run, random_run)
    except (UsageError, ValueError, duckdb.Error) as err:
        raise fail(UsageError(str(err).splitlines()[0])) from None
    print_rows(console, f"deletion AUC, predicted vs random target ({pred_run} / {random_run})", data)


@app.command()
def bam(object_run: Path, scene_run: Path) -> None:
    """BAM's model contrast score per method (thesis §3.5.4, Table 3.12) from a run of the object model and one of
    the scene model over the same BAM images, both with --metric bam_attribution."""
    import duckdb

    from xcore.analysis.evaluation import model_contrast_rows

    for run in (object_run, scene_run):
        require_run(run)
    try:
        data = model_contrast_rows(object_run, scene_run)
    except (UsageError, ValueError, duckdb.Error) as err:
        raise fail(UsageError(str(err).splitlines()[0])) from None
    print_rows(console, f"BAM model contrast score ({object_run} - {scene_run}; thesis Table 3.12)", data)


app.command()(query)
app.command()(report)


def main() -> None:
    """Console-script entry point (``xai``)."""
    app()


if __name__ == "__main__":
    main()
