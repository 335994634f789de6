"""LIME for images (Ribeiro, Singh, Guestrin, *"Why Should I Trust You?"*, KDD 2016; marcotcr/lime
``lime/lime_image.py`` / ``lime/lime_base.py``; Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §2.2.2.4 and §3.7.3).

Per image: segment it, draw ``n_samples`` binary rows over the K segments (row 0 all ones, the rest Bernoulli(0.5)),
evaluate the model on each perturbed image (segments with a 0 hidden), weight each row by
``sqrt(exp(−d²/kernel_width²))`` with ``d`` its cosine distance to the all-ones row, and fit a weighted
``Ridge(alpha=1, fit_intercept=True)`` to the target's softmax probability. Every pixel gets its segment's coefficient.

Equality with ``lime`` 0.2.0.1 — ``LimeImageExplainer(kernel_width=0.25, random_state=seed).explain_instance(img,
fn, labels=(c,), top_labels=None, hide_color=None, num_features=100000, num_samples=1000)`` on the same (H, W, C)
model-space image:

- RNG: ``np.random.RandomState(seed)``, fresh per image. As in lime (``random_seed=None``), one
  ``randint(0, 1000)`` is drawn first — quickshift's ``random_seed`` (see :func:`lime_segments`) — then
  ``randint(0, 2, n_samples·K)``.
- Feature selection: lime's ``'auto'`` with ``num_features ≥ K`` (> 6) takes ``'highest_weights'``, which keeps every
  feature (only reordered; with ≤ 6 requested, forward selection also ends with all K). The final Ridge therefore
  sees all K columns, as here (``'none'``); column order changes the coefficients only by float rounding.
- Hiding: ``hide="mean"`` (default) = lime's ``hide_color=None``, each segment replaced by its own mean colour
  (computed in the model's input space; the mean commutes with the affine normalisation). The thesis text says
  "set to 0" (§2.2.2.4), but it ran lime's code with its defaults: ``hide=0.0`` gives that (0 in normalised
  space = the dataset mean colour); any float is a constant in the model's input space (= lime ``hide_color``).

Segmenters: ``"quickshift"`` (lime's ``SegmentationAlgorithm`` defaults ``kernel_size=4, max_dist=200, ratio=0.2``)
on the de-normalised RGB image; ``"image"`` / ``"gradient"`` / ``"both"`` = LIME_I / LIME_G / LIME_{I+G} (§3.7.3):
SWAG's SLIC superpixels (:func:`xcore.explain.swag.swag_segments`) with ``n_segments = 50``, the gradient channel
being guided backprop ``max_c |GB|`` of the target's softmax, as SWAG. Labels are made contiguous 0..K-1 in order.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from skimage.segmentation import quickshift
from sklearn.linear_model import Ridge
from sklearn.metrics import pairwise_distances
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.params import by_value, ignores
from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._copies import resolve, tiled_scores
from xcore.explain.base import register
from xcore.explain.guided_backprop import guided_backprop
from xcore.explain.superpixels import IGNORED_BY_VARIANT, VARIANTS, denormalise
from xcore.explain.swag import swag_segments

SEGMENTERS = ("quickshift", *VARIANTS)
_QUICKSHIFT = ("kernel_size", "max_dist", "ratio")
_SLIC = ("n_segments", "compactness", "w_c", "w_g")
#: The parameters each segmenter ignores: quickshift's under SLIC, SLIC's under quickshift (and SWAG's per variant).
IGNORED_BY_SEGMENTER: dict[str, tuple[str, ...]] = {
    "quickshift": _SLIC, **{v: (*_QUICKSHIFT, *IGNORED_BY_VARIANT[v]) for v in VARIANTS}}


def lime_segments(model: nn.Module, x: Tensor, target: Target, seeds: Sequence[int], *,
                  segmenter: str = "quickshift", kernel_size: float = 4, max_dist: float = 200,
                  ratio: float = 0.2, n_segments: int = 50, compactness: float = 10.0, w_c: float = 20.0,
                  w_g: float = 9.0, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> list[np.ndarray]:
    """One (H, W) int64 label array (contiguous 0..K_b-1) per image of ``x`` (B, C, H, W).

    ``seeds[b]`` is quickshift's ``random_seed`` for image ``b`` where scikit-image still has that argument (older
    releases);
    lime's ``SegmentationAlgorithm`` silently drops arguments quickshift lacks, so on newer scikit-image both use
    quickshift's default ``rng=42``. Unused by the SLIC segmenters.
    """
    if segmenter not in SEGMENTERS:
        raise UsageError(f"unknown segmenter {segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    if segmenter == "quickshift":
        seeded = "random_seed" in inspect.signature(quickshift).parameters  # lime drops it where skimage lacks it
        segs = [quickshift(denormalise(x[b], mean, std), kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
                           **({"random_seed": int(seeds[b])} if seeded else {})) for b in range(x.shape[0])]
    else:
        scores = None
        if segmenter != "image":
            scores = guided_backprop(model, x, target, reduce="max_abs", softmax=True).detach()
        segs = list(swag_segments(x, scores, superpixels=segmenter, n_segments=n_segments, compactness=compactness,
                                  w_c=w_c, w_g=w_g, mean=mean, std=std).numpy())
    return [np.unique(s, return_inverse=True)[1].reshape(s.shape).astype(np.int64) for s in segs]


def hidden_image(x: Tensor, seg: Tensor, hide: str | float = "mean") -> Tensor:
    """What hidden segments show for one image ``x`` (C, H, W): each segment's mean colour, or the constant ``hide``."""
    if hide != "mean":
        if isinstance(hide, str):
            raise UsageError(f"hide must be 'mean' or a number; got {hide!r}")
        return torch.full_like(x, float(hide))
    flat = seg.reshape(-1)
    k = int(flat.max()) + 1
    xs = x.reshape(x.shape[0], -1).double()
    sums = torch.zeros(x.shape[0], k, dtype=torch.float64, device=x.device).index_add(1, flat, xs)
    means = sums / torch.bincount(flat, minlength=k).clamp(min=1).to(sums)
    return means[:, flat].reshape(x.shape).to(x.dtype)


