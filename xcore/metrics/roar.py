"""ROAR / KAR input degradation: what an explanation says to remove (or keep), and the curves' area (Hooker,
Erhan, Kindermans, Kim, *A Benchmark for Interpretability Methods in Deep Neural Networks*, NeurIPS 2019 —
"Hooker et al."; google-research/google-research ``interpretability_benchmark/data_input.py``; Hartley, *An
Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 —
"thesis" — §2.4.2.3, §3.5.2, Table 3.8).

ROAR (RemOve And Retrain) replaces the fraction ``t`` of every training and test input that the explanation ranks
highest and retrains the model on the degraded data; KAR (Keep And Retrain) keeps that fraction and replaces the
rest. The faster accuracy drops under ROAR (and the slower under KAR), the better the ranking. This module only
degrades inputs; training and evaluation are the caller's.

Ranking (:func:`select`), always a stable descending sort with ties to the lower flat index, ``k = int(t · P)``
units selected out of ``P`` (Python truncation of the float product, e.g. ``int(0.29 · 100) = 28``):

- ``"pixel"`` (the thesis): the ``H·W`` spatial locations by the raw signed map; a selected location is replaced
  in every channel.
- ``"value"`` (Hooker et al.'s code): each of the ``H·W·C`` input values by :func:`reference_saliency` (squared,
  min–max scaled per sample, plus 1e-5), flattened in (H, W, C) order as the reference's channels-last images.

Replacement (:func:`degrade`): ``"mean"`` sets the values to 0, the per-channel dataset mean after normalisation
(Hooker et al. replace by the mean); ``"noisy_linear"`` is ROAD's imputation from the kept neighbours (Rong et
al. 2022, *A Consistent and Efficient Evaluation Strategy for Attribution Methods*; tleemann/road_evaluation
``road/imputations.py``; :mod:`xcore.metrics.imputation`). Baselines: :func:`iid_selection` (Hooker et al.'s
random ranking, each unit independently) and :func:`oracle_map` (the ground-truth object mask as a ranking).

This module registers no metric (ROAR needs retraining, not a per-batch score); the package imports it like any
other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from xcore.metrics.imputation import Noise, noisy_linear

Mode = Literal["roar", "kar"]
Ranking = Literal["pixel", "value"]
Imputation = Literal["mean", "noisy_linear"]


def _fraction(fraction: float) -> float:
    t = float(fraction)
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return t


def reference_saliency(maps: Tensor) -> Tensor:
    """Hooker et al.'s value saliency of ``maps`` (B, ...): ``s = m²``, then per sample
    ``(s − min s) / max(max s − min s, 1e-5) + 1e-5`` (google-research ``interpretability_benchmark/
    data_input.py``). A monotone function of ``|m|`` within a sample: ``m`` and ``−m`` tie. Float dtype of
    ``maps`` (integers become float32)."""
    s = maps if maps.is_floating_point() else maps.float()
    s = s.square()
    flat = s.reshape(s.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-5) + 1e-5).reshape(s.shape)


def select(maps: Tensor, fraction: float, *, ranking: Ranking = "pixel") -> Tensor:
    """The top ``k = int(fraction · P)`` units of every sample's map: a bool tensor shaped like ``maps``.

    - ``ranking="pixel"``: ``maps`` (B, H, W), ranked by their raw signed values, ``P = H·W``.
    - ``ranking="value"``: ``maps`` (B, C, H, W) (the value ranking needs the channels: broadcast a (B, H, W) map
      first, as :func:`degrade` does), ranked by :func:`reference_saliency` in (H, W, C) flat order,
      ``P = H·W·C``.

    Stable descending sort: equal scores go to the lower flat index. ``ValueError`` for a fraction outside
    [0, 1], a map of the wrong rank or a non-finite map.
    """
    t = _fraction(fraction)
    if ranking == "pixel":
        if maps.dim() != 3:
            raise ValueError(f"pixel ranking takes maps (B, H, W), got shape {tuple(maps.shape)}")
        scores = maps.reshape(maps.shape[0], -1)
    elif ranking == "value":
        if maps.dim() != 4:
            raise ValueError(f"value ranking takes maps (B, C, H, W), got shape {tuple(maps.shape)}")
        scores = reference_saliency(maps).permute(0, 2, 3, 1).reshape(maps.shape[0], -1)
    else:
        raise ValueError(f"unknown ranking {ranking!r}; use 'pixel' or 'value'")
    if not torch.isfinite(maps).all():
        raise ValueError("explanation map contains NaN or inf")
    k = int(t * scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    chosen = torch.zeros(scores.shape, dtype=torch.bool, device=maps.device)
    chosen.scatter_(1, order[:, :k], True)
    if ranking == "pixel":
        return chosen.reshape(maps.shape)
    B, C, H, W = maps.shape
    return chosen.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()


def iid_selection(shape: Sequence[int], fraction: float, generator: torch.Generator | None) -> Tensor:
    """Random baseline: a bool tensor of ``shape`` (CPU), each unit selected independently with probability
    ``fraction`` (``torch.rand < fraction``, drawn from ``generator``). Hooker et al.'s random ranking: under KAR a
    unit is kept with probability t, under ROAR removed with probability t; the selected count varies around
    ``t · P``."""
    t = _fraction(fraction)
    return torch.rand(tuple(shape), generator=generator) < t


def degrade(x: Tensor, maps: Tensor | None, fraction: float, *, mode: Mode = "roar", ranking: Ranking = "pixel",
            imputation: Imputation = "mean", noise: Noise = 0.01, generator: torch.Generator | None = None,
            selected: Tensor | None = None) -> Tensor:
    """ROAR / KAR degradation of the normalised inputs ``x`` (B, C, H, W) at ``fraction`` t: a new tensor with
    ``x``'s dtype and device (``x`` untouched).

    ``maps``: (B, H, W) for ``ranking="pixel"``; (B, C, H, W) or (B, H, W) (the same map for every channel) for
    ``ranking="value"``; at the resolution of ``x``. ``None`` only with ``selected``.

    - ``mode`` = ``"roar"``: replace the selected units; ``"kar"``: keep them and replace all others (KAR at t is
      exactly the complement of ROAR at t).
    - ``ranking`` = ``"pixel"``: see :func:`select` (the thesis's pixel ranking; ``"value"``: Hooker et al.'s).
    - ``imputation`` = ``"mean"``: replaced values become 0 (the channel mean after normalisation);
      ``"noisy_linear"``: ROAD's imputation (:func:`xcore.metrics.imputation.noisy_linear`), per sample, on the
      CPU.
    - ``noise`` = 0.01: the noisy-linear noise std, one float or one value per channel (``0.01 / std_c`` is ROAD's
      0.01 on [0, 1] images); ignored by ``"mean"``.
    - ``generator`` = ``None``: the CPU ``torch.Generator`` of that noise (samples drawn in batch order).
    - ``selected`` = ``None``: a precomputed bool selection, (B, H, W) (locations) or (B, C, H, W) (values), e.g.
      :func:`iid_selection`; it replaces the ranking, ``fraction`` is then only checked.

    ``ValueError`` for a fraction outside [0, 1], an unknown mode / ranking / imputation or shapes that do not
    match ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    t = _fraction(fraction)
    if mode not in ("roar", "kar"):
        raise ValueError(f"unknown mode {mode!r}; use 'roar' or 'kar'")
    if ranking not in ("pixel", "value"):
        raise ValueError(f"unknown ranking {ranking!r}; use 'pixel' or 'value'")
    if imputation not in ("mean", "noisy_linear"):
        raise ValueError(f"unknown imputation {imputation!r}; use 'mean' or 'noisy_linear'")
    B, C, H, W = x.shape
    if selected is None:
        if maps is None:
            raise ValueError("give maps or selected")
        if ranking == "value" and maps.dim() == 3:
            maps = maps[:, None].expand(B, C, *maps.shape[1:])
        expected = (B, H, W) if ranking == "pixel" else (B, C, H, W)
        if tuple(maps.shape) != expected:
            raise ValueError(f"{ranking} ranking of x {tuple(x.shape)} needs maps {expected}, got {tuple(maps.shape)}")
        selected = select(maps, t, ranking=ranking)
    elif selected.dtype != torch.bool or tuple(selected.shape) not in ((B, H, W), (B, C, H, W)):
        raise ValueError(f"selected must be bool (B, H, W) or (B, C, H, W) for x {tuple(x.shape)}, "
                         f"got {selected.dtype} {tuple(selected.shape)}")
    replaced = (selected if mode == "roar" else ~selected).to(x.device)
    if imputation == "mean":
        return x.masked_fill(replaced[:, None] if replaced.dim() == 3 else replaced, 0)
    return torch.stack([noisy_linear(x[b], replaced[b], noise=noise, generator=generator) for b in range(B)])


