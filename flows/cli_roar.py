"""``xai roar``: ROAR / KAR (or ROAD's retrain-free check) of explanation methods on a dataset's train and test splits.

The options come from :class:`~xcore.pipeline.config.RoarConfig` and :class:`~tasks.options.RunOptions`; methods,
their parameters, the fractions and the modes have their own repeatable options. It runs the ``roar`` job through
the same launcher as ``xai run`` (validation first, one line and exit 2 on a usage error; the explain runs it
requires, then one unit per (method, mode, t, repeat) on the actors, with a progress bar over the units).
"""

from __future__ import annotations

from typing import Any

import typer

from flows.cli_options import fail, parse_assignments, parse_params, with_model_options
from flows.launch import execute
from tasks.options import RunOptions
from xcore.errors import UsageError
from xcore.pipeline.config import RoarConfig


@with_model_options(RoarConfig, RunOptions)
def roar(method: list[str] = typer.Option(..., "--method", "-m", help="explanation method, or oracle (repeat)"),
         param: list[str] = typer.Option([], "--param", "-p", help="METHOD.NAME=VALUE (repeat)"),
         fraction: list[float] = typer.Option([], "--fraction", "-t",
                                              help="fraction t in [0, 1] (repeat; default 0 .1 .3 .5 .7 .9)"),
         mode: list[str] = typer.Option([], "--mode", help="roar, kar or lerf (repeat; default roar + kar, "
                                        "or roar + lerf with --no-retrain)"),
         reader: list[str] = typer.Option([], "--reader", help="reader option NAME=VALUE"),
         values: list[dict[str, Any]] | None = None) -> None:
    """Remove (ROAR) or keep (KAR) the top-t of every image by each method, retrain, evaluate: curves and AUCs."""
    config, options = values or [{}, {}]
    try:
        config = {**config, "methods": parse_params(method, param), "reader": parse_assignments("--reader", reader),
                  **({"fractions": fraction} if fraction else {}), **({"modes": mode} if mode else {})}
    except UsageError as err:
        raise fail(err) from None
    raise typer.Exit(execute("roar", config, options))