def surrogate(data: np.ndarray, y: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """lime_base's weighted ``Ridge(alpha=1)`` coefficients (K,) of ``y`` (n,) on the binary ``data`` (n, K)."""
    d = pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    weights = np.sqrt(np.exp(-(d**2) / float(kernel_width) ** 2))
    return Ridge(alpha=1, fit_intercept=True).fit(data, y, sample_weight=weights).coef_


@register("lime")
@ignores(by_value("segmenter", IGNORED_BY_SEGMENTER))
def lime(model: nn.Module, x: Tensor, target: Target, *, segmenter: str = "quickshift", n_samples: int = 1000,
         kernel_width: float = 0.25, hide: str | float = "mean", seed: int = 0, batch_size: int = 32,
         kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2, n_segments: int = 50,
         compactness: float = 10.0, w_c: float = 20.0, w_g: float = 9.0, mean: Sequence[float] = IMAGENET_MEAN,
         std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """LIME map (B, H, W): each pixel holds its segment's surrogate coefficient for the target ``softmax(y)_c`` (or a
    target function). A parameter of the segmenter not chosen must stay at its default (:data:`IGNORED_BY_SEGMENTER`).

    Keyword parameters (the defaults are the published ones — lime 0.2.0.1's unless noted):

    - ``segmenter`` = ``"quickshift"``: lime's segmentation; ``"image"`` / ``"gradient"`` / ``"both"`` are SWAG's
      SLIC superpixels, LIME_I / LIME_G / LIME_{I+G} of the thesis (§3.7.3).
    - ``n_samples`` = 1000: perturbed samples (lime's ``num_samples`` default, the count the thesis quotes, §3.2).
    - ``kernel_width`` = 0.25: width of lime's exponential kernel on the cosine distance (``LimeImageExplainer``).
    - ``hide`` = ``"mean"``: what hidden segments show: each segment's mean colour (lime's ``hide_color=None``) or a
      constant in the model's input space (``0.0`` = the thesis's "set to 0").
    - ``seed`` = 0: the ``RandomState`` seed, fresh per image (lime's ``random_state``).
    - ``batch_size`` = 32: perturbed images per forward pass; throughput only.
    - ``kernel_size`` = 4, ``max_dist`` = 200, ``ratio`` = 0.2: quickshift's parameters, lime's
      ``SegmentationAlgorithm`` defaults (quickshift only).
    - ``n_segments`` = 50: SLIC's superpixel count, about lime's region count (thesis §3.7.3; SLIC only).
    - ``compactness`` = 10.0: SLIC's weight for ``"image"`` / ``"gradient"`` (scikit-image's default, thesis
      §3.6.1).
    - ``w_c`` = 20.0, ``w_g`` = 9.0: the eq 3.5 weights for ``"both"`` (SWAG-V's final values, thesis §4.4.4).
    - ``mean`` / ``std`` = ImageNet's: the input normalisation, undone for the segmenters that look at the image
      (quickshift, ``"image"``, ``"both"``).
    """
    if x.ndim != 4:
        raise UsageError(f"LIME takes 2-D images (B, C, H, W); got shape {tuple(x.shape)}")
    if int(n_samples) < 2:
        raise UsageError(f"n_samples must be at least 2; got {n_samples}")
    x = x.detach()
    resolve(model, x, target, softmax=True)
    n, bsz = int(n_samples), x.shape[0]
    rngs = [np.random.RandomState(int(seed)) for _ in range(bsz)]
    qs_seeds = [int(r.randint(0, high=1000)) for r in rngs]  # lime draws quickshift's seed first
    segs_np = lime_segments(model, x, target, qs_seeds, segmenter=segmenter, kernel_size=kernel_size,
                            max_dist=max_dist, ratio=ratio, n_segments=n_segments, compactness=compactness,
                            w_c=w_c, w_g=w_g, mean=mean, std=std)
    data = []
    for r, s in zip(rngs, segs_np, strict=True):
        k = int(s.max()) + 1
        d = r.randint(0, 2, n * k).reshape((n, k))
        d[0, :] = 1
        data.append(d)
    segs = [torch.from_numpy(s).to(x.device) for s in segs_np]
    on = [torch.from_numpy(d).to(device=x.device, dtype=torch.bool) for d in data]
    hidden = torch.stack([hidden_image(x[b], segs[b], hide) for b in range(bsz)])
    scores = []
    for start, stop in spans(n, bsz, batch_size):
        keep = torch.stack([on[b][start:stop][:, segs[b]] for b in range(bsz)], dim=1)  # (k, B, H, W)
        xs = torch.where(keep[:, :, None], x[None], hidden[None])
        scores.append(tiled_scores(model, xs, target, softmax=True).double().cpu())
    y = torch.cat(scores).numpy()  # (n, B)
    maps = [torch.from_numpy(surrogate(data[b], y[:, b], kernel_width)).to(x.device)[segs[b]] for b in range(bsz)]
    return torch.stack(maps).to(x.dtype)
