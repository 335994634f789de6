"""SWAG — Superpixels Weighted by Average Gradients (Hartley, *An Investigation into Explanations for Convolutional
Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.3–3.6).

1. Pixel scores ``M_ij = max_c |GB_ijc|`` from guided backprop (§3.3, §3.6.3), one batched backward pass; by
   default backpropagated from the target's softmax score (§3.6.3–3.6.4), ``softmax=False`` for the logit.
2. SLIC superpixels (:mod:`xcore.explain.superpixels`) on the image (SWAG_I), on M (SWAG_G) or on both
   (SWAG_{I+G}), eqs 3.4–3.6; computed on CPU, one image at a time.
3. Each superpixel ``R_i`` gets the pooled score of M inside it — the mean, eq 3.1, by default; the Table 3.6
   alternatives are selectable — and every pixel is painted with its superpixel's score.

2-D images (B, C, H, W) with C = 3 (RGB) or 1 (grey). The same steps on clips (B, C, T, H, W) with 3-D supervoxels
are SWAG-V (:mod:`xcore.explain.swag_v`, §4.3); both share :func:`superpixel_map`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from xcore.core.params import by_value, ignores
from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.base import register
from xcore.explain.guided_backprop import guided_backprop
from xcore.explain.superpixels import IGNORED_BY_VARIANT, VARIANTS, denormalise, segment

POOLINGS = ("mean", "min", "max", "l1", "l2", "var", "std", "sum")
#: SWAG / SWAG-V: the parameters the chosen ``superpixels`` variant ignores raise when set.
IGNORED_BY_SUPERPIXELS = by_value("superpixels", IGNORED_BY_VARIANT)


def pool_superpixels(scores: Tensor, segments: Tensor, pooling: str = "mean") -> Tensor:
    """Per-label pooled values (K,) of ``scores`` (M) over ``segments`` (same shape, labels 0..K-1); Table 3.6.

    ``mean`` = eq 3.1 ``E_i = (1/|R_i|) Σ_{j∈R_i} M_j``; ``sum`` = ``Σ M_j``; ``l1`` = ``Σ |M_j|``;
    ``l2`` = ``sqrt(Σ M_j²)``; ``var`` = ``(1/|R_i|) Σ (M_j − E_i)²`` (population); ``std`` = ``sqrt(var)``;
    ``min`` / ``max`` over the region. Labels with no pixel score 0. Runs on the scores' device.
    """
    if pooling not in POOLINGS:
        raise UsageError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    if scores.shape != segments.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and segments {tuple(segments.shape)} differ in shape")
    m = scores.reshape(-1)
    seg = segments.reshape(-1).to(device=scores.device, dtype=torch.long)
    if seg.numel() and int(seg.min()) < 0:
        raise ValueError("segment labels must be non-negative")
    k = int(seg.max()) + 1 if seg.numel() else 0
    zeros = torch.zeros(k, dtype=m.dtype, device=m.device)
    if pooling in ("min", "max"):
        return zeros.scatter_reduce(0, seg, m, reduce="amin" if pooling == "min" else "amax", include_self=False)
    if pooling == "l1":
        return zeros.index_add(0, seg, m.abs())
    if pooling == "l2":
        return zeros.index_add(0, seg, m * m).sqrt()
    total = zeros.index_add(0, seg, m)
    if pooling == "sum":
        return total
    count = torch.bincount(seg, minlength=k).to(m.dtype).clamp(min=1)
    mean = total / count
    if pooling == "mean":
        return mean
    var = zeros.index_add(0, seg, (m - mean[seg]) ** 2) / count  # two-pass: stable for small spreads
    return var if pooling == "var" else var.sqrt()


def paint_superpixels(scores: Tensor, segments: Tensor, pooling: str = "mean") -> Tensor:
    """Every pixel gets its superpixel's pooled score: ``pool_superpixels(scores, segments)[segments]``."""
    seg = segments.to(device=scores.device, dtype=torch.long)
    return pool_superpixels(scores, seg, pooling)[seg]


