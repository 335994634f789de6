"""``xai report RUN``: one self-contained HTML page per run, written atomically to ``<run>/report.html``.

The page holds the run's essentials (``run.json``), its summary tables as ``xai summary`` shows them (explain runs:
the per-method table of :func:`xcore.io.query.summarise` and :func:`xcore.analysis.evaluation.evaluation_blocks`;
roar runs: :func:`xcore.analysis.roar.summary_blocks`; filter-scoring runs:
:func:`xcore.analysis.filters.summary_blocks`), the mean deletion / insertion curves, the overlay grid (images) or
clips (videos) of :mod:`xcore.report.figures`, and every PNG the run's analyses wrote under ``<run>/analysis/``
(ROAR curves, filter ranking, surprise, skeleton ψ figures). Everything is read from the committed files only
(:func:`xcore.io.query.connect`). A section without data is left out; a dataset that cannot be reopened gives one
line in place of the grid.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb

from xcore.analysis.blocks import Block, table
from xcore.errors import UsageError
from xcore.io.atomic import atomic_open, read_json
from xcore.io.query import connect, summarise
from xcore.report import figures
from xcore.report.html import blocks_html, definition_list, esc, figure, img, note, page, section

MARKERS = ("run.json", "_shards", "_manifests/plan.json")


def _when(ts: Any) -> str | None:
    if not isinstance(ts, int | float):
        return None
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _names(value: Any) -> str | None:
    if isinstance(value, dict):
        return ", ".join(sorted(value)) or None
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or None
    return None if value is None else str(value)


def essentials(run: Path, info: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The run's identity as label -> value: kind, dataset, split, model, methods, metrics, times, versions."""
    cfg = info.get("config") or {}
    resolved = info.get("resolved") or {}
    model = resolved.get("model") or {}
    summary = info.get("summary") or {}
    timings = info.get("timings") or {}
    dataset = cfg.get("dataset")
    if dataset and cfg.get("dataset_kind"):
        dataset = f"{dataset} ({cfg['dataset_kind']})"
    weights = cfg.get("model")
    if weights and model.get("arch"):
        weights = f"{weights} ({model['arch']})"
    shards = (f"{summary['shards_complete']} of {summary['shards']} complete"
              if {"shards", "shards_complete"} <= set(summary) else None)
    return {
        "run": str(run), "run key": info.get("run_key") or plan.get("run_key"),
        "kind": info.get("kind") or plan.get("kind"), "modality": resolved.get("modality"), "dataset": dataset,
        "split": cfg.get("split") or cfg.get("test_split"), "model": weights,
        "methods": _names(cfg.get("methods")), "metrics": _names(cfg.get("metrics")), "samples": summary.get("samples"),
        "shards": shards, "started (last plan)": _when(plan.get("planned_at")),
        "finished": _when(info.get("finished_at")) or "not yet (no run.json)",
        "wall seconds": timings.get("wall_s"), "executor": (info.get("executor") or {}).get("kind"),
        "xcore version": (info.get("versions") or {}).get("xcore"), "git sha": info.get("git_sha"),
    }


def summary_blocks(kind: str, con: duckdb.DuckDBPyConnection, run: Path, info: dict[str, Any]) -> list[Block]:
    """The run's summary as ``xai summary`` prints it, by job kind, plus the error count."""
    blocks: list[Block]
    if kind == "roar":
        from xcore.analysis.roar import summary_blocks as roar_blocks

        blocks = roar_blocks(con, (info.get("config") or {}).get("auc", "trapezoid"))
    elif kind == "filter_scores":
        from xcore.analysis.filters import summary_blocks as filter_blocks

        blocks = filter_blocks(info.get("summary") or {})
    else:
        from xcore.analysis.evaluation import evaluation_blocks

        per_method = summarise(con)
        blocks = [table("per method: ok / error rows, mean AUCs over ok rows", per_method) if per_method
                  else "no committed metrics rows yet"]
        blocks += evaluation_blocks(con, run)
    errors = con.execute("SELECT count(*) FROM errors").fetchone()
    blocks.append(f"errors: {errors[0] if errors else 0} (query them with: xai query {run} \"SELECT * FROM errors\")")
    return blocks


def grid_html(grid: figures.Grid) -> str:
    """The overlay grid as a table: a row per sample, the input then one column per (method, part)."""
    head = "<th>sample</th>" + "".join(f"<th>{esc(c)}</th>" for c in grid.columns)
    body = []
    for row, cells in zip(grid.rows, grid.cells, strict=True):
        sample = str(row["sample_id"])
        label = "<br>".join(esc(t) for t in (f"{sample} (#{row['index']})", f"label {row['label']}",
                                              f"pred {row['pred']}"))
        imgs = "".join(f"<td>{img(c, grid.mime, alt=sample + ' ' + col, title=col)}</td>"
                       for c, col in zip(cells, grid.columns, strict=True))
        body.append(f"<tr><th>{label}</th>{imgs}</tr>")
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def sections(run: Path, info: dict[str, Any], plan: dict[str, Any], con: duckdb.DuckDBPyConnection,
             samples: int) -> list[str]:
    """The page's sections in order; one without data is left out."""
    kind = info.get("kind") or plan.get("kind") or "explain"
    out = [section("Run", definition_list(essentials(run, info, plan)), "run"),
           section("Summary", blocks_html(summary_blocks(kind, con, run, info), "summary"), "summary")]
    curves = figures.curves_png(figures.mean_curves(con))
    if curves is not None:
        out.append(section("Deletion and insertion curves (mean over ok samples)",
                           figure(curves, "mean deletion / insertion curve per method"), "curves"))
    if kind == "explain":
        grid = figures.overlay_grid(run, info, con, samples)
        if isinstance(grid, str):
            out.append(section("Overlays", note(grid), "overlays"))
        elif grid is not None:
            what = "clips (animated)" if grid.mime == "image/gif" else "overlays"
            out.append(section(f"Maps over the first {len(grid.rows)} samples: {what}",
                               "<p>Each map min-max normalised for display only.</p>" + grid_html(grid), "overlays"))
    pngs = sorted((run / "analysis").glob("*.png")) if (run / "analysis").is_dir() else []
    if pngs:
        out.append(section("Analysis figures", "\n".join(figure(p.read_bytes(), p.name) for p in pngs), "analysis"))
    return out


def write_report(run_dir: Path | str, *, samples: int = 6) -> Path:
    """Write ``<run>/report.html`` (temp name + rename) over the run's committed files and return its path.

    ``samples``: rows of the overlay grid (the first committed samples with a map of every method, by index).
    Raises :class:`UsageError` for a path that is not a run directory or a negative ``samples``, and
    ``duckdb.Error`` when a committed file cannot be read."""
    run = Path(run_dir)
    if samples < 0:
        raise UsageError(f"--samples must be 0 or more, not {samples}")
    if not run.is_dir() or not any((run / m).exists() for m in MARKERS):
        raise UsageError(f"{run} is not a run directory (no run.json, _shards or _manifests/plan.json)")
    info = read_json(run / "run.json") or {}
    plan = read_json(run / "_manifests" / "plan.json") or {}
    con = connect(run)
    try:
        body = sections(run, info, plan, con, samples)
    finally:
        con.close()
    kind = info.get("kind") or plan.get("kind") or "run"
    written = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = page(f"xcore report: {run.name}", f"{kind} run {info.get('run_key') or plan.get('run_key') or ''}, "
                f"report written {written}", body)
    path = run / "report.html"
    with atomic_open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))
    return path
