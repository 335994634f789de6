"""Weak localisation from thresholded maps (Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.5.3, §4.5.3, §5.4.4).

For every α of three threshold families (ruthcfong/perturb_explanations ``heatmaps.py::getbb_from_heatmap``), a
pixel of the map ``h`` *survives* when it passes the family's test — pixels below the threshold are set to 0 with
a strict ``<``, so a pixel equal to the threshold survives — and is positive:

=========  ============================================================  ===================
family     passes                                                        default α grid
=========  ============================================================  ===================
Val        ``h − min(h) ≥ α (max(h) − min(h))``                          0, 0.05, …, 0.95
Mean       ``h ≥ α · mean(h)``                                           0, 0.5, …, 10
Energy     ``h⁺`` sorted descending (stable: ties to the lower index);   0, 0.05, …, 0.95
           the first ``ind`` pixels, ``ind`` = first index whose
           cumulative sum is ``≥ α Σ h⁺`` (the crossing pixel dropped)
=========  ============================================================  ===================

"Positive" is the reference's box rule (``heatmap.sum(0) > 0`` after zeroing): zero pixels never enter a box,
and negative pixels of a signed map neither. The map is used as given (signed and raw, no normalisation): the
thresholds are relative to its own min / max / mean, and Energy uses its non-negative part ``h⁺``. So an all-zero
map, and Energy at α = 0 (``ind`` = 0), leave nothing, which gives the whole-frame box (the reference's fallback).

The predicted box is the tight box around *all* surviving pixels of a frame (no connected components); its IoU
with a ground-truth box uses the inclusive pixel convention ``(x2 − x1 + 1)(y2 − y1 + 1)`` (``helpers.py::
compute_overlap``; disjoint boxes score 0 here, not the reference's −1). Images: the max IoU over the sample's GT
boxes. Video: per frame the max IoU over the frame's GT boxes, then the **mean over the clip's frames** (§4.5.3);
the thresholds come from the whole clip volume (``volume=True``, default) or from each frame alone.

Maps are thresholded at the resolution of ``x`` ("network resolution"; a map of another size is first resized
like ``explain.run`` does); GT boxes are inclusive pixel coordinates of ``x``. The thesis reports the error
``100 · mean(not correct)``, correct if IoU ≥ 0.5 (images) or mean IoU > 0.5 (video): :func:`localisation_error`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from xcore.core.maps import map_grid, resize_to
from xcore.core.params import reject_ignored
from xcore.core.targets import Targets
from xcore.errors import SampleError
from xcore.metrics.base import register

VAL_ALPHAS: tuple[float, ...] = tuple(round(0.05 * i, 10) for i in range(20))
MEAN_ALPHAS: tuple[float, ...] = tuple(0.5 * i for i in range(21))
ENERGY_ALPHAS: tuple[float, ...] = VAL_ALPHAS
FAMILIES: tuple[str, ...] = ("val", "mean", "energy")
DEFAULT_ALPHAS: dict[str, tuple[float, ...]] = {"val": VAL_ALPHAS, "mean": MEAN_ALPHAS, "energy": ENERGY_ALPHAS}

BoxList = Sequence[Sequence[float]]

LOC_KEYS = ("loc_val_iou", "loc_mean_iou", "loc_energy_iou")  # one IoU per α of each family


def survivors(h: Tensor, family: str, alphas: Tensor) -> Tensor:
    """(A, B, G, N) bool: the pixels of each group of ``h`` (B, G, N) that survive each α (A,) of ``family``."""
    a = alphas.to(h)[:, None, None, None]
    if family == "val":
        lo, hi = h.amin(-1, keepdim=True), h.amax(-1, keepdim=True)
        keep = (h - lo)[None] >= a * (hi - lo)[None]
    elif family == "mean":
        keep = h[None] >= a * h.mean(-1, keepdim=True)[None]
    elif family == "energy":
        vals, order = torch.sort(h.clamp(min=0), dim=-1, descending=True, stable=True)
        cum = vals.cumsum(-1)
        thr = (a[..., 0] * cum[None, ..., -1]).movedim(0, -1).contiguous()  # (B, G, A)
        ind = torch.searchsorted(cum.contiguous(), thr)  # first index with cum >= α Σh⁺
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(order.shape[-1], device=h.device).expand_as(order))
        keep = rank[None] < ind.movedim(-1, 0)[..., None]
    else:
        raise ValueError(f"unknown threshold family {family!r}; use one of {FAMILIES}")
    return keep & (h > 0)[None]


def tight_boxes(mask: Tensor) -> Tensor:
    """(..., H, W) bool -> (..., 4) float64 inclusive boxes x1, y1, x2, y2 of all True pixels; empty -> whole frame."""
    H, W = mask.shape[-2:]
    rows, cols = mask.any(-1), mask.any(-2)

    def first_last(v: Tensor) -> tuple[Tensor, Tensor]:
        n = v.shape[-1]
        return v.to(torch.uint8).argmax(-1), n - 1 - v.flip(-1).to(torch.uint8).argmax(-1)

    (y1, y2), (x1, x2) = first_last(rows), first_last(cols)
    box = torch.stack([x1, y1, x2, y2], dim=-1).double()
    whole = torch.tensor([0.0, 0.0, W - 1.0, H - 1.0], dtype=torch.float64, device=mask.device)
    return torch.where(rows.any(-1, keepdim=True), box, whole)


def box_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of inclusive-pixel boxes (..., 4) with the +1 convention; broadcasts; disjoint boxes give 0."""
    iw = (torch.minimum(pred[..., 2], gt[..., 2]) - torch.maximum(pred[..., 0], gt[..., 0]) + 1).clamp(min=0)
    ih = (torch.minimum(pred[..., 3], gt[..., 3]) - torch.maximum(pred[..., 1], gt[..., 1]) + 1).clamp(min=0)
    inter = iw * ih

    def area(b: Tensor) -> Tensor:
        return (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)

    return inter / (area(pred) + area(gt) - inter)


