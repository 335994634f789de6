"""The pointing game (Zhang et al., *Top-down neural attention by excitation backprop*, ECCV 2016 / IJCV 2018;
Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University,
2021 — "thesis" — §5.4.4.1, eq 5.7; conventions of facebookresearch/TorchRay
``torchray/benchmark/pointing_game.py`` and ``examples/attribution_benchmark.py``).

Per (image, class): the signed raw map is resized to the ORIGINAL image size (H₀, W₀) (bilinear,
``align_corners=False``), optionally Gaussian-smoothed there (:func:`gaussian_smooth`, σ = ``smooth``·max(H₀, W₀);
TorchRay smooths gradient-type maps with ``smooth=0.02`` and CAMs not at all: :func:`default_smooth`), and the point
is its **first** maximum in row-major order (``torch.argmax`` of the flattened map, TorchRay ``_saliency_to_point``),
as (x, y) = (column, row). It is a *hit* iff some ground-truth pixel (u, v) of the class lies at squared distance
``(u − x)² + (v − y)² < tolerance²`` (strict, as TorchRay's code; its docs write ≤), a *miss* otherwise — also for
an empty mask. The distance is the exact integer minimum over all GT pixels (no window).

Over a data set (:func:`pointing_accuracy`): ``Acc = #hits / (#hits + #misses)`` (eq 5.7, "pooled") and TorchRay's
benchmark number, the mean over classes of the per-class accuracy ("mean_class"). The "difficult" subset (Zhang et
al.: class regions cover < 25% of the image and another class is present) is a selection of (image, class) pairs
made before calling :func:`pointing_accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.maps import resize_to
from xcore.core.targets import Targets
from xcore.errors import SampleError, UsageError
from xcore.metrics.base import register

SMOOTHED: frozenset[str] = frozenset({"gradient", "guided_backprop", "input_x_gradient", "smoothgrad", "deconvnet"})

_SQRT_TWO_F32 = torch.tensor(math.sqrt(2), dtype=torch.float32)  # TorchRay utils.SQRT_TWO_SINGLE
_EPS_F32 = torch.tensor(1.19209290e-07, dtype=torch.float32)  # TorchRay utils.EPSILON_SINGLE

MaskLike = np.ndarray | Tensor


def default_smooth(method: str) -> float:
    """The published ``smooth`` of explanation method ``method`` (a registry name): 0.02 for gradient-type maps
    (:data:`SMOOTHED`; TorchRay ``examples/attribution_benchmark.py`` smooths gradient, deconvnet and guided
    backprop), 0.0 otherwise (CAMs, perturbation methods)."""
    return 0.02 if method in SMOOTHED else 0.0


def centre_point(height: int, width: int) -> tuple[int, int]:
    """The centre baseline's point ``(x, y) = (W₀ // 2, H₀ // 2)`` as integer pixel indices of an H₀×W₀ image.

    TorchRay's ``center`` method points at the real-valued ``(w / 2, h / 2)``; for an odd side the two differ by
    half a pixel (this integer point is the pixel whose top-left corner is that real point).
    """
    return int(width) // 2, int(height) // 2


def gaussian_kernel(sigma: float, device: torch.device | None = None) -> Tensor:
    """TorchRay's 1-D kernel (``torchray/utils.py::imsmooth``), float32, length ``2W + 1`` with ``W = ⌈4σ⌉``:
    ``f_i ∝ exp(−(i / (√2 σ + ε))²)``, ``i ∈ {−W, …, W}``, ε = float32 machine epsilon, normalised to sum to 1."""
    width = math.ceil(4 * sigma)
    u = torch.arange(-width, width + 1, dtype=torch.float32, device=device)
    f = u / (_SQRT_TWO_F32.to(u.device) * sigma + _EPS_F32.to(u.device))
    f = torch.exp(-f * f)
    return f / f.sum()


def gaussian_smooth(maps: Tensor, sigma: float) -> Tensor:
    """(N, H, W) maps convolved with the separable Gaussian of :func:`gaussian_kernel` (vertical pass, then
    horizontal), same size out: TorchRay ``imsmooth(…, padding_mode='replicate')`` as its ``attribution/common.py::
    saliency`` calls it — the map is first padded by ``⌈4σ⌉`` replicated edge pixels on every side. Float32."""
    f = gaussian_kernel(sigma, maps.device)
    w = f.numel() // 2
    x = F.pad(maps.float()[:, None], (w, w, w, w), mode="replicate")
    x = F.conv2d(x, f.reshape(1, 1, -1, 1))
    x = F.conv2d(x, f.reshape(1, 1, 1, -1))
    return x[:, 0]


def _mask_tensor(mask: MaskLike, i: int, device: torch.device) -> Tensor:
    """Sample ``i``'s GT mask as a (H₀, W₀) bool tensor on ``device`` (nonzero = object)."""
    m = torch.as_tensor(mask)
    if m.ndim != 2 or min(m.shape) < 1:
        raise SampleError("metric", f"pointing_game: mask {i} has shape {tuple(m.shape)}; want (H0, W0) at the "
                                    "original image size")
    return m.to(device=device) != 0


