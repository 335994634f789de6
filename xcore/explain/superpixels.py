"""SLIC superpixels for SWAG (and LIME): on the image, on a pixel-score map, or on both (Hartley, *An Investigation
into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.4, eqs
3.4–3.6).

SLIC clusters pixels in (feature, position) space with ``D' = sqrt(Σ_f (d_f/w_f)² + (d_s/w_s)²)``, ``w_s = sqrt(N/K)``
(the seed-grid step, search window ``2·w_s``; §3.4.1). The three feature choices (§3.4.1, §3.4.1.1):

- ``"image"`` (SWAG_I, eq 3.4): CIELAB colour, ``d_c/w_c``; scikit-image's ``slic`` with ``compactness = w_c``.
- ``"gradient"`` (SWAG_G, eq 3.6): ``g`` = M min–max scaled to [0, 100] (the L range; §3.4.1.1), ``d_g/w_g``.
- ``"both"`` (SWAG_{I+G}, eq 3.5): ``[L, a, b, g]`` with ``d_c/w_c`` and ``d_g/w_g``.

Every variant is scikit-image's ``slic`` (its k-means, seeding, window and connectivity step); only the features
are prepared so that the distance is exactly eq 3.4 / 3.5 / 3.6. scikit-image min–max rescales its input to [0, 1]
(over all channels) before clustering and multiplies features by ``1/compactness``; the helpers undo that rescale
through ``compactness``, so each weight keeps its thesis meaning (a *divisor*: larger = less influence, ``inf`` =
the term dropped).

Every helper serves 2-D images and 3-D volumes alike (SWAG-V's supervoxels, thesis §4.3): arrays are
(*S, F) with S = (H, W) or (T, H, W); scikit-image's ``slic`` clusters (T, H, W, F) volumes with ``channel_axis=-1``
(seeds on its ``regular_grid`` over T×H×W, ``w_s`` = the largest seed spacing, unit voxel spacing in t, y and x).
``g`` is min–max scaled over the whole clip (one gradient channel per supervoxel volume, §4.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import slic
from torch import Tensor

from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.errors import UsageError

VARIANTS = ("image", "gradient", "both")
#: The SLIC parameters each variant ignores: the weights of eq 3.5 outside "both", its ``compactness`` inside, and
#: the de-normalisation (``mean`` / ``std``) where no image feature is used.
IGNORED_BY_VARIANT: dict[str, tuple[str, ...]] = {"image": ("w_c", "w_g"), "gradient": ("w_c", "w_g", "mean", "std"),
                                                  "both": ("compactness",)}


def denormalise(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                bgr: bool = False) -> np.ndarray:
    """One normalised image (C, H, W) or clip (C, T, H, W) → a (*S, 3) float64 RGB array in [0, 1] (grey C = 1 is
    replicated); ``x·std + mean`` is in [0, 1] units, ``bgr``: the input's channels are BGR (C3D) and are reversed."""
    if x.ndim not in (3, 4):
        raise UsageError(f"superpixels need one image (C, H, W) or clip (C, T, H, W); got shape {tuple(x.shape)}")
    c = x.shape[0]
    if c not in (1, 3):
        raise UsageError(f"SLIC on the image needs 1 (grey) or 3 (RGB) channels; got {c}")
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if m.size not in (1, c) or s.size not in (1, c):
        raise UsageError(f"mean/std have {m.size}/{s.size} entries for a {c}-channel image")
    bcast = (-1, *([1] * (x.ndim - 1)))
    img = x.detach().cpu().double().numpy() * s.reshape(bcast) + m.reshape(bcast)
    img = np.moveaxis(np.clip(img, 0.0, 1.0), 0, -1)
    if c == 1:
        return np.repeat(img, 3, axis=-1)
    return img[..., ::-1].copy() if bgr else img


