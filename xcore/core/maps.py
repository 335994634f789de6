"""Map utilities shared by explainers and metrics: channel reduction, the grid a map explains, resizing.

Maps are (B, *S'): H'×W' for images, T'×H'×W' for clips, T'×V for skeletons. Nothing here normalises a map;
maps stay signed and raw until a visualiser normalises them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from xcore.errors import UsageError


def reduce_channels(g: Tensor, how: str = "max_abs") -> Tensor:
    """Reduce (B, C, *S) to (B, *S): ``max_c |g|`` (Simonyan, Vedaldi, Zisserman, *Deep Inside Convolutional
    Networks*, ICLR workshop 2014, §3.1; Hartley's PhD thesis, Cardiff 2021, §3.3 uses it for SWAG), or sum / mean /
    abs_sum / l2."""
    if how == "max_abs":
        return g.abs().amax(dim=1)
    if how == "sum":
        return g.sum(dim=1)
    if how == "mean":
        return g.mean(dim=1)
    if how == "abs_sum":
        return g.abs().sum(dim=1)
    if how == "l2":
        return g.pow(2).sum(dim=1).sqrt()
    raise UsageError(f"unknown channel reduction {how!r}; use max_abs, sum, mean, abs_sum or l2")


def map_grid(x: Tensor, maps: Tensor) -> tuple[int, ...]:
    """The input grid a (B, *S') map explains: the leading ``len(S')`` spatial dims of ``x`` (B, C, *S).

    Images and clips explain every spatial dim; a skeleton map (B, T, V) explains (T, V) of x (B, C, T, V, M),
    each cell covering all person slots.
    """
    return tuple(int(s) for s in x.shape[2 : 2 + maps.ndim - 1])


def resize_to(maps: Tensor, size: Sequence[int], mode: str = "linear") -> Tensor:
    """Resize (B, *S') maps to (B, *size): (bi-/tri)linear with ``align_corners=False``, or ``"nearest"``
    (nearest-exact: an integer down-sampling's cells are repeated)."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    if maps.ndim - 1 != len(size):
        raise ValueError(f"cannot resize a map of shape {tuple(maps.shape)} to {size}")
    if mode == "nearest":
        return torch.nn.functional.interpolate(maps[:, None].float(), size=size,
                                               mode="nearest-exact")[:, 0].to(maps.dtype)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode=mode,
                                           align_corners=False)[:, 0].to(maps.dtype)
