"""Distance baselines ``centre`` and ``random`` (Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — the "Centre" and "Random" rows of Tables 3.7, 3.10, 4.2,
4.3, 5.2 and 5.3).

``S = 1 − d / max(d)`` with ``d`` the Euclidean distance of every spatial location (pixel, voxel, joint×frame)
to a point: the centre of the input for ``centre``; a uniformly drawn location for ``random`` (the "Random"
rows of the thesis' tables). Nearer = more important. ``random`` is seeded: sample ``i`` of a batch uses
``seeds[i]`` when given (stable per sample across shardings), else draws from ``Generator(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xcore.core.targets import Target
from xcore.explain.base import register


def distance_map(points: Tensor, shape: Sequence[int]) -> Tensor:
    """``1 − d/max(d)`` for each point (B, D) over a grid of ``shape`` (D dims) → (B, *shape)."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=points.dtype, device=points.device) for n in shape],
                           indexing="ij")
    coords = torch.stack(grids, dim=-1)  # (*shape, D)
    d = (coords[None] - points.reshape(points.shape[0], *([1] * len(shape)), len(shape))).pow(2).sum(-1).sqrt()
    dmax = d.flatten(1).amax(dim=1).clamp(min=torch.finfo(d.dtype).tiny)
    return 1 - d / dmax.reshape(-1, *([1] * len(shape)))


def generators(batch: int, seed: int, seeds: Sequence[int] | None) -> list[torch.Generator]:
    """One CPU generator per sample: ``Generator(seeds[i])`` when given, else one ``Generator(seed)`` shared
    (drawn from in sample order)."""
    if seeds is not None:
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}")
        return [torch.Generator().manual_seed(int(s)) for s in seeds]
    g = torch.Generator().manual_seed(int(seed))
    return [g] * batch


@register("centre")
def centre(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """Distance-to-centre baseline; the centre of an n-long axis is (n − 1)/2."""
    shape = x.shape[2:]
    point = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float32, device=x.device)
    return distance_map(point.expand(x.shape[0], -1), shape)


@register("random")
def random(model: nn.Module, x: Tensor, target: Target, *, seed: int = 0,
           seeds: Sequence[int] | None = None) -> Tensor:
    """Distance to a uniformly drawn location (one per sample), (B, *S).

    Keyword parameters (the defaults are the published ones):

    - ``seed`` = 0: seed of the one CPU generator the samples draw from in batch order when ``seeds`` is not
      given; the pipeline derives ``seeds`` from it per sample (``stable_seed`` of
      :mod:`xcore.pipeline.explain_worker`).
    - ``seeds`` = ``None``: one seed per sample of the batch, so a sample's map does not depend on its batch or
      shard.
    """
    shape = x.shape[2:]
    gens = generators(x.shape[0], seed, seeds)
    pts = torch.stack([torch.stack([torch.randint(n, (), generator=gen) for n in shape]) for gen in gens])
    return distance_map(pts.to(device=x.device, dtype=torch.float32), shape)
