"""Figures of ``xai report``, as encoded bytes: the mean deletion / insertion curves (PNG, matplotlib Agg) and the
overlay grid — the same samples under every method's map (PNG per image, animated GIF per clip).

Maps are stored raw and signed (``explanations``, :func:`xcore.io.parquet.decode_heatmap`); they are normalised
here, for display only, by :func:`xcore.viz.normalise` (``minmax`` per map: ``(S − min) / (max − min)``). The images
come from the run's dataset, reopened through the run's own job config (:func:`xcore.pipeline.open_job`), and are
mapped back to [0, 1] with the reader's transform: ``v = (x · std + mean) / (255 · scale)`` per channel (``scale``
1 for image transforms; a BGR preset is flipped back to RGB).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xcore.io.parquet import decode_heatmap
from xcore.viz import normalise

CURVES = ("deletion", "insertion")
IMAGE_SIDE = 128  # pixels of one grid cell (the longer side)
CLIP_SIDE = 96  # pixels of one clip cell
MAX_FRAMES = 16  # frames per clip GIF
FRAME_MS = 120  # ms per GIF frame


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _columns(con: duckdb.DuckDBPyConnection, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def fractions(n_locations: int | None, steps: int) -> np.ndarray:
    """The x-positions of a deletion / insertion curve of ``steps + 1`` points: the changed fraction
    ``k_i / P`` with ``k_i = min(i · ceil(P / n), P)`` (:func:`xcore.metrics.deletion_insertion.step_counts`; thesis
    §3.5.1); evenly spaced on [0, 1] when the number of ranked locations ``P`` is unknown."""
    if not n_locations:
        return np.linspace(0.0, 1.0, steps + 1)
    from xcore.metrics.deletion_insertion import step_counts

    return step_counts(n_locations, steps).double().numpy() / n_locations


def mean_curves(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, np.ndarray]]:
    """Per method: the pointwise mean of each ``<curve>_curve`` list (``deletion`` / ``insertion``) over the
    ``status = 'ok'`` rows of the ``metrics`` view, ``c̄[i] = (1/n) Σ_s c_s[i]`` (curves of the most common length),
    and their ``fractions`` (:func:`fractions`, P = the cells of the method's stored maps). The trapezoid area of
    ``c̄`` over ``fractions`` is the mean AUC of ``xai summary``. Empty when the run has no curve columns."""
    cols = _columns(con, "metrics")
    cells: dict[str, int] = {}
    if {"shape", "method"} <= _columns(con, "explanations"):
        for method, shape in con.execute("SELECT method, any_value(shape) FROM explanations GROUP BY method"
                                         ).fetchall():
            cells[method] = int(np.prod(shape)) if shape else 0
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind in CURVES:
        if f"{kind}_curve" not in cols:
            continue
        got: dict[str, list[list[float]]] = {}
        for method, curve in con.execute(f"SELECT method, {kind}_curve FROM metrics WHERE status = 'ok' AND "
                                         f"{kind}_curve IS NOT NULL ORDER BY method, index").fetchall():
            got.setdefault(method, []).append(curve)
        for method, curves in got.items():
            lengths = [len(c) for c in curves]
            common = max(set(lengths), key=lambda n: (lengths.count(n), n))
            if common < 2:
                continue
            stacked = np.asarray([c for c in curves if len(c) == common], dtype=np.float64)
            entry = out.setdefault(method, {"fractions": fractions(cells.get(method), common - 1)})
            entry[kind] = stacked.mean(axis=0)
    return out


def curves_png(curves: dict[str, dict[str, np.ndarray]]) -> bytes | None:
    """One PNG: a panel per curve kind, one line per method over the changed fraction of locations
    (:func:`mean_curves`); ``None`` without curves."""
    kinds = [k for k in CURVES if any(k in c for c in curves.values())]
    if not kinds:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.3), dpi=100, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for method in sorted(curves):
            y = curves[method].get(kind)
            if y is not None:
                ax.plot(curves[method]["fractions"], y, label=method, linewidth=1.4)
        ax.set_title(f"mean {kind} curve", fontsize=10)
        ax.set_xlabel(f"fraction of locations {'removed' if kind == 'deletion' else 'inserted'}", fontsize=8)
        ax.set_ylabel("softmax score of the explained class", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def display_images(x: Tensor, transform: Any = None) -> np.ndarray:
    """Normalised inputs (N, C, *S) -> (N, *S, 3) float images in [0, 1]: ``(x · std + mean) / (255 · scale)``
    with the transform's ``mean`` / ``std`` / ``scale`` (BGR flipped to RGB); without them each sample is
    min-max scaled. One channel is repeated to three."""
    x = x.detach().float()
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    if mean is not None and std is not None and len(mean) == x.shape[1]:
        v = x * torch.tensor(std, dtype=x.dtype).view(shape) + torch.tensor(mean, dtype=x.dtype).view(shape)
        v = v / (255.0 * float(getattr(transform, "scale", 1.0 / 255.0)))
        if getattr(transform, "bgr", False):
            v = v.flip(1)
    else:
        v = normalise(x, "minmax")
    v = v.clamp(0, 1)
    if v.shape[1] == 1:
        v = v.expand(-1, 3, *v.shape[2:])
    return v[:, :3].movedim(1, -1).numpy()


def colourise(maps: np.ndarray) -> np.ndarray:
    """Maps in [0, 1] (any shape) -> the ``jet`` colours (…, 3)."""
    import matplotlib

    return np.asarray(matplotlib.colormaps["jet"](np.clip(maps, 0, 1))[..., :3], dtype=np.float32)


def fit_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """(N, *S) maps resized to (N, *size) (bilinear / trilinear) when their shape differs from the image's."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    if maps.dim() - 1 != len(size):  # e.g. a (T,) map of a clip: broadcast over the missing trailing dims
        maps = maps.reshape(*maps.shape, *([1] * (len(size) - maps.dim() + 1)))
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode=mode, align_corners=False)[:, 0]


