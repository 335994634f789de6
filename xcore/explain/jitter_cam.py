"""Jitter-CAM (Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff
University, 2021 — "thesis" — §5.3, eqs 5.1–5.3): a finer CAM from CAMs of shifted patches.

The CAM of a p×p image is m×m, one cell per ``k = p/m`` pixels. The image is enlarged bilinearly to
``p' = p + d·k`` so that its CAM would be (m+d)×(m+d); the (d+1)² patches ``P_ij = I[k·i : k·i + p, k·j : k·j + p]``
(i, j = 0..d, 0-based) are explained by the base CAM method ``E`` for the class of the *original* image, and

- eq 5.1: ``J[i:i+m, j:j+m] += E(P_ij)``,
- eq 5.2: ``C[i:i+m, j:j+m] += 1``,
- eq 5.3: ``JitterCAM = J / C``, returned at its native (m+d)×(m+d) size (:func:`xcore.explain.run` resizes it).

Each spatial axis is handled on its own (m_h×m_w maps, ``d = (d_h, d_w)``; default ``d = m``, i.e. double the native
map, per axis). Rounding for a non-integer k (unverified in the thesis): offsets ``o_i = floor(i·p/m + 1/2)``
(half-up, integer arithmetic) and ``p' = p + o_d``, so the last patch ends exactly on the enlarged image's edge.
Video (B, C, T, H, W) is jittered in space only by default (frames resized independently; the base map keeps its
T'). ``temporal=True`` extends the method to the time axis (not in the thesis: a project extension): the clip is
enlarged trilinearly over (T, H, W) to ``(T + o_{d_t}, H + o_{d_h}, W + o_{d_w})``, the ``(d_t+1)(d_h+1)(d_w+1)``
patches start at the offsets of each axis, and eqs 5.1–5.2 accumulate over the three axes; default ``d_t = m_t``
(doubling T', the same rule as space). :func:`offsets`, :func:`enlarge` and :func:`accumulate` work on any number
of axes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.params import by_value, ignores
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._copies import resolve
from xcore.explain.base import METHODS, register


def offsets(p: int, m: int, d: int) -> list[int]:
    """Pixel offsets ``o_i = floor(i·p/m + 1/2)`` of the d+1 patches along one axis (``k = p/m`` per cell)."""
    return [(2 * i * p + m) // (2 * m) for i in range(d + 1)]


def enlarge(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize the last ``len(size)`` dims of ``x`` (B, C, ...) to ``size``: (bi-/tri)linear, ``align_corners=False``.

    Leading axes whose size does not change are left alone (not interpolated), so ``size = (T, H', W')`` with the
    clip's own T is exactly the per-frame bilinear resize; (bi-/tri)linear resizing is separable, so enlarging
    (T, H, W) at once equals resizing time and space one after the other.
    """
    size = tuple(int(s) for s in size)
    n = len(size)
    while n and x.shape[x.ndim - n] == size[-n]:
        n -= 1  # drop unchanged leading axes
    if n == 0:
        return x
    size, lead = size[len(size) - n :], x.shape[: x.ndim - n]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[n]
    flat = x.reshape(-1, 1, *x.shape[x.ndim - n :])
    return F.interpolate(flat, size=size, mode=mode, align_corners=False).reshape(*lead, *size)


