"""RISE (Petsiuk, Das, Saenko, *RISE: Randomized Input Sampling for Explanation of Black-box Models*, BMVC 2018;
eclique/RISE ``explanations.py``; Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD
thesis, Cardiff University, 2021 — "thesis" — §2.2.2.4).

``S_c = (1/(N·p)) Σ_i s_c(x ⊙ M_i) · M_i`` with ``s_c = softmax(f(·))_c`` (``softmax=False``: the logit). Masks as
in ``generate_masks``: a binary s×s grid with ``P(cell = 1) = p``, upsampled linearly to ``(s + 1)·ceil(n/s)``
per axis (skimage ``resize(order=1, mode='reflect', anti_aliasing=False)``: pixel-centre sampling, mirror
boundary), randomly shifted by ``{0 .. ceil(n/s) − 1}`` per axis and cropped to the input, so ``M_i ∈ [0, 1]``;
for a T×H×W clip the grid is s×s×s. Defaults N = 4000, s = 8 (the thesis's VGG16 setting, §2.2.2.4, §3.2), p = 0.5 (a
project choice; the RISE notebooks use 0.1–0.5). Grids and
shifts come from ``torch.Generator().manual_seed(seed)`` and are shared by every sample; ``masks`` (N, *S)
replaces them. The ``/(N·p)`` factor is kept (``RISEBatch.forward`` omits it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.params import ignores, when_given
from xcore.core.targets import Target
from xcore.explain._copies import resolve, tiled_scores
from xcore.explain.base import register


def upsample_matrix(cells: int, size: int) -> Tensor:
    """(size, cells) linear-interpolation weights: pixel-centre sampling, mirror boundary (ndimage ``mirror``)."""
    src = (torch.arange(size, dtype=torch.float64) + 0.5) * cells / size - 0.5
    if cells > 1:
        src = src.abs()  # mirror about the first cell centre ...
        src = torch.where(src > cells - 1, 2 * (cells - 1) - src, src)  # ... and the last
    lo = src.floor().clamp(0, cells - 1)
    frac = src - lo
    w = torch.zeros(size, cells, dtype=torch.float64)
    rows = torch.arange(size)
    w[rows, lo.long()] += 1 - frac
    w[rows, (lo.long() + 1).clamp(max=cells - 1)] += frac
    return w


def rise_masks(grids: Tensor, shifts: Tensor, shape: Sequence[int]) -> Tensor:
    """Masks (k, *shape) from binary grids (k, s, …, s) and shifts (k, D): upsample, shift, crop."""
    out = grids.to(torch.float64)
    for d, n in enumerate(shape):
        s = grids.shape[d + 1]
        cell = math.ceil(n / s)
        full = upsample_matrix(s, (s + 1) * cell)  # (up, s)
        w = full[shifts[:, d, None] + torch.arange(n)]  # (k, n, s): the rows the crop keeps
        out = out.movedim(d + 1, -1)
        lead = out.shape[:-1]
        out = (out.reshape(out.shape[0], -1, s) @ w.transpose(1, 2)).reshape(*lead, n).movedim(-1, d + 1)
    return out


@register("rise")
@ignores(when_given("masks", ("n_masks", "cells", "seed")))
def rise(model: nn.Module, x: Tensor, target: Target, *, n_masks: int = 4000, cells: int = 8, p: float = 0.5,
         seed: int = 0, masks: Tensor | None = None, softmax: bool = True, batch_size: int = 32) -> Tensor:
    """RISE saliency (B, *S): score-weighted mean of the masks, normalised by ``N·p``.

    Keyword parameters (the defaults are the published ones):

    - ``n_masks`` = 4000: N, the number of masks (the thesis: 4,000 for VGG16, 8,000 for ResNet-50, §2.2.2.4).
    - ``cells`` = 8: s, the grid's cells per axis (the thesis's "8×8 boolean grids", §3.2).
    - ``p`` = 0.5: the probability that a cell is kept (a project choice); also the ``N·p`` normaliser.
    - ``seed`` = 0: seed of the CPU generator the grids and shifts come from.
    - ``masks`` = ``None``: explicit masks (N, *S) instead of generated ones; then ``n_masks``, ``cells`` and
      ``seed`` do nothing and must stay at their defaults (``p`` still normalises).
    - ``softmax`` = ``True``: weight the masks by ``softmax(y)_c`` (RISE's black-box probabilities); ``False``:
      by the logit.
    - ``batch_size`` = 32: masked copies per pass; throughput only.
    """
    x = x.detach()
    shape = tuple(x.shape[2:])
    if masks is None:
        gen = torch.Generator().manual_seed(int(seed))
        grids = torch.rand((int(n_masks), *[int(cells)] * len(shape)), generator=gen) < p
        cell = [math.ceil(n / cells) for n in shape]
        shifts = torch.stack([torch.randint(c, (int(n_masks),), generator=gen) for c in cell], dim=1)
        n = int(n_masks)
    else:
        if tuple(masks.shape[1:]) != shape:
            raise ValueError(f"masks of shape {tuple(masks.shape)} do not fit spatial shape {shape}")
        n = masks.shape[0]
    resolve(model, x, target, softmax=softmax)
    total = torch.zeros((x.shape[0], *shape), device=x.device, dtype=x.dtype)
    for start, stop in spans(n, x.shape[0], batch_size):
        if masks is None:
            m = rise_masks(grids[start:stop], shifts[start:stop], shape).to(device=x.device, dtype=x.dtype)
        else:
            m = masks[start:stop].to(device=x.device, dtype=x.dtype)
        s = tiled_scores(model, x[None] * m[:, None, None], target, softmax=softmax)  # (k, B)
        total += torch.einsum("kb,k...->b...", s, m)
    return total / (n * p)
