"""``xai filters``: per-class filter-score distributions and surprise / expectation / β (Hartley 2021, §6.2–6.4).

The options come from :class:`~xcore.pipeline.config.FiltersConfig` and :class:`~tasks.options.RunOptions`; scorers
and their parameters have their own repeatable options. It runs the ``filter_scores`` job through the same launcher
as ``xai run`` (validation first, one line and exit 2 on a usage error; the reference split first, then the
evaluated split, each with a progress bar over its shards).
"""

from __future__ import annotations

from typing import Any

import typer

from flows.cli_options import fail, parse_assignments, parse_params, with_model_options
from flows.launch import execute
from tasks.options import RunOptions
from xcore.errors import UsageError
from xcore.pipeline.config import FiltersConfig


@with_model_options(FiltersConfig, RunOptions)
def filters(scorer: list[str] = typer.Option(["gradamap"], "--scorer", "-s",
                                             help="filter scorer (repeat): gradamap, gradcam, gradcam_pp, "
                                             "xgradcam, taylor, taylor_class, l1, random"),
            param: list[str] = typer.Option([], "--param", "-p", help="SCORER.NAME=VALUE (repeat)"),
            reader: list[str] = typer.Option([], "--reader", help="reader option NAME=VALUE"),
            values: list[dict[str, Any]] | None = None) -> None:
    """Score every filter of a layer per sample; per-class distributions; surprise, β, ranking AUC, fixing."""
    config, options = values or [{}, {}]
    try:
        config = {**config, "methods": parse_params(scorer, param), "reader": parse_assignments("--reader", reader)}
    except UsageError as err:
        raise fail(err) from None
    raise typer.Exit(execute("filter_scores", config, options))