def overlay(images: np.ndarray, maps: Tensor, alpha: float = 0.5) -> np.ndarray:
    """Images (N, *S, 3) under their maps (N, *S), each normalised to [0, 1] (:func:`xcore.viz.normalise`,
    ``minmax``): ``(1 − α) · image + α · jet(map)``."""
    unit = normalise(fit_maps(maps, images.shape[1:-1]), "minmax").numpy()
    return (1 - alpha) * images + alpha * colourise(unit)


def _u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def _resized(frame: np.ndarray, side: int) -> Any:
    from PIL import Image

    im = Image.fromarray(_u8(frame))
    scale = side / max(im.size)
    size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
    return im.resize(size, Image.Resampling.BILINEAR) if size != im.size else im


def png(image: np.ndarray, side: int = IMAGE_SIDE) -> bytes:
    """An (H, W, 3) image in [0, 1] as PNG bytes, its longer side ``side`` pixels."""
    buf = io.BytesIO()
    _resized(image, side).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def gif(frames: np.ndarray, side: int = CLIP_SIDE, max_frames: int = MAX_FRAMES) -> bytes:
    """(T, H, W, 3) frames in [0, 1] as a looping animated GIF of at most ``max_frames`` evenly spaced frames."""
    from PIL import Image

    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int))
    ims = [_resized(frames[i], side).convert("P", palette=Image.Palette.ADAPTIVE, colors=128) for i in idx]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=FRAME_MS, loop=0)
    return buf.getvalue()


@dataclass
class Grid:
    """Rows = samples, columns = the input then each (method, part) map over it; ``cells[r][c]`` encoded bytes."""

    columns: list[str]
    rows: list[dict[str, Any]]
    cells: list[list[bytes]] = field(default_factory=list)
    mime: str = "image/png"


def grid_samples(con: duckdb.DuckDBPyConnection, n: int) -> list[int]:
    """The first ``n`` sample indices (by index) that have a committed map of every (method, part) of the run."""
    if n <= 0 or not {"index", "heatmap", "part"} <= _columns(con, "explanations"):
        return []
    sql = ("SELECT index FROM explanations GROUP BY index HAVING count(DISTINCT (method, part)) = "
           "(SELECT count(*) FROM (SELECT DISTINCT method, part FROM explanations)) ORDER BY index LIMIT ?")
    return [int(r[0]) for r in con.execute(sql, [n]).fetchall()]


def overlay_grid(run_dir: Path | str, info: dict[str, Any], con: duckdb.DuckDBPyConnection,
                 samples: int) -> Grid | str | None:
    """The overlay grid of an explain run over its first ``samples`` committed samples: PNGs for images,
    animated GIFs for clips (x of shape (C, T, H, W)). ``None`` when there is nothing to draw (no maps, a skeleton
    run); a one-line note (str) when the dataset cannot be reopened."""
    from xcore.errors import UsageError
    from xcore.pipeline import open_job

    indices = grid_samples(con, samples)
    if not indices or (info.get("resolved") or {}).get("modality") == "skeleton":
        return None
    config = info.get("config")
    if not config:
        return "no overlays: run.json holds no config to reopen the dataset with"
    run = Path(run_dir)
    try:
        job = open_job(info.get("kind") or "explain", {**config, "run_id": run.name, "out": str(run.parent)})
        dataset = job.open_dataset()  # type: ignore[attr-defined]
        loaded = [dataset.load(i) for i in indices]
    except (UsageError, OSError, RuntimeError, ValueError, KeyError, IndexError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        return f"no overlays: the run's dataset could not be reopened ({reason})"
    transform = (getattr(job, "reader_kwargs", None) or {}).get("transform")
    x = torch.stack([s.x for s in loaded])
    images = display_images(x, transform)
    rows = con.execute("SELECT index, method, part, heatmap, scale, shape, dtype FROM explanations WHERE index IN "
                       f"({', '.join(map(str, indices))}) ORDER BY method, part, index").fetchall()
    maps: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for index, method, part, heatmap, scale, shape, dtype in rows:
        maps.setdefault((method, part), {})[int(index)] = decode_heatmap(
            {"heatmap": heatmap, "scale": scale, "shape": shape, "dtype": dtype})
    preds = dict(con.execute("SELECT index, any_value(pred) FROM explanations WHERE index IN "
                             f"({', '.join(map(str, indices))}) GROUP BY index").fetchall())
    keys = sorted(maps, key=lambda k: (k[0], k[1] != "map", k[1]))
    names = [m if p == "map" else f"{m} · {p}" for m, p in keys]
    overlays = [overlay(images, torch.from_numpy(np.stack([maps[k][i] for i in indices]))) for k in keys]
    clip = images.ndim == 5
    encode = gif if clip else png
    names_of = ((info.get("resolved") or {}).get("model") or {}).get("class_names")
    classes = [str(c).split(",")[0] for c in names_of or getattr(dataset, "classes", None) or []]
    grid = Grid(["input", *names], [], mime="image/gif" if clip else "image/png")
    def name(c: Any) -> Any:
        return classes[c] if isinstance(c, int) and 0 <= c < len(classes) else c

    for r, (index, sample) in enumerate(zip(indices, loaded, strict=True)):
        grid.rows.append({"index": index, "sample_id": sample.sample_id, "label": name(sample.label),
                          "pred": name(preds.get(index))})
        grid.cells.append([encode(images[r]), *(encode(o[r]) for o in overlays)])
    return grid
