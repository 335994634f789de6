"""BAM's region attribution and model contrast score (Hartley, *An Investigation into Explanations for Convolutional
Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.5.4, eqs 3.7–3.9, Table 3.12; Yang & Kim,
*Benchmarking Attribution Methods with Relative Feature Importance*, arXiv 1907.09701, google-research-datasets/bam
``bam/metrics.py``, ``bam/attributions.py``).

Per sample (:func:`bam_attribution`), the map is normalised as the reference's ``visualize_pos_attr``::

    e2 = Σ_c max(e_c, 0)          (a single-channel map: max(e, 0), no channel sum)
    e  = clip((e2 − min e2) / (P99(e2) − min e2), 0, 1)     (P99: NumPy's linear percentile)

and averaged over the object region ``I_c`` (eq 3.7, the reference's ``single_attr``)::

    g_c(f, x) = Σ (e ⊙ I_c) / #{I_c > 0}

``I_c`` is the reader's ``region`` (:class:`xcore.data.bam.BAMReader`): the cropped object mask resized bilinearly
into the scaled ``val_loc`` box, so its edge values lie in (0, 1) while the denominator counts every non-zero
pixel, as the reference's ``np.count_nonzero``. Over a data set (:func:`model_contrast`): ``G_c(f, X_corr)`` is the
mean of ``g_c`` over the images classified correctly by *both* models (eq 3.8, the reference's ``corr``), and
``MCS = G_obj(f_o, X_corr) − G_obj(f_s, X_corr)`` (eq 3.9): the object region's attribution by the object model
minus that by the scene model, each explaining its predicted (= true, on ``X_corr``) class. Higher is better;
coarse maps (Grad-CAM) score higher than fine ones (guided backpropagation) in Table 3.12.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xcore.core.maps import map_grid, resize_to
from xcore.core.targets import Targets
from xcore.errors import UsageError
from xcore.metrics.base import register

ROW_KEYS = ("sample_id", "label", "pred", "region_attribution")


def row_percentile(values: Tensor, q: float) -> Tensor:
    """Per-row ``q``-th percentile of ``values`` (B, N), NumPy's default ``linear`` method: the sorted row at
    virtual index ``q/100 · (N − 1)``, interpolated between its neighbours. (B,) in ``values``' dtype."""
    n = values.shape[1]
    ordered = values.sort(dim=1).values
    pos = q / 100.0 * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return ordered[:, lo] + (ordered[:, hi] - ordered[:, lo]) * frac


def normalise(maps: Tensor, grid: Sequence[int], percentile_q: float = 99.0) -> Tensor:
    """The reference normalisation of (B, H', W') or (B, C, H', W') maps at ``grid`` = (H, W): float64 (B, H, W).

    Maps are first resized bilinearly to ``grid`` (a channel map per channel), then
    ``e2 = Σ_c max(e, 0)`` (single-channel: ``max(e, 0)``) and ``e = clip((e2 − min)/(P(e2) − min), 0, 1)``; a zero
    denominator (``P(e2) = min``) gives an all-zero map.
    """
    grid = tuple(int(s) for s in grid)
    m = maps.float()
    if m.ndim == 4:
        B, C = m.shape[:2]
        e2 = resize_to(m.reshape(B * C, *m.shape[2:]), grid).reshape(B, C, *grid).clamp(min=0).sum(1)
    elif m.ndim == 3:
        e2 = resize_to(m, grid).clamp(min=0)
    else:
        raise UsageError(f"BAM attribution needs (B, H, W) or (B, C, H, W) maps; got shape {tuple(maps.shape)}")
    flat = e2.double().flatten(1)
    lo = flat.amin(1, keepdim=True)
    den = row_percentile(flat, percentile_q)[:, None] - lo
    ok = den > 0
    e = ((flat - lo) / torch.where(ok, den, torch.ones_like(den))).clamp(0, 1)
    return torch.where(ok, e, torch.zeros_like(e)).reshape(-1, *grid)


