"""SWAG-V — SWAG on video with 3-D SLIC supervoxels (Hartley, *An Investigation into Explanations for Convolutional
Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §4.3–4.4).

The image method (:mod:`xcore.explain.swag`, §3.3–3.6) applied to a clip (B, C, T, H, W):

1. ``M(t, y, x) = max_c |GB_c(t, y, x)|``: guided backprop per voxel, backpropagated from the target's softmax score
   as in SWAG (§3.6.3; ``softmax=False`` for the logit); one batched backward pass.
2. Supervoxels: scikit-image ``slic`` on the clip volume (T, H, W, C) (:mod:`xcore.explain.superpixels`), variants
   SWAG-V_I (``"image"``, eq 3.4 in 3-D, ``w_c = compactness``), SWAG-V_G (``"gradient"``, eq 3.6, ``g`` = M min–max
   scaled to [0, 100] over the whole clip, ``w_g = compactness``) and SWAG-V_{I+G} (``"both"``, eq 3.5,
   ``D' = sqrt((d_c/w_c)² + (d_s/w_s)² + (d_g/w_g)²)`` with d_s over (t, y, x)).
3. Mean pooling (eq 3.1) per supervoxel, every voxel painted with its supervoxel's score.

Final parameters (§4.4.4, chosen on Kinetics-400 with R(2+1)D): guided backprop, ``K = 120`` supervoxels,
``w_c = 20``, ``w_g = 9``; ``compactness = 10`` (SLIC's default) for the single-feature variants (unverified for
video). The colour features need the clip's true RGB: ``mean`` / ``std`` ([0, 1] units, the input's channel order)
undo the input normalisation; when both are ``None`` (default) they come from the model's preset
(``model.xcore_preset``, set by the video models and by checkpoints that record one; else torchvision's Kinetics
normalisation of R3D / MC3 / R(2+1)D), so C3D's BGR, mean-only 0..255 input is handled too.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from xcore.core.params import ignores
from xcore.core.presets import preset
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.base import register
from xcore.explain.swag import IGNORED_BY_SUPERPIXELS, superpixel_map


@register("swag_v")
@ignores(IGNORED_BY_SUPERPIXELS)
def swag_v(model: nn.Module, x: Tensor, target: Target, *, superpixels: str = "both", n_segments: int = 120,
           pooling: str = "mean", compactness: float = 10.0, w_c: float = 20.0, w_g: float = 9.0,
           softmax: bool = True, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None) -> Tensor:
    """SWAG-V map (B, T, H, W): per-voxel guided-backprop scores mean-pooled over 3-D SLIC supervoxels (§4.3).
    Non-negative (M ≥ 0). A parameter the chosen variant ignores must stay at its default.

    Keyword parameters (the defaults are the published ones; as :func:`xcore.explain.swag.swag` otherwise):

    - ``superpixels`` = ``"both"``: SWAG-V_I (``"image"``), SWAG-V_G (``"gradient"``) or SWAG-V_{I+G}
      (``"both"``, the variant §4.4 tunes).
    - ``n_segments`` = 120: the supervoxel count K (§4.4.3–4.4.4: the minimum of deletion + (1 − insertion)).
    - ``pooling`` = ``"mean"``: eq 3.1 per supervoxel.
    - ``compactness`` = 10.0: the weight of the single-feature variants (SLIC's default; not tuned for video).
    - ``w_c`` = 20.0, ``w_g`` = 9.0: the eq 3.5 weights of ``"both"``, the final values of §4.4.2 and §4.4.4.
    - ``softmax`` = ``True``: guided backprop from the softmax score, as SWAG (§3.6.3); ``False``: the logit.
    - ``mean`` / ``std`` = ``None``: the clip normalisation in [0, 1] units; ``None`` (both) = the model's preset
      (see above). Not used by ``"gradient"``.
    """
    if x.ndim != 5:
        raise UsageError(f"SWAG-V takes clips (B, C, T, H, W); got shape {tuple(x.shape)} (use swag for images)")
    bgr = False
    if mean is None and std is None:
        mean, std, bgr = preset_rgb(getattr(model, "xcore_preset", None) or "kinetics")
    elif mean is None or std is None:
        raise UsageError("give both mean= and std= ([0, 1] units), or neither (the model's preset)")
    return superpixel_map(model, x, target, superpixels=superpixels, n_segments=n_segments, pooling=pooling,
                          compactness=compactness, w_c=w_c, w_g=w_g, softmax=softmax, mean=mean, std=std, bgr=bgr)


def preset_rgb(name: str) -> tuple[list[float], list[float], bool]:
    """(mean, std, bgr) in [0, 1] units that map a clip normalised with preset ``name`` back to pixels."""
    p = preset(name)
    mean, std = p.pixel_mean_std()
    return mean, std, p.bgr
