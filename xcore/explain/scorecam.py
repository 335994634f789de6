"""Score-CAM (Wang et al., CVPR workshops 2020; Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §2.2.2.3) in three variants, never mixed.

For each channel k, ``A^k`` is upsampled to the input's spatial size and min–max scaled to a mask ``M^k ∈ [0, 1]``;
the masked input ``x ⊙ M^k`` (normalised space: 0 = mean colour) is scored for the clean input's target.

- ``"official"`` (default; haofanwang/Score-CAM ``cam/scorecam.py``): bilinear / trilinear upsampling with
  ``align_corners=False``; constant channels are skipped (weight 0, no forward); ``s_k = softmax(f(x ⊙ M^k))_c``;
  ``CAM = ReLU(Σ_k s_k · upsample(A^k))`` at **input resolution** (formed as ``upsample(Σ_k s_k A^k)``, equal by
  linearity of the interpolation). The official code's final min–max is a separate normalisation step.
- ``"paper_v2"``: as official, then a softmax **over channels** of the ``s_k`` (skipped channels excluded); the
  black-baseline subtraction of the paper is a constant per sample and dropped.
- ``"pytorch_grad_cam"`` (jacobgil/pytorch-grad-cam ``score_cam.py``): ``align_corners=True`` upsampling, masks
  ``(U − min)/(max − min + 1e-8)`` with no skipping, raw scores (logits for a class target), softmax over channels,
  CAM formed at the **layer's resolution**.

Cost: K·B forwards of the full network (K = 512 for ResNet-18, 2,048 for ResNet-50), ``batch_size`` at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.layers import default_layer
from xcore.core.maps import resize_to
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._cam import as_channel_weights, clean_forward, pair_scores
from xcore.explain.base import register
from xcore.explain.gradcam import weighted_sum

VARIANTS = ("official", "paper_v2", "pytorch_grad_cam")
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def score_masks(maps: Tensor, size: tuple[int, ...], variant: str) -> tuple[Tensor, Tensor]:
    """Masks (n, 1, *size) in [0, 1] from channel maps (n, *S'), and which maps are constant (n,) after upsampling."""
    up = F.interpolate(maps[:, None].float(), size=size, mode=_MODES[maps.ndim - 1],
                       align_corners=variant == "pytorch_grad_cam")
    flat = up.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    const = hi == lo
    span = hi - lo + 1e-8 if variant == "pytorch_grad_cam" else torch.where(const, torch.ones_like(hi), hi - lo)
    shape = (-1, *([1] * (up.ndim - 1)))
    return (up - lo.view(shape)) / span.view(shape), const


@register("scorecam")
def scorecam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, variant: str = "official",
             batch_size: int = 32, relu: bool = True) -> Tensor:
    """Score-CAM map: (B, *x.shape[2:]) for the official / paper_v2 variants, (B, *S') for pytorch_grad_cam.

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the CAM layer, as :func:`xcore.explain.gradcam.gradcam` (default: the final conv
      block).
    - ``variant`` = ``"official"``: one of :data:`VARIANTS` (above); the default is the authors' released code,
      which is also what the thesis describes ("softmax score for each activation map / image combination … used
      as the weights", §2.2.2.3).
    - ``batch_size`` = 32: masked inputs per forward pass (the thesis batches Score-CAM at 32, §5.4.5); throughput
      only.
    - ``relu`` = ``True``: the outer ReLU of the CAM.
    """
    if variant not in VARIANTS:
        raise UsageError(f"unknown Score-CAM variant {variant!r}; use one of {', '.join(VARIANTS)}")
    raw = variant == "pytorch_grad_cam"  # raw target scores; otherwise softmax over classes
    act, out, _ = clean_forward(model, x, target, layer or default_layer(model), softmax=not raw)
    if act.ndim != x.ndim:
        raise UsageError(f"Score-CAM needs a layer with the input's spatial rank; got activation {tuple(act.shape)} "
                         f"for input {tuple(x.shape)}")
    size = tuple(x.shape[2:])
    skipped: list[Tensor] = []

    def run(ks: Tensor, bs: Tensor) -> Tensor:
        masks, const = score_masks(act[bs, ks], size, variant)
        keep = torch.ones_like(const) if raw else ~const
        skipped.append(~keep)
        res = out.new_zeros((len(bs), *out.shape[1:]))
        if keep.any():
            res[keep] = model(x[bs[keep]] * masks[keep].to(x.dtype)).to(res.dtype)
        return res

    scores = pair_scores(target, out, act.shape[1], run, batch_size, softmax=not raw)  # (B, K)
    skip = torch.cat(skipped).reshape(act.shape[1], act.shape[0]).T
    if variant == "official":
        weights = scores.masked_fill(skip, 0.0)
    else:
        weights = scores.masked_fill(skip, float("-inf")).softmax(dim=1).nan_to_num(0.0)
    cam = weighted_sum(as_channel_weights(weights, act).to(act.dtype), act, relu=False)
    if not raw:
        cam = resize_to(cam, size)
    return cam.clamp(min=0) if relu else cam
