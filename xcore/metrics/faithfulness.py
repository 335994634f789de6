"""Faithfulness: Average Drop and Increase in Confidence (Chattopadhay et al., *Grad-CAM++*, WACV 2018; Hartley,
*An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 —
"thesis" — §5.4.2, eqs 5.4–5.6, Table 5.1).

Per sample: the map ``L^c`` min–max normalised to [0, 1] at input size, the explanation image ``E^c = L^c ∘ I``,
``Y = p_c(I)`` and ``O = p_c(E)`` with ``c`` the explained class (the class predicted on the clean input by default).
Over a data set (:func:`average_drop_increase`): ``AD = (100/N) Σ max(0, Y − O)/Y`` (eq 5.4, lower "better") and
``IIC = (100/N) Σ 1[Y < O]`` (eq 5.5, strict, higher "better"), with the number of increases and their mean
``O − Y``. The thesis shows the metric rewards large, uniformly high maps — the ``constant`` baseline (0.9
everywhere) beats every method on both (Table 5.1) — and recommends discontinuing it; it is computed here as that
documented, flawed metric, with the baseline beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xcore.core.context import model_device, model_state
from xcore.core.maps import map_grid, resize_to
from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target, Targets
from xcore.errors import UsageError
from xcore.metrics.base import register

MULTIPLY = ("normalised", "raw")


def minmax(maps: Tensor) -> Tensor:
    """Each map (B, *S) scaled to [0, 1] by its own min and max; a constant map becomes all 0."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp(min=torch.finfo(flat.dtype).tiny)).reshape(maps.shape)


@register("faithfulness", keys=("confidence", "masked_confidence"))
def faithfulness(model: nn.Module, x: Tensor, maps: Tensor, targets: Targets = None, *,
                 multiply: str = "normalised", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> dict[str, Tensor]:
    """Per-sample ``confidence`` Y = p_c(x) and ``masked_confidence`` O = p_c(L ∘ x) (B,), on the CPU.

    Keyword parameters (the defaults are the published ones):

    - ``multiply`` = ``"normalised"``: multiply the normalised input, so a masked pixel becomes 0 = the mean colour
      (frgfm/torch-cam ``torchcam/metrics.py``, jacobgil/pytorch-grad-cam); ``"raw"``: multiply the image in
      [0, 1] (``x·std + mean``), so a masked pixel becomes black, and normalise again.
    - ``mean``, ``std`` = ImageNet's: the input's normalisation, used by ``multiply="raw"`` only.
    """
    if multiply not in MULTIPLY:
        raise UsageError(f"unknown multiply {multiply!r}; use one of {', '.join(MULTIPLY)}")
    device = model_device(model)
    x = x.to(device)
    B = x.shape[0]
    lmap = minmax(resize_to(maps.to(device).float(), map_grid(x, maps)))
    if not torch.isfinite(lmap).all():
        raise ValueError("explanation map contains NaN or inf")
    weight = lmap.reshape(B, 1, *lmap.shape[1:], *([1] * (x.ndim - 2 - (lmap.ndim - 1))))
    if multiply == "normalised":
        masked = x * weight
    else:
        shape = (1, -1, *([1] * (x.ndim - 2)))
        m = torch.as_tensor(mean, dtype=x.dtype, device=device).reshape(shape)
        s = torch.as_tensor(std, dtype=x.dtype, device=device).reshape(shape)
        masked = ((x * s + m) * weight - m) / s
    with model_state(model), torch.no_grad():
        logits = model(x).float()
        classes = logits.argmax(dim=1) if targets is None else Target.of(targets, B).classes(logits)
        y = logits.softmax(1).gather(1, classes[:, None]).squeeze(1)
        o = model(masked).float().softmax(1).gather(1, classes[:, None]).squeeze(1)
    return {"confidence": y.double().cpu(), "masked_confidence": o.double().cpu()}


def average_drop_increase(confidence: Tensor, masked: Tensor) -> dict[str, float]:
    """Eqs 5.4–5.5 over a data set: ``AD`` and ``IIC`` (percent), ``n_increase`` = #{O > Y} and ``mean_increase``,
    the mean ``O − Y`` over those samples (0 when there are none)."""
    y, o = confidence.double(), masked.double()
    inc = o > y
    return {"AD": float(100 * ((y - o).clamp(min=0) / y).mean()), "IIC": float(100 * inc.double().mean()),
            "n_increase": int(inc.sum()), "mean_increase": float((o - y)[inc].mean()) if inc.any() else 0.0}