def gradient_channel(scores: np.ndarray) -> np.ndarray:
    """``g``: the pixel scores min–max scaled to [0, 100] (§3.4.1.1); a constant map gives all zeros."""
    m = np.asarray(scores, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return np.zeros_like(m) if hi == lo else (m - lo) * (100.0 / (hi - lo))


def image_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of ``rgb`` exactly as scikit-image's ``slic`` computes it (global min–max stretch, then ``rgb2lab``)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    lo, hi = rgb.min(), rgb.max()
    if hi != lo:
        rgb = (rgb - lo) / (hi - lo)
    return rgb2lab(rgb)


def _check_weight(name: str, w: float) -> float:
    w = float(w)
    if not w > 0:
        raise UsageError(f"{name} must be > 0 (it divides its distance; use inf to drop the term); got {w}")
    return w


def slic_features(features: np.ndarray, n_segments: int, **slic_kw: object) -> np.ndarray:
    """SLIC on (*S, F) features with distance ``sqrt(|Δf|² + (d_s/w_s)²)`` exactly (features pre-divided by weights).

    scikit-image rescales to [0, 1] by the global range ``r`` and then multiplies by ``1/compactness``;
    ``compactness = 1/r`` cancels both. Labels start at 0.
    """
    f = np.ascontiguousarray(features, dtype=np.float64)
    r = float(f.max() - f.min())
    compactness = 1.0 / r if r > 0 else 1.0
    return slic(f, n_segments=n_segments, compactness=compactness, convert2lab=False, channel_axis=-1,
                start_label=0, **slic_kw)


def slic_image(rgb: np.ndarray, n_segments: int = 300, compactness: float = 10.0) -> np.ndarray:
    """SWAG_I / LIME_I superpixels (eq 3.4): scikit-image SLIC on the RGB image or clip (*S, 3) (CIELAB),
    ``w_c = compactness``."""
    return slic(np.asarray(rgb, dtype=np.float64), n_segments=n_segments,
                compactness=_check_weight("compactness", compactness), channel_axis=-1, start_label=0)


def slic_gradient(scores: np.ndarray, n_segments: int = 300, compactness: float = 10.0) -> np.ndarray:
    """SWAG_G / LIME_G superpixels (eq 3.6): SLIC on ``g`` (M scaled to [0, 100]) as one grey channel.

    ``w_g = compactness``; ``scores`` = M (H, W) or (T, H, W).

    scikit-image rescales ``g`` back to [0, 1], so it is given ``compactness = w_g / 100``.
    """
    w_g = _check_weight("compactness", compactness)
    return slic(gradient_channel(scores), n_segments=n_segments, compactness=w_g / 100.0, channel_axis=None,
                start_label=0)


def slic_image_gradient(rgb: np.ndarray, scores: np.ndarray, n_segments: int = 300, w_c: float = 20.0,
                        w_g: float = 9.0) -> np.ndarray:
    """SWAG_{I+G} / LIME_{I+G} superpixels (eq 3.5): features ``[L/w_c, a/w_c, b/w_c, g/w_g]``.

    ``w_g = inf`` leaves the image features only (= :func:`slic_image` with ``compactness = w_c`` up to float
    rounding); ``w_c = inf`` leaves ``g`` only (= :func:`slic_gradient` with ``compactness = w_g``).
    """
    w_c, w_g = _check_weight("w_c", w_c), _check_weight("w_g", w_g)
    parts = []
    if math.isfinite(w_c):
        parts.append(image_lab(rgb) / w_c)
    if math.isfinite(w_g):
        parts.append(gradient_channel(scores)[..., None] / w_g)
    if not parts:
        raise UsageError("w_c and w_g cannot both be inf: no feature would be left")
    return slic_features(np.concatenate(parts, axis=-1), n_segments)


def segment(superpixels: str, rgb: np.ndarray | None, scores: np.ndarray | None, *, n_segments: int = 300,
            compactness: float = 10.0, w_c: float = 20.0, w_g: float = 9.0) -> np.ndarray:
    """(*S) int labels 0..K-1 for one image (H, W) or clip (T, H, W) by variant ``"image"`` | ``"gradient"`` |
    ``"both"`` (eqs 3.4, 3.6, 3.5; in 3-D for SWAG-V, §4.3)."""
    if superpixels == "image":
        return slic_image(rgb, n_segments, compactness)  # type: ignore[arg-type]
    if superpixels == "gradient":
        return slic_gradient(scores, n_segments, compactness)  # type: ignore[arg-type]
    if superpixels == "both":
        return slic_image_gradient(rgb, scores, n_segments, w_c, w_g)  # type: ignore[arg-type]
    raise UsageError(f"unknown superpixels {superpixels!r}; use one of {', '.join(VARIANTS)}")