def accumulate(cams: Tensor, d: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``J`` and ``C`` of eqs 5.1–5.2 from the patch maps ``cams`` (n, B, *lead, *m) over the last ``len(d)`` axes.

    ``n = Π (d_a + 1)``; patch ``q`` sits at cell offset ``unravel(q, (d_1+1, ..., d_N+1))`` (row-major: the last
    axis varies fastest; 2-D: ``(q // (d_w+1), q % (d_w+1))``). Returns J (B, *lead, *(m + d)) and the count C
    (*(m + d)), the same for every sample.
    """
    d = tuple(int(v) for v in d)
    grid = tuple(v + 1 for v in d)
    if cams.shape[0] != math.prod(grid):
        raise ValueError(f"expected {math.prod(grid)} patch maps, got {cams.shape[0]}")
    m = tuple(cams.shape[cams.ndim - len(d) :])
    size = tuple(a + b for a, b in zip(m, d, strict=True))
    J = cams.new_zeros(*cams.shape[1 : cams.ndim - len(d)], *size)
    C = cams.new_zeros(size)
    for cam, corner in zip(cams, itertools.product(*(range(g) for g in grid)), strict=True):
        window = (Ellipsis, *(slice(o, o + k) for o, k in zip(corner, m, strict=True)))
        J[window] += cam
        C[window[1:]] += 1
    return J, C


def _pair(d: int | tuple[int, int] | list[int] | None, m: tuple[int, int]) -> tuple[int, int]:
    if d is None:
        return m
    dd = (d, d) if isinstance(d, int) else tuple(int(v) for v in d)
    if len(dd) != 2 or min(dd) < 0:
        raise UsageError(f"d must be a non-negative int or (d_h, d_w); got {d!r}")
    return dd[0], dd[1]


def _enlargements(x: Tensor, m: tuple[int, ...], d: int | tuple[int, int] | list[int] | None, temporal: bool,
                  d_t: int | None) -> tuple[int, ...]:
    """Per jittered axis ``d``: (d_h, d_w), or (d_t, d_h, d_w) with ``temporal`` (default: m, doubling the map)."""
    if temporal and (x.ndim != 5 or len(m) != 3):
        raise UsageError(f"temporal jitter needs clips (B, C, T, H, W) and a (B, T', H', W') base map; got x "
                         f"{tuple(x.shape)} and a map with {len(m)} dims")
    grid = tuple(x.shape[x.ndim - len(m) :]) if temporal else tuple(x.shape[-2:])
    m_ax = m if temporal else m[-2:]
    if min(m_ax) < 1 or any(a > b for a, b in zip(m_ax, grid, strict=True)):
        raise UsageError(f"base map {m_ax} does not fit the input {grid}")
    dd = _pair(d, (m[-2], m[-1]))
    if not temporal:
        return dd
    if d_t is not None and (not isinstance(d_t, int) or d_t < 0):
        raise UsageError(f"d_t must be a non-negative int; got {d_t!r}")
    return (m[0] if d_t is None else d_t, *dd)


@register("jitter_cam")
@ignores(by_value("temporal", {False: ("d_t",)}))
def jitter_cam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, base: str = "gradcam",
               d: int | tuple[int, int] | None = None, temporal: bool = False, d_t: int | None = None,
               batch_size: int = 32, base_params: dict[str, Any] | None = None) -> Tensor:
    """Jitter-CAM map = J / C (eqs 5.1–5.3) of the CAM method ``base``: (B, *T', m_h+d_h, m_w+d_w), or
    (B, m_t+d_t, m_h+d_h, m_w+d_w) with ``temporal=True``.

    The predicted class is fixed on the clean input first; every patch is explained for its sample's class
    (callable targets are passed through). Patches are stacked patch-major (row ``q·B + b`` = patch q of sample b).

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the CAM layer, passed to ``base`` (it wins over ``base_params["layer"]``); ``None`` =
      the base method's default layer.
    - ``base`` = ``"gradcam"``: any registered CAM method (one with a ``layer``), called at native resolution; the
      thesis's E(·) is Grad-CAM (§5.3).
    - ``d`` = ``None``: the CAM enlargement per spatial axis, an int or (d_h, d_w); ``None`` = m per axis, doubling
      the native map — the thesis's choice (§5.3: 14×14 for ResNet-50's 7×7, chosen by deletion + (1 − insertion),
      Figs 5.4–5.5; each axis on its own for non-square maps, §5.4.4.1).
    - ``temporal`` = ``False``: clips are jittered in space only, as the thesis defines it; ``True`` (clips only, a
      project extension) jitters time too: the clip is enlarged trilinearly over (T, H, W) and patches are also
      taken at offsets along t.
    - ``d_t`` = ``None``: the temporal enlargement with ``temporal=True``; ``None`` = m_t (the same doubling rule),
      ``0`` gives the spatial-only result. Without ``temporal`` it does nothing and must stay ``None``.
    - ``batch_size`` = 32: patches per pass, at least one patch of every sample (the thesis batches at 32, §5.4.5);
      throughput only.
    - ``base_params`` = ``None``: further parameters of ``base`` (its published defaults otherwise).
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

    m_full = tuple(int(v) for v in explain(x, target).shape[1:])
    dd = _enlargements(x, m_full, d, temporal, d_t)
    n = len(dd)  # jittered axes: the last n of the input and of the map
    p, m = tuple(int(v) for v in x.shape[x.ndim - n :]), m_full[len(m_full) - n :]
    offs = [offsets(pa, ma, da) for pa, ma, da in zip(p, m, dd, strict=True)]
    big = enlarge(x, [pa + o[-1] for pa, o in zip(p, offs, strict=True)])  # p' = p + o_d ≈ p·(m+d)/m per axis
    corners = list(itertools.product(*offs))
    B = x.shape[0]
    cams = []
    for start, stop in spans(len(corners), B, batch_size):
        patches = torch.cat([big[(Ellipsis, *(slice(o, o + pa) for o, pa in zip(c, p, strict=True)))]
                             for c in corners[start:stop]])
        cam = explain(patches, target.tile(stop - start))
        cams.append(cam.reshape(stop - start, B, *cam.shape[1:]))
    out = torch.cat(cams)
    if tuple(out.shape[2:]) != m_full:
        raise UsageError(f"base map size changed from {m_full} to {tuple(out.shape[2:])} on a patch")
    J, C = accumulate(out, dd)
    return J / C
