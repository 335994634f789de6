"""Jitter-CAM (Hartley, thesis §5.3, eqs 5.1–5.3; methods.md §3): a finer CAM from CAMs of shifted patches.

The CAM of a p×p image is m×m, one cell per ``k = p/m`` pixels. The image is enlarged bilinearly to
``p' = p + d·k`` so that its CAM would be (m+d)×(m+d); the (d+1)² patches ``P_ij = I[k·i : k·i + p, k·j : k·j + p]``
(i, j = 0..d, 0-based) are explained by the base CAM method ``E`` for the class of the *original* image, and

- eq 5.1: ``J[i:i+m, j:j+m] += E(P_ij)``,
- eq 5.2: ``C[i:i+m, j:j+m] += 1``,
- eq 5.3: ``JitterCAM = J / C``, returned at its native (m+d)×(m+d) size (:func:`xcore.explain.run` resizes it).

Each spatial axis is handled on its own (m_h×m_w maps, ``d = (d_h, d_w)``; default ``d = m``, i.e. double the native
map, per axis). Rounding for a non-integer k (unverified in the thesis): offsets ``o_i = floor(i·p/m + 1/2)``
(half-up, integer arithmetic) and ``p' = p + o_d``, so the last patch ends exactly on the enlarged image's edge.
Video (B, C, T, H, W) is jittered in space only (frames resized independently; the base map keeps its T').
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.errors import UsageError
from xcore.explain.base import METHODS, Target, register
from xcore.explain.tiling import resolve, spans


def offsets(p: int, m: int, d: int) -> list[int]:
    """Pixel offsets ``o_i = floor(i·p/m + 1/2)`` of the d+1 patches along one axis (``k = p/m`` per cell)."""
    return [(2 * i * p + m) // (2 * m) for i in range(d + 1)]


def enlarge(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (``align_corners=False``) resize of the last two dims of ``x`` (B, C, *T, H, W) to ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    flat = x.reshape(-1, 1, *x.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*x.shape[:-2], *size)


def accumulate(cams: Tensor, d: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``J`` and ``C`` of eqs 5.1–5.2 from the patch maps ``cams`` (n, B, *T', m_h, m_w), n = (d_h+1)(d_w+1).

    Patch ``q`` sits at cell offset ``(q // (d_w+1), q % (d_w+1))``. Returns J (B, *T', m_h+d_h, m_w+d_w) and the
    count C (m_h+d_h, m_w+d_w), the same for every sample.
    """
    (dh, dw), (mh, mw) = d, cams.shape[-2:]
    if cams.shape[0] != (dh + 1) * (dw + 1):
        raise ValueError(f"expected {(dh + 1) * (dw + 1)} patch maps, got {cams.shape[0]}")
    J = cams.new_zeros(*cams.shape[1:-2], mh + dh, mw + dw)
    C = cams.new_zeros(mh + dh, mw + dw)
    for q, cam in enumerate(cams):
        i, j = divmod(q, dw + 1)
        J[..., i : i + mh, j : j + mw] += cam
        C[i : i + mh, j : j + mw] += 1
    return J, C


def _pair(d: int | tuple[int, int] | list[int] | None, m: tuple[int, int]) -> tuple[int, int]:
    if d is None:
        return m
    dd = (d, d) if isinstance(d, int) else tuple(int(v) for v in d)
    if len(dd) != 2 or min(dd) < 0:
        raise UsageError(f"d must be a non-negative int or (d_h, d_w); got {d!r}")
    return dd[0], dd[1]


@register("jitter_cam")
def jitter_cam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, base: str = "gradcam",
               d: int | tuple[int, int] | None = None, batch_size: int = 32,
               base_params: dict[str, Any] | None = None) -> Tensor:
    """Jitter-CAM map (B, *T', m_h+d_h, m_w+d_w) = J / C (eqs 5.1–5.3) of the CAM method ``base``.

    ``layer`` and ``base_params`` go to ``base`` (any registered CAM method, called at native resolution).
    ``d`` = CAM enlargement per axis (default: m, doubling the native map). The predicted class is fixed on the
    clean input first; every patch is explained for its sample's class (callable targets are passed through).
    Patches are stacked patch-major (row ``q·B + b`` = patch q of sample b) and explained ``batch_size`` rows at a
    time, at least one patch of every sample per pass.
    """
    method = METHODS.get(base)
    if not method.uses_layer or base == "jitter_cam":
        raise UsageError(f"jitter_cam needs a CAM method as base (one with a layer); got {base!r}")
    if x.ndim not in (4, 5):
        raise UsageError(f"jitter_cam needs images (B, C, H, W) or video (B, C, T, H, W); got {tuple(x.shape)}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    extra = dict(base_params or {})
    if layer is not None or "layer" not in extra:
        extra["layer"] = layer  # an explicit layer wins over base_params["layer"]
    params = method.params(extra)
    resolve(model, x, target)  # the class of the original image, never a patch's prediction

    def explain(batch: Tensor, tgt: Target) -> Tensor:
        return method.fn(model, batch, tgt, **params).detach()

    m = tuple(explain(x, target).shape[-2:])
    B, (H, W) = x.shape[0], x.shape[-2:]
    if min(m) < 1 or m[0] > H or m[1] > W:
        raise UsageError(f"base map {m} does not fit the image {(H, W)}")
    dh, dw = _pair(d, (int(m[0]), int(m[1])))
    oh, ow = offsets(H, m[0], dh), offsets(W, m[1], dw)
    big = enlarge(x, (H + oh[-1], W + ow[-1]))  # p' = p + o_d ≈ p·(m+d)/m
    corners = [(a, b) for a in oh for b in ow]
    cams = []
    for start, stop in spans(len(corners), B, batch_size):
        patches = torch.cat([big[..., a : a + H, b : b + W] for a, b in corners[start:stop]])
        cam = explain(patches, target.tile(stop - start))
        cams.append(cam.reshape(stop - start, B, *cam.shape[1:]))
    out = torch.cat(cams)
    if tuple(out.shape[-2:]) != m:
        raise UsageError(f"base map size changed from {m} to {tuple(out.shape[-2:])} on a patch")
    J, C = accumulate(out, (dh, dw))
    return J / C
