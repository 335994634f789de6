"""Occlusion (Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*, ECCV 2014; Hartley, *An
Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" —
§2.2.2.4; windows laid out as Captum's ``Occlusion``).

A window (all channels at once) slides over the input and is set to ``value`` (0 = dataset mean in normalised
space); each window's importance is the drop ``s(x) − s(x_occ)`` of the target score, and a pixel's map value is
the mean drop over the windows covering it. ``s = softmax(y)_c`` by default (the thesis records ``p_c``,
§2.2.2.4); ``softmax=False`` gives the logit drop (Captum's default output). Windows start at ``k·stride`` for
``k = 0 .. ceil((n − w)/stride)`` along each axis of length ``n`` and are cut at the far edge, so every pixel is
covered. Defaults window 32, stride 8 (project choices for 224² inputs: no xcore source runs occlusion, the thesis
only describes it); an int applies to every spatial axis and is clipped to the axis length (e.g. the 16 frames of a
clip).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.targets import Target
from xcore.explain._copies import clean_scores, tiled_scores
from xcore.explain.base import register


def per_axis(value: int | Sequence[int], shape: Sequence[int], name: str) -> list[int]:
    """``value`` for every spatial axis of ``shape`` (an int is repeated)."""
    vals = [int(value)] * len(shape) if isinstance(value, int) else [int(v) for v in value]
    if len(vals) != len(shape) or min(vals) < 1:
        raise ValueError(f"{name}={value!r} does not fit spatial shape {tuple(shape)}")
    return vals


def window_slices(shape: Sequence[int], window: int | Sequence[int], stride: int | Sequence[int]) -> list[tuple]:
    """Every window as a tuple of slices over ``shape``, in row-major order of their start positions."""
    wins = [min(w, n) for w, n in zip(per_axis(window, shape, "window"), shape, strict=True)]
    strides = per_axis(stride, shape, "stride")
    starts = [range(0, (math.ceil((n - w) / s) + 1) * s, s) for n, w, s in zip(shape, wins, strides, strict=True)]
    return [tuple(slice(a, a + w) for a, w in zip(pos, wins, strict=True)) for pos in itertools.product(*starts)]


@register("occlusion")
def occlusion(model: nn.Module, x: Tensor, target: Target, *, window: int | Sequence[int] = 32,
              stride: int | Sequence[int] = 8, value: float = 0.0, softmax: bool = True,
              batch_size: int = 32) -> Tensor:
    """Mean drop of the target score over the occluding windows covering each location, (B, *S).

    Keyword parameters (the defaults are the published ones):

    - ``window`` = 32: the occluding window's side per spatial axis (an int or one per axis; clipped to the axis),
      a project choice for 224² images.
    - ``stride`` = 8: the step between window starts (an int or one per axis), a project choice.
    - ``value`` = 0.0: what the window shows, in the model's input space: 0 = the dataset mean colour, the thesis's
      "set to 0" (§2.4.2.2, §3.5.1).
    - ``softmax`` = ``True``: the drop of ``softmax(y)_c`` (the thesis records ``p_c``, §2.2.2.4); ``False``: of the
      logit.
    - ``batch_size`` = 32: occluded copies per pass; throughput only.
    """
    x = x.detach()
    shape = x.shape[2:]
    slices = window_slices(shape, window, stride)
    clean = clean_scores(model, x, target, softmax=softmax)
    total = torch.zeros((x.shape[0], *shape), device=x.device, dtype=x.dtype)
    count = torch.zeros(shape, device=x.device, dtype=x.dtype)
    for start, stop in spans(len(slices), x.shape[0], batch_size):
        masks = torch.zeros((stop - start, *shape), device=x.device, dtype=torch.bool)
        for j, sl in enumerate(slices[start:stop]):
            masks[(j, *sl)] = True
        m = masks[:, None, None]  # (k, 1, 1, *S) over (k, B, C, *S)
        drops = clean[None] - tiled_scores(model, torch.where(m, value, x[None]), target, softmax=softmax)
        masks = masks.to(x.dtype)
        total += torch.einsum("kb,k...->b...", drops, masks)
        count += masks.sum(0)
    return total / count
