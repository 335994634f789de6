"""The ROAR / KAR / ROAD report: accuracy-vs-t curves (mean and std over repeats) and the AUC per method and mode.

Reads the committed ``roar`` rows of a run (one per unit, :mod:`xcore.pipeline.roar_worker`) and writes
``analysis/roar_curves.parquet`` (method, mode, fraction, mean, std, repeats), ``analysis/roar.json`` (curves,
AUCs, notes) and ``analysis/roar.png`` (one panel per mode). The AUC of a curve is
:func:`xcore.metrics.roar.curve_auc`: the trapezoid over the true fractions by default, or the thesis / RISE formula
as if the points were uniform (Hartley 2021, §3.5.2, Table 3.8: ROAR AUC, lower is better; for KAR and LeRF higher
is better). A note flags the ROAR ordering when the ground-truth ``oracle`` keeps more accuracy than ``random`` —
the shape of the removed region leaking the class into the retrained model (Rong et al. 2022, ROAD).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from xcore.analysis.blocks import Block, table
from xcore.io.atomic import atomic_open
from xcore.io.parquet import write_atomic
from xcore.metrics.roar import curve_auc

BETTER = {"roar": "lower", "kar": "higher", "lerf": "higher"}


def unit_rows(con: Any) -> list[dict[str, Any]]:
    """The ``roar`` rows (status ok and error) of a DuckDB connection over a run (:func:`xcore.io.query.connect`),
    by unit."""
    rel = con.execute("SELECT * FROM roar ORDER BY unit")
    cols = [d[0] for d in rel.description or []]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def summary_blocks(con: Any, rule: str = "trapezoid") -> list[Block]:
    """:func:`blocks` of the run behind ``con`` (``xai summary`` of a roar run)."""
    rows = unit_rows(con)
    curve_rows = curves(rows)
    return blocks(curve_rows, aucs(curve_rows, rule), notes(curve_rows, any(r.get("retrain") for r in rows)))


def curves(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (population) std of the accuracy over the ok repeats of each (method, mode, fraction)."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("accuracy") is not None:
            groups.setdefault((r["method"], r["mode"], float(r["fraction"])), []).append(float(r["accuracy"]))
    return [{"method": m, "mode": mode, "fraction": t, "mean": float(np.mean(v)), "std": float(np.std(v)),
             "repeats": len(v)} for (m, mode, t), v in sorted(groups.items())]


def aucs(curve_rows: list[dict[str, Any]], rule: str = "trapezoid") -> list[dict[str, Any]]:
    """The AUC of every (method, mode) curve of :func:`curves`, with the curve's fractions."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in curve_rows:
        by.setdefault((c["method"], c["mode"]), []).append(c)
    out = []
    for (m, mode), pts in sorted(by.items()):
        pts.sort(key=lambda c: c["fraction"])
        xs, ys = [p["fraction"] for p in pts], [p["mean"] for p in pts]
        out.append({"method": m, "mode": mode, "auc": curve_auc(xs, ys, rule=rule) if len(pts) > 1 else None,
                    "rule": rule, "better": BETTER.get(mode, ""), "points": len(pts)})
    return out


def notes(curve_rows: list[dict[str, Any]], retrain: bool = True) -> list[str]:
    """Where the oracle does worse than ``random`` at a fraction by more than the two stds together (at least
    0.02), one line with the numbers: reported, not hidden."""
    by = {(c["method"], c["mode"], c["fraction"]): c for c in curve_rows}
    out = []
    for (m, mode, t), c in sorted(by.items()):
        r = by.get(("random", mode, t))
        if m != "oracle" or r is None or t in (0.0, 1.0):
            continue
        gap = c["mean"] - r["mean"] if mode == "roar" else r["mean"] - c["mean"]
        if gap > max(0.02, c["std"] + r["std"]):
            leak = mode == "roar" and retrain
            out.append(f"{mode} at t = {t:g}: the oracle {'keeps' if mode == 'roar' else 'has'} accuracy "
                       f"{c['mean']:.3f} against random's {r['mean']:.3f} — against intuition"
                       + ("; the retrained model reads the class from the shape of the removed region (the leak "
                          "ROAD describes, Rong et al. 2022): compare --no-retrain or --imputation noisy_linear"
                          if leak else ""))
    return out


def analyse(run_dir: Path | str, run_key: str, rule: str = "trapezoid") -> dict[str, Any]:
    """Curves, AUCs and notes over the committed units of run ``run_key`` (nothing written)."""
    from xcore.io.query import connect

    con = connect(run_dir, run_key)
    try:
        rows = unit_rows(con)
    finally:
        con.close()
    curve_rows = curves(rows)
    return {"run_key": run_key, "rule": rule, "curves": curve_rows, "auc": aucs(curve_rows, rule),
            "notes": notes(curve_rows, any(r.get("retrain") for r in rows)),
            "units_ok": sum(r.get("status") == "ok" for r in rows),
            "units_error": sum(r.get("status") != "ok" for r in rows)}


def write_report(run_dir: Path | str, run_key: str, rule: str = "trapezoid") -> dict[str, Any]:
    """:func:`analyse` -> ``analysis/roar_curves.parquet``, ``roar.json`` and ``roar.png``; returns it."""
    root = Path(run_dir) / "analysis"
    report = analyse(run_dir, run_key, rule)
    curve_rows = report["curves"]
    root.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("method", pa.string()), ("mode", pa.string()), ("fraction", pa.float64()),
                        ("mean", pa.float64()), ("std", pa.float64()), ("repeats", pa.int64())])
    write_atomic(pa.Table.from_pylist(curve_rows, schema=schema), root / "roar_curves.parquet", run_key=run_key,
                 shard_id=-1)
    with atomic_open(root / "roar.json", "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
    figure(curve_rows, root / "roar.png")
    return report


def figure(curve_rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy against the fraction t, one panel per mode, one line (± std) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({c["mode"] for c in curve_rows}) or ["roar"]
    fig, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.6), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for m in sorted({c["method"] for c in curve_rows if c["mode"] == mode}):
            pts = sorted((c for c in curve_rows if c["mode"] == mode and c["method"] == m), key=lambda c: c["fraction"])
            xs = [100 * p["fraction"] for p in pts]
            ax.errorbar(xs, [p["mean"] for p in pts], yerr=[p["std"] for p in pts], marker="o", capsize=3, label=m)
        ax.set(title=f"{mode.upper()} ({BETTER.get(mode, '')} is better)", xlabel="t (%)", ylabel="test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def blocks(curve_rows: list[dict[str, Any]], auc_rows: list[dict[str, Any]], note_lines: list[str]) -> list[Block]:
    """Per mode: a method × t table of mean accuracy with the AUC column; then the notes."""
    out: list[Block] = []
    auc = {(a["method"], a["mode"]): a["auc"] for a in auc_rows}
    for mode in sorted({c["mode"] for c in curve_rows}):
        fractions = sorted({c["fraction"] for c in curve_rows if c["mode"] == mode})
        mean = {(c["method"], c["fraction"]): c["mean"] for c in curve_rows if c["mode"] == mode}
        rows = [{"method": m, **{f"t={100 * t:g}": mean.get((m, t)) for t in fractions}, "AUC": auc.get((m, mode))}
                for m in sorted({c["method"] for c in curve_rows if c["mode"] == mode})]
        out.append(table(f"{mode.upper()} accuracy (AUC: {BETTER.get(mode, '')} is better)", rows))
    return [*out, *(f"note: {n}" for n in note_lines)]