def swag_segments(x: Tensor, scores: Tensor | None, *, superpixels: str = "both", n_segments: int = 300,
                  compactness: float = 10.0, w_c: float = 20.0, w_g: float = 9.0,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  bgr: bool = False) -> Tensor:
    """SWAG's superpixels for a batch (B, C, *S): a (B, *S) long tensor of labels 0..K_b-1 on CPU.

    S = (H, W) images (superpixels) or (T, H, W) clips (SWAG-V's 3-D supervoxels, §4.3). ``scores`` = M (B, *S) is
    needed for ``"gradient"`` / ``"both"``; ``x`` is de-normalised with ``mean`` / ``std`` ([0, 1] units; ``bgr``:
    channels reversed to RGB) for the image features.
    Each image / clip is segmented separately on CPU.
    """
    if superpixels not in VARIANTS:
        raise UsageError(f"unknown superpixels {superpixels!r}; use one of {', '.join(VARIANTS)}")
    if x.ndim not in (4, 5):
        raise UsageError(f"superpixels need images (B, C, H, W) or clips (B, C, T, H, W); got shape {tuple(x.shape)}")
    if superpixels != "image" and scores is None:
        raise UsageError(f"superpixels={superpixels!r} needs the pixel scores M")
    m_np = None if scores is None else scores.detach().cpu().double().numpy()
    out = []
    for b in range(x.shape[0]):
        rgb = denormalise(x[b], mean, std, bgr) if superpixels != "gradient" else None
        mb = None if m_np is None else m_np[b]
        out.append(torch.from_numpy(np.ascontiguousarray(
            segment(superpixels, rgb, mb, n_segments=n_segments, compactness=compactness, w_c=w_c, w_g=w_g),
            dtype=np.int64)))
    return torch.stack(out)


def superpixel_map(model: nn.Module, x: Tensor, target: Target, *, superpixels: str, n_segments: int, pooling: str,
                   compactness: float, w_c: float, w_g: float, softmax: bool, mean: Sequence[float],
                   std: Sequence[float], bgr: bool = False) -> Tensor:
    """SWAG / SWAG-V map (B, *S) for x (B, C, *S): ``M = max_c |GB|`` (one batched guided backward), SLIC superpixels
    of every sample (:func:`swag_segments`), each painted with the pooled M of its superpixel (eq 3.1)."""
    if pooling not in POOLINGS:
        raise UsageError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    M = guided_backprop(model, x, target, reduce="max_abs", softmax=softmax).detach()  # (B, *S), batched
    segs = swag_segments(x, M, superpixels=superpixels, n_segments=n_segments, compactness=compactness,
                         w_c=w_c, w_g=w_g, mean=mean, std=std, bgr=bgr).to(M.device)
    k = int(segs.reshape(segs.shape[0], -1).amax(dim=1).max()) + 1
    offset = torch.arange(segs.shape[0], device=M.device).view(-1, *([1] * (segs.ndim - 1))) * k  # disjoint labels
    return paint_superpixels(M, segs + offset, pooling)


@register("swag")
@ignores(IGNORED_BY_SUPERPIXELS)
def swag(model: nn.Module, x: Tensor, target: Target, *, superpixels: str = "both", n_segments: int = 300,
         pooling: str = "mean", compactness: float = 10.0, w_c: float = 20.0, w_g: float = 9.0,
         softmax: bool = True, mean: Sequence[float] = IMAGENET_MEAN,
         std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """SWAG map (B, H, W): guided-backprop scores pooled over SLIC superpixels (§3.3, eq 3.1). Non-negative
    (M ≥ 0), so "signed" is trivially positive. A parameter the chosen variant ignores must stay at its default
    (:data:`xcore.explain.superpixels.IGNORED_BY_VARIANT`).

    Keyword parameters (the defaults are the published ones):

    - ``superpixels`` = ``"both"``: ``"image"`` (SWAG_I, eq 3.4), ``"gradient"`` (SWAG_G, eq 3.6) or ``"both"``
      (SWAG_{I+G}, eq 3.5), the variant whose weights the thesis tunes (§3.6.6); SWAG_G deletes best in Table 3.7.
    - ``n_segments`` = 300: SLIC's superpixel count K (§3.6.2, final choice §3.6.7).
    - ``pooling`` = ``"mean"``: the per-superpixel pooling of M, eq 3.1; the Table 3.6 alternatives are in
      :data:`POOLINGS` (mean scored best, §3.6.5).
    - ``compactness`` = 10.0: the single weight of ``"image"`` (``w_c``) and ``"gradient"`` (``w_g``):
      scikit-image SLIC's default, which the thesis keeps (§3.4.1, §3.6.1).
    - ``w_c`` = 20.0, ``w_g`` = 9.0: the colour and gradient weights of ``"both"``: SWAG-V's final values (§4.4.4);
      the image chapter gives no final values (§3.6.6, Fig. 3.9 only).
    - ``softmax`` = ``True``: guided backprop from the target's softmax score (§3.6.3–3.6.4); ``False``: the logit.
    - ``mean`` / ``std`` = ImageNet's (torchvision's normalisation): undone, in [0, 1] units, for the image
      features (not used by ``"gradient"``).
    """
    if x.ndim != 4:
        raise UsageError(f"SWAG takes 2-D images (B, C, H, W); got shape {tuple(x.shape)} (use swag_v for clips)")
    return superpixel_map(model, x, target, superpixels=superpixels, n_segments=n_segments, pooling=pooling,
                          compactness=compactness, w_c=w_c, w_g=w_g, softmax=softmax, mean=mean, std=std)
