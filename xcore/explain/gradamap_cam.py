"""Grad-AMap-CAM (thesis §6.2.2.1; methods.md §2 and §11.1).

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
    """Grad-AMap-CAM map at the layer's resolution (B, *S')."""
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    return weighted_sum(gradamap_weights(act, grad), act, relu)
