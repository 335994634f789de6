"""Visualisation: the only place maps are normalised, plus heatmap overlays.

Explainers return signed raw maps; normalisation is a separate, recorded step chosen here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xcore.io.atomic import atomic_open


def normalise(maps: Tensor, how: str = "minmax", percentile: float = 99.0) -> Tensor:
    """Per-sample normalisation of (B, *S) maps.

    - ``minmax``: ``(S − min) / (max − min)``; a constant map becomes all 0.
    - ``abs_max``: ``S / max|S|`` (keeps the sign, in [−1, 1]).
    - ``percentile``: ``|S|`` clipped at its ``percentile``-th percentile, divided by it (saliency-style).
    """
    flat = maps.detach().float().flatten(1)
    if how == "minmax":
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        span = hi - lo
        out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1), torch.zeros_like(flat))
    elif how == "abs_max":
        m = flat.abs().amax(1, keepdim=True)
        out = flat / torch.where(m > 0, m, 1)
    elif how == "percentile":
        a = flat.abs()
        q = torch.quantile(a, percentile / 100, dim=1, keepdim=True)
        out = (a / torch.where(q > 0, q, 1)).clamp(max=1)
    else:
        raise ValueError(f"unknown normalisation {how!r}; use minmax, abs_max or percentile")
    return out.reshape(maps.shape)


def denormalise_image(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(C, H, W) normalised tensor → (H, W, C) float image in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype)[:, None, None]
    return (x.cpu() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (temp name + rename) and close it."""
    path = Path(path)
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    _pyplot().close(fig)
    return path


def save_overlay(path: str | Path, image: np.ndarray, heatmap: Tensor, *, title: str = "", alpha: float = 0.5,
                 how: str = "minmax") -> Path:
    """Write a PNG of ``image`` (H, W, 3 in [0, 1]) under the normalised ``heatmap`` (H, W)."""
    plt = _pyplot()
    h = normalise(heatmap[None], how)[0].cpu().numpy()
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.imshow(image)
    ax.imshow(h, cmap="jet", alpha=alpha, vmin=-1 if how == "abs_max" else 0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return _save(fig, path)


def save_joint_importance(path: str | Path, psi: np.ndarray, classes: Sequence[str],
                          joints: Sequence[str]) -> Path:
    """The ψ matrix (classes × joints, values in [0, 1]) as a heatmap PNG (as Das & Ortega's Fig. 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(0.32 * len(joints) + 2, 0.32 * len(classes) + 1.5), dpi=100)
    im = ax.imshow(np.nan_to_num(psi, nan=0.0), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(joints)), list(joints), rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), list(classes), fontsize=7)
    ax.set_title("joint importance ψ", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path)


def save_skeleton(path: str | Path, coords: np.ndarray, importance: np.ndarray, frames: Sequence[int],
                  edges: Sequence[tuple[int, int]], *, title: str = "") -> Path:
    """Skeleton drawings at ``frames``: bones from ``edges``, node size and colour by importance (Fig. 1).

    ``coords`` (T, V, 3) camera-space x, y, z of one person; ``importance`` (T, V), normalised here to [0, 1].
    """
    plt = _pyplot()
    imp = np.asarray(importance, dtype=np.float64)
    span = imp.max() - imp.min()
    imp = (imp - imp.min()) / span if span > 0 else np.zeros_like(imp)
    fig, axes = plt.subplots(1, len(frames), figsize=(2.2 * len(frames), 3), dpi=100, squeeze=False)
    for ax, t in zip(axes[0], frames, strict=True):
        xy = coords[t, :, :2]
        for a, b in edges:
            ax.plot(xy[[a, b], 0], xy[[a, b], 1], color="0.6", linewidth=1, zorder=1)
        ax.scatter(xy[:, 0], xy[:, 1], s=10 + 150 * imp[t], c=imp[t], cmap="Reds", vmin=0, vmax=1,
                   edgecolors="k", linewidths=0.3, zorder=2)
        ax.set_title(f"frame {t}", fontsize=7)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)