@register("pointing_game", keys=("pointing_hit", "point_x", "point_y"), needs=("masks",),
          by_method=lambda method: {"smooth": default_smooth(method)})
@torch.no_grad()
def pointing_game(model: nn.Module, x: Tensor, maps: Tensor, targets: Targets = None, *,
                  masks: Sequence[MaskLike], tolerance: float = 15.0, smooth: float = 0.0) -> dict[str, Tensor]:
    """Per-sample pointing-game hit and point (thesis §5.4.4.1, eq 5.7; facebookresearch/TorchRay
    ``torchray/benchmark/pointing_game.py``; Zhang et al., ECCV 2016 / IJCV 2018).

    ``maps`` (B, h, w) are signed raw maps at any resolution (network input or native); ``x`` (B, C, H, W) only
    gives the device; ``model`` and ``targets`` are not used (each map is already its class's). Per sample the map is
    resized to its mask's size (H₀, W₀) with bilinear interpolation, ``align_corners=False`` (samples of one size in
    one batched call), smoothed when ``smooth > 0`` (:func:`gaussian_smooth`, σ = ``smooth``·max(H₀, W₀), after
    resizing, as TorchRay), and the point (x, y) is the first maximum in row-major order — so a constant map points at
    pixel (0, 0). Hit iff ``min over GT pixels (u, v) of (u − x)² + (v − y)² < tolerance²`` (strict, exact integer
    distances); an empty mask is a miss. A NaN or inf in a map raises ``ValueError``.

    Returns ``pointing_hit`` (B,) float64 of 0/1 and ``point_x``, ``point_y`` (B,) float64, pixel indices (column,
    row) of the original image, on the CPU.

    Keyword parameters (the defaults are the published ones):

    - ``masks``: the ground truth, per-sample data rather than a parameter: one (H₀, W₀) bool array or tensor per
      sample at the ORIGINAL image size (sizes may differ), True on the explained class's pixels (COCO: union of its
      instance masks; VOC: union of its boxes).
    - ``tolerance`` = 15.0: the hit radius in original-image pixels (TorchRay, Zhang et al.).
    - ``smooth`` = 0.0: Gaussian σ as a fraction of max(H₀, W₀); 0 = none. TorchRay uses 0.02 for gradient-type maps
      and 0 for CAMs; :func:`default_smooth` gives the value for a method.
    """
    if maps.ndim != 3:
        raise UsageError(f"pointing_game needs image maps (B, h, w); got shape {tuple(maps.shape)}")
    B = maps.shape[0]
    if len(masks) != B:
        raise UsageError(f"pointing_game: masks has {len(masks)} entries for a batch of {B}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise UsageError(f"pointing_game: tolerance must be a finite number >= 0; got {tolerance!r}")
    if not (math.isfinite(smooth) and smooth >= 0):
        raise UsageError(f"pointing_game: smooth must be a finite number >= 0; got {smooth!r}")
    device = x.device
    h = maps.detach().to(device=device, dtype=torch.float32)
    if not torch.isfinite(h).all():
        raise ValueError("explanation map contains NaN or inf")
    gt = [_mask_tensor(m, i, device) for i, m in enumerate(masks)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(gt):
        groups.setdefault((int(m.shape[0]), int(m.shape[1])), []).append(i)

    hit = torch.zeros(B, dtype=torch.float64, device=device)
    px = torch.zeros(B, dtype=torch.int64, device=device)
    py = torch.zeros(B, dtype=torch.int64, device=device)
    for (H0, W0), members in groups.items():
        idx = torch.tensor(members, device=device)
        g = resize_to(h[idx], (H0, W0))
        if smooth > 0:
            g = gaussian_smooth(g, smooth * max(H0, W0))
        flat = g.flatten(1).argmax(dim=1)  # first maximum in row-major order
        gx, gy = flat % W0, flat // W0
        m = torch.stack([gt[i] for i in members])  # (G, H0, W0)
        dy2 = (torch.arange(H0, device=device)[None] - gy[:, None]).pow(2)  # (G, H0)
        dx2 = (torch.arange(W0, device=device)[None] - gx[:, None]).pow(2)  # (G, W0)
        d2 = (dy2[:, :, None] + dx2[:, None, :]).masked_fill(~m, torch.iinfo(torch.int64).max)
        nearest = d2.flatten(1).amin(dim=1)
        inside = (nearest.double() < float(tolerance) ** 2) & m.flatten(1).any(dim=1)
        hit[idx], px[idx], py[idx] = inside.double(), gx, gy
    return {"pointing_hit": hit.cpu(), "point_x": px.double().cpu(), "point_y": py.double().cpu()}


def pointing_accuracy(hits: np.ndarray | Sequence[float], classes: np.ndarray | Sequence[int], *,
                      num_classes: int | None = None) -> dict[str, float]:
    """Pointing accuracy in percent over (image, class) trials (thesis §5.4.4.1, eq 5.7; TorchRay
    ``PointingGame.accuracy``).

    ``hits`` (N,) 0/1 per trial (NaN = not evaluated, dropped with its class), ``classes`` (N,) its class id.
    Returns ``mean_class`` = 100 · mean over classes of ``hits_c / (hits_c + misses_c)`` — TorchRay's reported
    number; with ``num_classes`` the mean runs over ids 0 … ``num_classes`` − 1 and a class without trials counts 0
    (TorchRay), without it over the classes present —, ``pooled`` = 100 · ``h / (h + m)`` (eq 5.7) and ``n`` = the
    number of trials. A value without trials is NaN.
    """
    h = np.asarray(hits, dtype=np.float64).ravel()
    c = np.asarray(classes).ravel()
    if h.shape != c.shape:
        raise UsageError(f"pointing_accuracy: {h.size} hits for {c.size} classes")
    keep = ~np.isnan(h)
    h, c = h[keep], c[keep]
    if not np.isin(h, (0.0, 1.0)).all():
        raise UsageError("pointing_accuracy: hits must be 0 or 1 (or NaN for a trial not evaluated)")
    if c.size and not (np.issubdtype(c.dtype, np.integer) or np.array_equal(c, np.round(c))):
        raise UsageError("pointing_accuracy: classes must be integer ids")
    c = c.astype(np.int64)
    n = int(h.size)
    if num_classes is None:
        labels, inverse = np.unique(c, return_inverse=True)
        trials = np.bincount(inverse, minlength=labels.size)
        per_class = np.bincount(inverse, weights=h, minlength=labels.size) / np.maximum(trials, 1)
    else:
        if num_classes < 1 or (c.size and (c.min() < 0 or c.max() >= num_classes)):
            raise UsageError(f"pointing_accuracy: class ids must lie in 0 … {num_classes - 1}")
        trials = np.bincount(c, minlength=num_classes)
        per_class = np.bincount(c, weights=h, minlength=num_classes) / np.maximum(trials, 1)
    mean_class = 100.0 * float(per_class.mean()) if per_class.size else math.nan
    pooled = 100.0 * float(h.sum()) / n if n else math.nan
    return {"mean_class": mean_class, "pooled": pooled, "n": n}