def gt_tensor(boxes: Sequence[Sequence[BoxList]], frames: int) -> tuple[Tensor, Tensor]:
    """Per sample, per frame lists of boxes -> padded (B, T, K, 4) float64 and the (B, T, K) validity mask."""
    B = len(boxes)
    K = max([1] + [len(f) for s in boxes for f in s])
    out = torch.zeros(B, frames, K, 4, dtype=torch.float64)
    valid = torch.zeros(B, frames, K, dtype=torch.bool)
    for b, sample in enumerate(boxes):
        if len(sample) != frames:
            raise SampleError("metric", f"weak_localisation: {len(sample)} frames of boxes for a {frames}-frame clip")
        for t, frame in enumerate(sample):
            for k, box in enumerate(frame):
                vals = [float(v) for v in box]
                if len(vals) != 4 or not all(np.isfinite(vals)) or vals[2] < vals[0] or vals[3] < vals[1]:
                    raise SampleError("metric", f"weak_localisation: bad box {list(box)!r}; want [x1, y1, x2, y2]")
                out[b, t, k] = torch.tensor(vals, dtype=torch.float64)
                valid[b, t, k] = True
    return out, valid


@register("weak_localisation", keys=LOC_KEYS, list_keys=LOC_KEYS, needs=("boxes",))
@torch.no_grad()
def weak_localisation(model: nn.Module, x: Tensor, maps: Tensor, targets: Targets = None, *,
                      boxes: Sequence[Sequence[object]], volume: bool = True,
                      val_alphas: Sequence[float] | None = None, mean_alphas: Sequence[float] | None = None,
                      energy_alphas: Sequence[float] | None = None) -> dict[str, Tensor]:
    """Per-sample IoU at every α of the Val / Mean / Energy grids (images: thesis §3.5.3, §5.4.4; video: §4.5.3).

    ``x`` (B, C, T, H, W) with ``maps`` (B, T, H, W), or ``x`` (B, C, H, W) with ``maps`` (B, H, W). ``model`` and
    ``targets`` are not used (the map is already the explained class's). A video frame without a GT box is left out
    of the mean; a sample without any GT box gets NaN. Returns ``loc_val_iou``, ``loc_mean_iou``, ``loc_energy_iou``
    (B, A_family) float64 and the grids ``loc_<family>_alphas`` (A_family,), on the CPU.

    Keyword parameters (the defaults are the published ones):

    - ``boxes``: the ground truth, per-sample data rather than a parameter: per sample, per frame a list of
      inclusive [x1, y1, x2, y2] (video), or per sample a list of boxes (image).
    - ``volume`` = ``True``: threshold a clip as one volume; ``False``: each frame alone (the thesis does not say,
      §4.5.3). An image has one frame, so there it must stay ``True``.
    - ``val_alphas`` = ``None``: the Val family's α grid; ``None`` = 0, 0.05, …, 0.95 (:data:`VAL_ALPHAS`).
    - ``mean_alphas`` = ``None``: the Mean family's grid; ``None`` = 0, 0.5, …, 10 (:data:`MEAN_ALPHAS`).
    - ``energy_alphas`` = ``None``: the Energy family's grid; ``None`` = 0, 0.05, …, 0.95 (:data:`ENERGY_ALPHAS`).

    The default grids are the reference's sweeps (ruthcfong/perturb_explanations ``heatmaps.py``), over which the
    thesis reports the best score (§5.4.4).
    """
    video = x.ndim == 5
    if x.ndim not in (4, 5):
        raise ValueError(f"weak localisation needs an image (B, C, H, W) or clip (B, C, T, H, W); got {tuple(x.shape)}")
    if not video:
        reject_ignored(weak_localisation, "an image (one frame: nothing to threshold per frame)", volume=volume)
    B = x.shape[0]
    if len(boxes) != B:
        raise ValueError(f"boxes has {len(boxes)} entries for a batch of {B}")
    if maps.ndim != x.ndim - 1:
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not match x of shape {tuple(x.shape)}")
    h = resize_to(maps.detach().float(), map_grid(x, maps)).double().cpu()
    if not torch.isfinite(h).all():
        raise ValueError("explanation map contains NaN or inf")
    if not video:
        h = h[:, None]
        per_frame: list[list[object]] = [[b] for b in boxes]
    else:
        per_frame = [list(s) for s in boxes]  # type: ignore[arg-type]
    T, H, W = h.shape[1:]
    groups = h.reshape(B, 1, T * H * W) if volume else h.reshape(B, T, H * W)
    gt, valid = gt_tensor(per_frame, T)  # type: ignore[arg-type]
    annotated = valid.any(-1)  # (B, T)
    grids = {"val": val_alphas, "mean": mean_alphas, "energy": energy_alphas}
    out: dict[str, Tensor] = {}
    for family in FAMILIES:
        alphas = torch.tensor(list(DEFAULT_ALPHAS[family] if grids[family] is None else grids[family]),
                              dtype=torch.float64)
        mask = survivors(groups, family, alphas).reshape(len(alphas), B, T, H, W)
        pred = tight_boxes(mask)  # (A, B, T, 4)
        iou = box_iou(pred[:, :, :, None], gt[None]).masked_fill(~valid[None], -1.0).amax(-1)  # (A, B, T)
        iou = (iou * annotated).sum(-1) / annotated.sum(-1)  # mean over annotated frames; NaN if none
        out[f"loc_{family}_iou"] = iou.T.contiguous()
        out[f"loc_{family}_alphas"] = alphas
    return out


def localisation_error(ious: Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]],
                       threshold: float = 0.5, video: bool = True) -> Tensor:
    """Error % ``100 · mean(not correct)`` over samples (dim 0; NaN rows skipped), per α column if 2-D.

    Correct: mean IoU ``> threshold`` for video clips (thesis §4.5.3), IoU ``≥ threshold`` for images (§3.5.3).
    """
    t = torch.as_tensor(np.asarray(ious, dtype=np.float64))
    seen = ~torch.isnan(t)
    correct = t > threshold if video else t >= threshold
    return 100.0 * (seen & ~correct).sum(0).double() / seen.sum(0).double()