def oracle_map(mask: np.ndarray | Tensor) -> Tensor:
    """The ground-truth "explanation" of an object ``mask`` (H, W) (nonzero = object): a float32 (H, W) map of
    signed Euclidean distances to the mask's boundary (``scipy.ndimage.distance_transform_edt``). Inside the object
    +distance to the nearest background pixel (≥ 1), outside −distance to the nearest object pixel (≤ −1), so the
    pixel ranking takes the whole object first, deepest first, then the background nearest the object.

    ``ValueError`` for an empty mask (nothing to rank first). A mask covering the whole image has no background:
    its distances are taken to the nearest pixel outside the image (the centre first).
    """
    from scipy.ndimage import distance_transform_edt

    m = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    m = m.astype(bool, copy=False)
    if not m.any():
        raise ValueError("empty object mask: the oracle ranking is undefined")
    if m.all():
        signed = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    else:
        signed = distance_transform_edt(m) - distance_transform_edt(~m)
    return torch.from_numpy(np.asarray(signed, dtype=np.float32))


def _as_array(values: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def curve_auc(fractions: Sequence[float] | np.ndarray | Tensor, values: Sequence[float] | np.ndarray | Tensor,
              rule: Literal["trapezoid", "uniform"] = "trapezoid") -> float:
    """Area under a ROAR / KAR curve ``values`` (e.g. test accuracy) at the degradation ``fractions``.

    - ``"trapezoid"``: ``np.trapezoid(values, fractions)`` over the true fractions (an area, not normalised by the
      covered range); ``fractions`` must not decrease.
    - ``"uniform"``: the thesis / RISE formula as if the n + 1 points were evenly spaced on [0, 1]:
      ``(Σ s_i − s_0/2 − s_n/2) / n`` (thesis §3.5.1; eclique/RISE ``evaluation.py``); ``fractions`` only fixes
      the count. ``[1, 0.5, 0]`` gives 0.5 under both rules.

    ``ValueError`` for fewer than two points, mismatched lengths or an unknown rule.
    """
    xs, ys = _as_array(fractions), _as_array(values)
    if xs.ndim != 1 or xs.shape != ys.shape or xs.size < 2:
        raise ValueError(f"need two or more (fraction, value) points of equal length, got {xs.shape}, {ys.shape}")
    if rule == "trapezoid":
        if np.any(np.diff(xs) < 0):
            raise ValueError(f"fractions must not decrease, got {xs.tolist()}")
        return float(np.trapezoid(ys, xs))
    if rule == "uniform":
        n = ys.size - 1
        return float((ys.sum() - ys[0] / 2 - ys[-1] / 2) / n)
    raise ValueError(f"unknown rule {rule!r}; use 'trapezoid' or 'uniform'")
