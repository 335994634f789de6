"""Image baselines ``sobel``, ``noise`` and ``constant`` (Hartley, *An Investigation into Explanations for
Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.6.3 Table 3.4, §4.4.1 Table 4.1,
§5.4.2 Table 5.1).

- ``sobel``: edge magnitude ``sqrt(G_h² + G_w²)`` of the greyscale frame, with the unnormalised 3×3 Sobel kernels
  (``[1, 2, 1]ᵀ[−1, 0, 1]``) and edge-replicated borders; greyscale = ITU-R 601 luma
  ``0.299 R + 0.587 G + 0.114 B`` of the (normalised) input when C = 3, else the channel mean. Every leading
  spatial axis is a frame axis (T×H×W video: per frame). ``= 4·√2 · skimage.filters.sobel`` on a 2-D frame.
- ``noise``: i.i.d. ``U[0, 1)`` per location ("Random Noise", Tables 3.4/4.1); per frame for video.
- ``constant`` (AD/IIC): 0.9 everywhere except one location 1 and one other location 0; the two distinct flat
  (row-major) indices are drawn uniformly, the 1 first.
Seeding as for ``random``: sample ``i`` uses ``seeds[i]`` when given, else ``Generator(seed)`` in sample order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.base import register
from xcore.explain.baselines_distance import generators

LUMA = (0.299, 0.587, 0.114)


def greyscale(x: Tensor) -> Tensor:
    """(B, C, *S) → (B, *S): ITU-R 601 luma for 3 channels, else the channel mean."""
    if x.shape[1] == 3:
        w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).reshape(1, 3, *([1] * (x.ndim - 2)))
        return (x * w).sum(dim=1)
    return x.mean(dim=1)


@register("sobel")
def sobel(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """Sobel edge magnitude of the greyscale input, per 2-D frame (last two spatial axes)."""
    if x.ndim < 4:
        raise UsageError(f"sobel needs at least two spatial axes; got input of shape {tuple(x.shape)}")
    grey = greyscale(x.detach())
    frames = grey.reshape(-1, 1, *grey.shape[-2:])
    smooth = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    diff = torch.tensor([-1.0, 0.0, 1.0], device=x.device, dtype=x.dtype)
    kernels = torch.stack([torch.outer(diff, smooth), torch.outer(smooth, diff)])[:, None]  # ∂/∂h, ∂/∂w
    g = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(dim=1).sqrt().reshape(grey.shape)


@register("noise")
def noise(model: nn.Module, x: Tensor, target: Target, *, seed: int = 0,
          seeds: Sequence[int] | None = None) -> Tensor:
    """i.i.d. ``U[0, 1)`` map per sample, (B, *S) ("Random Noise", thesis Tables 3.4 and 4.1).

    Keyword parameters: ``seed`` = 0 and ``seeds`` = ``None``, as :func:`xcore.explain.baselines_distance.random`.
    """
    shape = tuple(x.shape[2:])
    maps = torch.stack([torch.rand(shape, generator=g) for g in generators(x.shape[0], seed, seeds)])
    return maps.to(device=x.device, dtype=torch.float32)


@register("constant")
def constant(model: nn.Module, x: Tensor, target: Target, *, seed: int = 0,
             seeds: Sequence[int] | None = None) -> Tensor:
    """0.9 everywhere, one random location 1 and another 0, (B, *S): the thesis's "Constant" baseline (§5.4.2, Table
    5.1), which shows that Average Drop / Increase in Confidence reward flat maps.

    Keyword parameters: ``seed`` = 0 and ``seeds`` = ``None``, as :func:`xcore.explain.baselines_distance.random`.
    """
    shape = tuple(x.shape[2:])
    size = 1
    for n in shape:
        size *= n
    if size < 2:
        raise UsageError(f"constant baseline needs at least two locations; got spatial shape {shape}")
    maps = torch.full((x.shape[0], size), 0.9)
    for i, g in enumerate(generators(x.shape[0], seed, seeds)):
        hi = int(torch.randint(size, (), generator=g))
        lo = int(torch.randint(size - 1, (), generator=g))
        lo += lo >= hi  # a different location
        maps[i, hi], maps[i, lo] = 1.0, 0.0
    return maps.reshape(x.shape[0], *shape).to(x.device)
