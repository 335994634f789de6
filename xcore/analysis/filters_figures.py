"""Figures of a filter_scores run (Hartley 2021, §6.2.2 Fig 6.5-style ranking curves; §6.3.2 Figs 6.8–6.10).

- ``filter_ranking.png``: normalised accuracy against the fraction of filters zeroed, one line per scorer.
- ``surprise.png``: per row one surprised sample — the image with a border around its top superpixel under the
  surprise-filtered vanilla gradient (SWAG with regular SLIC, 50 superpixels, §6.3.2) — then the reference images
  that most activate that filter (by mean activation over the whole reference split, §6.3.2; ``by="score"``: the
  highest primary-scorer scores of the sample's class, as the figure text does), each multiplied by its upsampled
  activation map of the filter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch

from xcore.analysis.blocks import Block
from xcore.io.atomic import atomic_open
from xcore.io.query import sql_list


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    _plt().close(fig)
    return path


def ranking_figure(ranking_parquet: Path, path: Path) -> Path:
    """Normalised accuracy vs fraction of filters zeroed (in rank order), one line per scorer."""
    import pyarrow.parquet as pq

    rows = pq.read_table(ranking_parquet).to_pylist()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for s in sorted({r["scorer"] for r in rows}):
        pts = sorted((r for r in rows if r["scorer"] == s), key=lambda r: r["step"])
        ax.plot([r["fraction"] for r in pts], [r["normalised"] for r in pts], marker=".", label=s)
    ax.set(xlabel="fraction of filters zeroed", ylabel="accuracy / unablated", title="filter ranking (lower AUC "
           "is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def top_images(files: list[Path], filt: int, n: int, *, by: str = "activation", label: int | None = None
               ) -> list[tuple[int, str, float]]:
    """The ``n`` reference samples (index, sample_id, value) with the largest mean activation of filter ``filt``
    (``by="score"``: largest score of the sample's class, among samples of ``label`` when given)."""
    col = "activation" if by == "activation" else "scores"
    where = "status = 'ok'" + (f" AND label = {int(label)}" if label is not None else "")
    paths = sql_list(files)
    sql = (f"SELECT index, sample_id, list_extract({col}, {int(filt) + 1}) AS v FROM read_parquet({paths}) "
           f"WHERE {where} ORDER BY v DESC, index LIMIT {int(n)}")
    with duckdb.connect() as con:
        return [(int(i), str(s), float(v)) for i, s, v in con.execute(sql).fetchall()]


def _rgb(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    from xcore.explain.superpixels import denormalise

    return np.asarray(denormalise(x.cpu(), mean, std))


def surprise_figure(job: Any, rows: list[dict[str, Any]], n_top: int, path: Path) -> Path:
    """``rows``: surprised samples (``index``, ``label``, ``pred``, ``most_surprising``) of this run; the context
    images come from the reference run's committed ``filter_scores`` of the same scorer."""
    from skimage.segmentation import find_boundaries

    from xcore.analysis.filters import scorer_files
    from xcore.core.context import capture
    from xcore.filters import primary_scorer
    from xcore.filters.suppression import surprise_superpixel
    from xcore.models import load_checkpoint

    cfg, meta = job.config, job.model_meta
    norm = (tuple(meta.get("mean") or (0.485, 0.456, 0.406)), tuple(meta.get("std") or (0.229, 0.224, 0.225)))
    model, _ = load_checkpoint(cfg["model"], "cpu")
    data, ref = job.open_dataset(), job.reference.open_dataset()
    ref_files = scorer_files(job.reference)[primary_scorer(job.scorers)]
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 1 + n_top, figsize=(2.2 * (1 + n_top), 2.4 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows, strict=True):
        x = data.load(r["index"]).x
        filt = int(r["most_surprising"])
        seg, top = surprise_superpixel(model, x, int(r["label"]), filt, layer=cfg["layer"], tap=cfg["tap"],
                                       mean=norm[0], std=norm[1])
        img = _rgb(x, *norm)
        img[find_boundaries(np.asarray(seg) == top, mode="thick")] = (1.0, 0.1, 0.1)
        ax_row[0].imshow(img)
        ax_row[0].set_title(f"#{r['index']} label {r['label']} pred {r['pred']}\nfilter {filt}", fontsize=7)
        for ax, (i, _sid, v) in zip(ax_row[1:], top_images(ref_files, filt, n_top), strict=False):
            xr = ref.load(i).x
            with torch.no_grad(), capture(model, cfg["layer"]) as store:
                model(xr[None])
            a = store["act"][0, filt].clamp(min=0)[None, None].float()
            a = torch.nn.functional.interpolate(a, size=xr.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            a = (a / a.max()).numpy() if float(a.max()) > 0 else a.numpy()
            ax.imshow(_rgb(xr, *norm) * a[..., None])
            ax.set_title(f"ref #{i} act {v:.2f}", fontsize=7)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def write_report(job: Any, methods: list[str] | None = None) -> list[Block]:
    """The figures (module docstring) and the report tables as blocks (``methods``: only these scorers)."""
    from xcore.analysis.filters import analyse, scorer_files, summary_blocks
    from xcore.filters import primary_scorer

    root = Path(job.run_dir) / "analysis"
    rep_path = root / "filters.json"
    report = json.loads(rep_path.read_text()) if rep_path.is_file() else analyse(job)
    keep = set(methods or job.scorers)
    report = {k: ([r for r in v if r.get("scorer") in keep] if isinstance(v, list) and v and
                  isinstance(v[0], dict) else v) for k, v in report.items()}
    figures = []
    if (root / "filter_ranking.parquet").is_file():
        figures.append(ranking_figure(root / "filter_ranking.parquet", root / "filter_ranking.png"))
    if job.reference is not None and job.config["top_images"]:
        files = scorer_files(job)[primary_scorer(job.scorers)]
        paths = sql_list(files)
        with duckdb.connect() as con:
            cur = con.execute(f"SELECT index, label, pred, most_surprising FROM read_parquet({paths}) WHERE "
                              "status = 'ok' AND most_surprising >= 0 ORDER BY (pred <> label) DESC, "
                              "n_surprising DESC, index LIMIT 4")
            rows = [dict(zip(["index", "label", "pred", "most_surprising"], r, strict=True)) for r in cur.fetchall()]
        if rows:
            figures.append(surprise_figure(job, rows, job.config["top_images"], root / "surprise.png"))
    return [*summary_blocks(report), *(f"figure: {p}" for p in figures)]