@register("bam_attribution", keys=("region_attribution",), needs=("region",))
def bam_attribution(model: nn.Module, x: Tensor, maps: Tensor, targets: Targets = None, *,
                    region: Sequence[Any], percentile: float = 99.0) -> dict[str, Tensor]:
    """Per-sample ``region_attribution`` g_c = Σ(e ⊙ I_c) / #{I_c > 0} (eq 3.7), float64 (B,) on the CPU.

    ``maps`` are (B, H', W') or (B, C, H', W') explanations of ``x`` (B, C, H, W) (resized bilinearly to H × W
    first); ``region`` holds one (H, W) array per sample, the object region ``I_c`` in ``x``'s pixels (the BAM
    reader's ``meta["region"]``). A sample whose region has no non-zero pixel gets NaN. The model and ``targets``
    are not used: the maps already explain the class chosen at explain time (BAM: the predicted class).

    Keyword parameters (the defaults are the published ones):

    - ``percentile`` = 99.0: the map's clipping percentile before the min–max scaling (the reference's
      ``visualize_pos_attr(image_3d, percentile=99)``).
    """
    if x.ndim != 4:
        raise UsageError(f"BAM attribution needs an image batch (B, C, H, W); got shape {tuple(x.shape)}")
    if not 0.0 <= percentile <= 100.0:
        raise UsageError(f"percentile must be within [0, 100], not {percentile}")
    B = x.shape[0]
    grid = tuple(int(s) for s in x.shape[2:])
    if maps.shape[0] != B or len(region) != B:
        raise UsageError(f"BAM attribution got {maps.shape[0]} maps and {len(region)} regions for {B} samples")
    if not torch.isfinite(maps).all():
        raise ValueError("explanation map contains NaN or inf")
    device = maps.device
    regions = torch.stack([torch.as_tensor(np.asarray(r, dtype=np.float64)) for r in region]).to(device)
    if tuple(regions.shape[1:]) != grid:
        raise UsageError(f"BAM regions are {tuple(regions.shape[1:])}, not the input's {grid}")
    e = normalise(maps, map_grid(x, maps) if maps.ndim == 3 else grid, percentile)
    count = (regions > 0).flatten(1).sum(1)
    total = (e * regions).flatten(1).sum(1)
    g = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
    return {"region_attribution": g.double().cpu()}


def _correct(rows: Sequence[Mapping[str, Any]], which: str) -> dict[str, float]:
    """{sample_id: region_attribution} of the rows with ``pred == label``; a missing key or a repeated id is a
    UsageError."""
    out: dict[str, float] = {}
    ids: set[str] = set()
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise UsageError(f"a {which} row lacks {', '.join(missing)}")
        sid = str(row["sample_id"])
        if sid in ids:
            raise UsageError(f"sample {sid!r} appears twice in the {which} rows")
        ids.add(sid)
        if int(row["pred"]) == int(row["label"]):
            out[sid] = float(row["region_attribution"])
    return out


def model_contrast(obj_rows: Sequence[Mapping[str, Any]], scene_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Eqs 3.8–3.9 over a data set from the object model's rows and the scene model's rows on the same images.

    Each row holds ``sample_id``, ``label`` (that model's labelling), ``pred`` and ``region_attribution``
    (:func:`bam_attribution` of the object region). ``X_corr`` = the ``sample_id`` s present in both lists with
    ``pred == label`` in each. Returns ``G_obj_object_model`` and ``G_obj_scene_model`` (the means of
    ``region_attribution`` over ``X_corr``, eq 3.8), ``MCS`` = the mean over ``X_corr`` of their per-image difference
    (eq 3.9; the reference's ``np.mean((attr_pos - attr_neg)[corr])``) and ``n`` = |X_corr|; the three means are NaN
    when ``X_corr`` is empty.
    """
    obj, scene = _correct(obj_rows, "object model"), _correct(scene_rows, "scene model")
    both = sorted(set(obj) & set(scene))
    if not both:
        return {"MCS": math.nan, "G_obj_object_model": math.nan, "G_obj_scene_model": math.nan, "n": 0}
    g_o, g_s = np.array([obj[s] for s in both]), np.array([scene[s] for s in both])
    return {"MCS": float(np.mean(g_o - g_s)), "G_obj_object_model": float(g_o.mean()),
            "G_obj_scene_model": float(g_s.mean()), "n": len(both)}
