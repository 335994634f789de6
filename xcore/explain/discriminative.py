"""Discriminative spatial / temporal relevance (Hiley, Taylor, Preece, Hicks, Marshall, *Discriminating Spatial and
Temporal Relevance in Deep Taylor Decompositions for Explainable Activity Recognition*, §3.2, §4.4, §5).

For a clip ``x`` (B, C, T, H, W), the explained class ``c`` (fixed on the clean clip) and any registered base
method ``E`` (deep Taylor / LRP by default):

1. ``R_full = E(x, c)`` brought to the input grid T×H×W (the base method's own resize mode);
2. for each frame t the **freeze-frame clip** ``F_t`` = frame t repeated T times (§4.4: never zero padding, which
   would add false motion), explained for the *same* class c; ``R_spat[t] = E(F_t, c)[frame 0]``
   (``spatial_frame="first"``, the reference script liamhiley/torchexplain ``ucfcrime_d-dtd.py``) or the mean over
   the T identical frames (``"mean"``);
3. ``normalise="max_abs"`` (reference script): ``R_full`` and ``R_spat`` are each divided by their own max |·| over
   T×H×W per sample (a map that is all 0 stays 0); ``"none"`` keeps both raw;
4. ``R_temp = R_full − R_spat`` (§3.2, "spatial relevance subtracted from the original").

It is an approximation (§5): ``R_spat + R_temp`` need not sum to the original relevance. The model's prediction on
each freeze clip is recorded (§5 reports them) as the extras ``freeze_preds`` (argmax class, float) and
``freeze_scores`` (softmax probability of the explained class; for a callable target, that target's value).
Cost: T extra base explanations per clip (linear in T).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.maps import map_grid, resize_to
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._copies import resolve
from xcore.explain.base import METHODS, Explanation, Method, register

PARTS = ("temporal", "spatial", "full")


def freeze_clips(x: Tensor, frames: range) -> Tensor:
    """Freeze-frame clips of ``x`` (B, C, T, H, W): row ``j·B + b`` is frame ``frames[j]`` of sample ``b`` repeated
    T times (copy-major, matching :meth:`Target.tile`); shape (len(frames)·B, C, T, H, W)."""
    T = x.shape[2]
    picked = x[:, :, frames.start : frames.stop].transpose(1, 2)  # (B, k, C, H, W)
    clips = picked.transpose(0, 1).unsqueeze(3).expand(-1, -1, -1, T, -1, -1)  # (k, B, C, T, H, W)
    return clips.reshape(-1, *x.shape[1:])


def base_map(method: Method, model: nn.Module, x: Tensor, target: Target, params: dict[str, Any]) -> Tensor:
    """The base method's (primary) map of ``x`` at the input grid T×H×W, shape (B, T, H, W)."""
    out = method.fn(model, x, target, **params)
    maps = (out.map() if isinstance(out, Explanation) else out).detach()
    if maps.ndim != x.ndim - 1:
        raise UsageError(f"base method {method.name!r} gave a map of shape {tuple(maps.shape)}; "
                         f"discriminative needs one map per frame (B, T', H', W')")
    return resize_to(maps, map_grid(x, maps), method.resize_mode)


def max_abs_normalise(maps: Tensor) -> Tensor:
    """``maps / max|maps|`` per sample over all non-batch dims; an all-zero map stays 0."""
    peak = maps.abs().flatten(1).amax(dim=1).reshape(-1, *([1] * (maps.ndim - 1)))
    return maps / peak.masked_fill(peak == 0, 1.0)


@register("discriminative", extras=("freeze_preds", "freeze_scores"))
def discriminative(model: nn.Module, x: Tensor, target: Target, *, base: str = "lrp",
                   base_params: dict[str, Any] | None = None, normalise: str = "max_abs",
                   spatial_frame: str = "first", primary: str = "temporal", batch_size: int = 16) -> Explanation:
    """Full, spatial and temporal relevance maps (B, T, H, W) of the clips ``x`` (steps 1–4 above).

    The predicted class is fixed on the clean clip first, then every freeze clip is explained for that class; the
    B·T freeze clips are stacked frame-major. Returns ``Explanation(maps={primary, then the rest of temporal /
    spatial / full}, extras={"freeze_preds": (B, T), "freeze_scores": (B, T)})``.

    Keyword parameters (the defaults are the published ones):

    - ``base`` = ``"lrp"``: the relevance method E, any registered one; deep Taylor decomposition is the paper's
      (§4.3). Its map is resized to T×H×W with its own resize mode.
    - ``base_params`` = ``None``: parameters of ``base`` (its published defaults otherwise).
    - ``normalise`` = ``"max_abs"``: each map divided by its own max |·| before the subtraction, as the reference
      script does; ``"none"`` subtracts the raw maps.
    - ``spatial_frame`` = ``"first"``: ``R_spat[t]`` is frame 0 of the freeze clip's explanation (the reference
      script); ``"mean"``: the mean over its T identical frames.
    - ``primary`` = ``"temporal"``: which part is the primary map, the one metrics score — the paper's contribution
      is the temporal relevance (§3.2).
    - ``batch_size`` = 16: freeze clips explained per pass, at least one frame of every sample (16 = one C3D clip's
      frames); throughput only.
    """
    if base == "discriminative":
        raise UsageError("discriminative cannot use itself as base; pick a relevance method such as lrp")
    method = METHODS.get(base)
    if x.ndim != 5:
        raise UsageError(f"discriminative needs clips (B, C, T, H, W); got shape {tuple(x.shape)}")
    if normalise not in ("max_abs", "none"):
        raise UsageError(f"unknown normalise {normalise!r}; use max_abs or none")
    if spatial_frame not in ("first", "mean"):
        raise UsageError(f"unknown spatial_frame {spatial_frame!r}; use first or mean")
    if primary not in PARTS:
        raise UsageError(f"unknown primary part {primary!r}; use one of {', '.join(PARTS)}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    params = method.params(dict(base_params or {}))
    resolve(model, x, target)  # the clean clip's class, never a freeze clip's prediction
    full = base_map(method, model, x, target, params)

    B, T = x.shape[0], x.shape[2]
    spatial, preds, scores = [], [], []
    for start, stop in spans(T, B, batch_size):
        clips = freeze_clips(x, range(start, stop))
        tiled = target.tile(stop - start)
        with torch.no_grad():
            out = model(clips)
        preds.append(out.argmax(dim=1).reshape(stop - start, B))
        scores.append(tiled.select(out, softmax=True).detach().reshape(stop - start, B))
        maps = base_map(method, model, clips, tiled, params)  # (k·B, T, H, W)
        frame = maps[:, 0] if spatial_frame == "first" else maps.mean(dim=1)
        spatial.append(frame.reshape(stop - start, B, *frame.shape[1:]))
    spat = torch.cat(spatial).transpose(0, 1)  # (B, T, H, W)
    if normalise == "max_abs":
        full, spat = max_abs_normalise(full), max_abs_normalise(spat)
    parts = {"temporal": full - spat, "spatial": spat, "full": full}
    order = [primary] + [p for p in PARTS if p != primary]
    extras = {"freeze_preds": torch.cat(preds).transpose(0, 1).to(full.dtype),
              "freeze_scores": torch.cat(scores).transpose(0, 1).to(full.dtype)}
    return Explanation({p: parts[p] for p in order}, extras)
