"""Grad-AMap-CAM (Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis,
Cardiff University, 2021 — "thesis" — §6.2.1, eq 6.6, and §6.2.2.1).

Weights are the Grad-AMap filter scores (eq 6.6) ``α_k = (1/Z) Σ_ij (∂y^c/∂A^k_ij) · A^k_ij`` (signed; Z = number of
positions, H'W' or T'H'W'), ``CAM = ReLU(Σ_k α_k A^k)``. ``y^c`` is the logit by default (softmax option).
For a GAP + linear head ``Σ_k α_k = (y^c − b_c)/Z``. BatchNorm caveat (§6.2.2.1): the score relies on activation
signs; in BN networks record the tap point.
"""

from __future__ import annotations

from torch import Tensor, nn

from xcore.core.layers import default_layer
from xcore.core.targets import Target
from xcore.explain._cam import positions
from xcore.explain.base import register
from xcore.explain.gradcam import activation_and_gradient, weighted_sum


def gradamap_weights(act: Tensor, grad: Tensor) -> Tensor:
    """Grad-AMap scores ``α_k`` (B, K, 1, ...) of eq 6.6: the mean over positions of gradient × activation."""
    return (grad * act).mean(dim=positions(act), keepdim=True)


@register("gradamap_cam")
def gradamap_cam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, relu: bool = True,
                 softmax: bool = False) -> Tensor:
    """Grad-AMap-CAM map at the layer's resolution (B, *S').

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the CAM layer, as :func:`xcore.explain.gradcam.gradcam` (default: the final conv
      block).
    - ``relu`` = ``True``: the outer ReLU of the CAM.
    - ``softmax`` = ``False``: ``y^c`` is the logit; §6.2.1 says "class specific softmax", but the reported
      Spearman of 0.998–0.999 between β and the pre-softmax score (§6.3) follows from the logit.
    """
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    return weighted_sum(gradamap_weights(act, grad), act, relu)
