"""Saliency Tubes (Stergiou, Kapidis, Kalliatakis, Chrysoulas, Veltkamp, Poppe, *Saliency Tubes: Visual Explanations
for Spatio-Temporal Convolutions*, ICIP 2019; alexandrosstergiou/Saliency-Tubes ``heat_tubes_mfnet_pytorch.py``).

Class activation mapping in 3-D: ``M^c(t, x, y) = Σ_k w^c_k A^k(t, x, y)``, with ``A`` the activation of ``layer``
(B, K, T', H', W') and ``w^c`` row ``c`` of the final linear layer's weight. **No ReLU** (the map is signed) and no
bias. It needs a head of global average pooling + one linear layer on ``layer`` (so ``fc.in_features = K``); C3D's
three-FC head does not qualify (Hartley's PhD thesis, Cardiff 2021 — "thesis" — §4.5.2.1). On such a head
Grad-CAM's weights are ``α_k = w^c_k / Z`` (``Z = T'·H'·W'``), so Grad-CAM = ReLU(Saliency Tube) / Z (why both score
identically, thesis Table 4.2).

The map is returned raw at the layer's native T'×H'×W'; :func:`xcore.explain.run` upsamples it trilinearly
(``align_corners=False``, as every map in xcore). The reference code instead zooms with an order-3 spline
(``scipy.ndimage.zoom``) and min–max normalises the result for display: both are visualisation steps, not part of
the method here. On 2-D activations (B, K, H', W') it is plain CAM (Zhou et al.).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.context import capture
from xcore.core.layers import default_layer, get_layer
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._cam import as_channel_weights, positions
from xcore.explain.base import register
from xcore.explain.gradcam import weighted_sum


def final_linear(model: nn.Module, fc: str | None = None) -> nn.Linear:
    """The classifier layer whose weights are ``w^c``: ``model.<fc>`` if named, else the model's last ``nn.Linear``."""
    if fc is not None:
        layer = get_layer(model, fc)
        if not isinstance(layer, nn.Linear):
            raise UsageError(f"fc={fc!r} is a {type(layer).__name__}, not an nn.Linear")
        return layer
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise UsageError(f"{type(model).__name__} has no nn.Linear layer; Saliency Tubes needs GAP + one linear layer")
    return last


@register("saliency_tubes")
def saliency_tubes(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None,
                   fc: str | None = None) -> Tensor:
    """Saliency Tube ``Σ_k w^c_k A^k`` (B, *S') at the layer's resolution, signed, no ReLU (the reference code's
    map before its display zoom and min–max).

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the activation feeding the global average pooling; ``None`` = the model's
      ``xcore_cam_layer``, else its last conv (:func:`xcore.core.layers.default_layer`).
    - ``fc`` = ``None``: dotted name of the final linear layer whose weights are ``w^c``; ``None`` = the model's
      last ``nn.Linear`` (the reference code's ``model.classifier``-style head).

    Targets must be class indices (given or predicted).
    """
    if not target.is_class:
        raise UsageError("saliency_tubes explains a class (final-layer weights); callable targets are not supported")
    head = final_linear(model, fc)
    with torch.no_grad(), capture(model, layer or default_layer(model)) as store:
        out = model(x)
    act = store["act"].detach()
    positions(act)
    if head.in_features != act.shape[1]:
        raise UsageError(f"saliency_tubes needs GAP + one linear layer on the CAM layer: the linear layer takes "
                         f"{head.in_features} features but the layer has {act.shape[1]} channels")
    w = head.weight.detach()[target.classes(out)].to(act.dtype)  # (B, K) = w^c_k per sample
    return weighted_sum(as_channel_weights(w, act), act, relu=False)
