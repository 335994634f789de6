"""Visualisation: the only place maps are normalised (methods.md §0), plus heatmap overlays.

Explainers return signed raw maps; normalisation is a separate, recorded step chosen here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


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


def save_overlay(path: str | Path, image: np.ndarray, heatmap: Tensor, *, title: str = "", alpha: float = 0.5,
                 how: str = "minmax") -> Path:
    """Write a PNG of ``image`` (H, W, 3 in [0, 1]) under the normalised ``heatmap`` (H, W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = normalise(heatmap[None], how)[0].cpu().numpy()
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.imshow(image)
    ax.imshow(h, cmap="jet", alpha=alpha, vmin=-1 if how == "abs_max" else 0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
