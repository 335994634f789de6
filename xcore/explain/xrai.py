"""XRAI, full algorithm (Kapishnikov, Bolukbasi, Viégas, Terry, *XRAI: Better Attributions Through Regions*, ICCV
2019; PAIR-code/saliency ``saliency/core/xrai.py``, ``XRAI.GetMask``; Hartley, *An Investigation into Explanations for
Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021, §2.2.2.2, eq 2.1).

1. Attribution: the mean of two integrated-gradients maps (XRAI form, ``steps`` points, both endpoints) with the
   baselines ``min(u)·1`` and ``max(u)·1``, where ``u`` is the image in pixel space (``x·std + mean``, un-clipped)
   as PAIR's examples feed it; IG is invariant to that affine map, so it runs in the model's normalised space with
   the baselines mapped there. Channels are then reduced by a **signed max** (PAIR's ``_attr_aggregation_max``).
2. Segments: the de-normalised RGB image (``denormalise``: clipped to [0, 1], grey replicated) min–max rescaled to
   [−1, 1] and resized to 224×224 (cubic, anti-aliased);
   Felzenszwalb at scales 50, 100, 150, 250, 500, 1200 (σ = 0.8, min_size = 150); labels resized back (nearest);
   one mask per label of every scale (pooled, overlapping), each dilated by a radius-5 disk.
3. Greedy: while the covered fraction ≤ ``area_threshold``, drop masks adding < ``min_pixel_diff`` new pixels and
   add the mask with the largest gain = mean attribution over its not-yet-covered pixels (ties: lowest index,
   i.e. first in scale order); the newly covered pixels take that gain. Uncovered pixels get their own mean.
The returned map holds these gains per pixel (PAIR's ``attribution_mask``), shape (B, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage import segmentation
from skimage.morphology import dilation, disk
from skimage.transform import resize
from torch import Tensor, nn

from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._copies import resolve
from xcore.explain.base import register
from xcore.explain.integrated_gradients import ig_channels
from xcore.explain.superpixels import denormalise

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
SEGMENT_RESIZE = (224, 224)


def _normalize_image(im: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0),
                     resize_shape: tuple[int, int] | None = SEGMENT_RESIZE) -> np.ndarray:
    """Global min–max rescale of ``im`` to ``value_range``, then a cubic anti-aliased resize (PAIR's helper)."""
    lo, hi = np.min(im), np.max(im)
    im = (im - lo) / (hi - lo)
    im = im * (value_range[1] - value_range[0]) + value_range[0]
    if resize_shape is not None:
        im = resize(im, resize_shape, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    return im


def felzenszwalb_masks(image: np.ndarray, *, resize_image: bool = True, dilation_rad: int = 5) -> list[np.ndarray]:
    """XRAI's segment pool for one (H, W, C) image: boolean (H, W) masks of all six Felzenszwalb scales, dilated."""
    shape = image.shape[:2]
    im = _normalize_image(image, resize_shape=SEGMENT_RESIZE if resize_image else None)
    masks = []
    for scale in FELZENSZWALB_SCALES:
        seg = segmentation.felzenszwalb(im, scale=scale, sigma=FELZENSZWALB_SIGMA, min_size=FELZENSZWALB_MIN_SIZE)
        if resize_image:
            seg = resize(seg, shape, order=0, preserve_range=True, mode="constant", anti_aliasing=False).astype(int)
        masks.extend(seg == label for label in range(seg.min(), seg.max() + 1))
    if dilation_rad:
        footprint = disk(dilation_rad)
        masks = [dilation(m, footprint=footprint) for m in masks]
    return masks


def xrai_greedy(attr: np.ndarray, masks: Sequence[np.ndarray], *, area_threshold: float = 1.0,
                min_pixel_diff: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """PAIR's ``XRAI._xrai`` (full) on an (H, W) attribution: returns (gain map (H, W), ranks (H, W), 1 = first).

    Vectorised: every iteration scores all masks with two matrix-vector products over the uncovered pixels.
    """
    attr = np.asarray(attr, dtype=np.float64)
    flat = attr.reshape(-1)
    pool = np.zeros((len(masks), flat.size))
    for i, m in enumerate(masks):
        pool[i] = np.asarray(m, dtype=bool).reshape(-1)
    active = np.ones(len(masks), dtype=bool)
    out = np.full(flat.size, -np.inf)
    ranks = np.zeros(flat.size, dtype=int)
    covered = np.zeros(flat.size, dtype=bool)
    trace: list[tuple[np.ndarray, float]] = []
    area = 0.0
    while area <= area_threshold:
        free = ~covered
        counts = pool @ free.astype(np.float64)
        active &= counts >= min_pixel_diff
        if not active.any():
            break
        gains = np.where(active, (pool @ np.where(free, flat, 0.0)) / np.maximum(counts, 1.0), -np.inf)
        best = int(np.argmax(gains))
        added = pool[best] > 0
        diff = added & free
        trace.append((diff, float(gains[best])))
        out[diff] = gains[best]
        covered |= added
        area = float(np.mean(covered))
        active[best] = False
    rest = out == -np.inf
    if rest.any():
        out[rest] = flat[rest].mean()
    order = [d for d, _ in sorted(trace, key=lambda t: -t[1])] + ([rest] if rest.any() else [])
    for i, d in enumerate(order):
        ranks[d] = i + 1
    return out.reshape(attr.shape), ranks.reshape(attr.shape)


def xrai_from_attribution(image: np.ndarray, attribution: np.ndarray, *, area_threshold: float = 1.0,
                          min_pixel_diff: int = 50) -> np.ndarray:
    """The XRAI map (H, W) for an (H, W, C) float image and an (H, W) or (H, W, C) attribution (max over C)."""
    attr = np.asarray(attribution, dtype=np.float64)
    if attr.ndim > 2:
        attr = attr.max(axis=-1)
    if attr.shape != image.shape[:2]:
        raise UsageError(f"attribution {attr.shape} does not match the image {image.shape[:2]}")
    masks = felzenszwalb_masks(np.asarray(image, dtype=np.float64))
    return xrai_greedy(attr, masks, area_threshold=area_threshold, min_pixel_diff=min_pixel_diff)[0]


def xrai_attribution(model: nn.Module, x: Tensor, target: Target, *, steps: int = 100, batch_size: int = 32,
                     softmax: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """XRAI's base attribution (B, C, H, W): mean IG over the pixel-space min and max baselines."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    pixels = (x * s + m).flatten(1)
    resolve(model, x, target, softmax=softmax)
    attrs = []
    for peak in (pixels.amin(dim=1), pixels.amax(dim=1)):
        ref = (peak.reshape(-1, 1, 1, 1) - m) / s
        attrs.append(ig_channels(model, x, target, ref.expand_as(x), steps=steps, batch_size=batch_size,
                                 softmax=softmax))
    return (attrs[0] + attrs[1]) / 2


@register("xrai")
def xrai(model: nn.Module, x: Tensor, target: Target, *, steps: int = 100, batch_size: int = 32,
         softmax: bool = False, area_threshold: float = 1.0, min_pixel_diff: int = 50,
         mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """XRAI saliency (B, H, W) for 2-D images; segmentation and the greedy run per sample on the CPU.

    Keyword parameters (the defaults are the published ones — PAIR-code/saliency's ``XRAIParameters``):

    - ``steps`` = 100: integrated-gradients points per baseline (``XRAIParameters.steps``).
    - ``batch_size`` = 32: model inputs per IG pass; throughput only.
    - ``softmax`` = ``False``: integrate the gradient of the logit ``y^c`` (PAIR's examples explain the logit);
      ``True``: of ``softmax(y)_c``.
    - ``area_threshold`` = 1.0: stop the greedy once this fraction of the image is covered (1.0 = the full
      algorithm, ``XRAIParameters.area_threshold``).
    - ``min_pixel_diff`` = 50: masks adding fewer new pixels are dropped
      (``XRAIParameters.experimental_params["min_pixel_diff"]``).
    - ``mean`` / ``std`` = ImageNet's: the input normalisation, undone for the pixel-space baselines and the
      segmentation.
    """
    if x.ndim != 4:
        raise UsageError(f"xrai needs 2-D images (B, C, H, W); got shape {tuple(x.shape)}")
    if steps < 2:
        raise UsageError(f"xrai needs steps >= 2 (both endpoints); got {steps}")
    x = x.detach()
    attr = xrai_attribution(model, x, target, steps=steps, batch_size=batch_size, softmax=softmax, mean=mean,
                            std=std).amax(dim=1).detach().cpu().double().numpy()
    maps = [xrai_from_attribution(denormalise(x[b], mean, std), attr[b], area_threshold=area_threshold,
                                  min_pixel_diff=min_pixel_diff) for b in range(x.shape[0])]
    return torch.from_numpy(np.stack(maps)).to(device=x.device, dtype=x.dtype)
