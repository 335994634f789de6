"""Grad-CAM (Selvaraju et al.; thesis eqs 2.2–2.3 / 6.1; 001 §2.1 for video; methods.md §2, §7.1).

``CAM^c = ReLU(Σ_k α_k^c A^k)`` with ``α_k^c = (1/Z) Σ_{ij} ∂y^c/∂A^k_{ij}``, ``A`` the activation of the
named layer (B, K, *S'), pooled over all non-channel dims (``pooling="global"``). For video activations
(B, K, T', H', W') ``pooling="time"`` pools over H'×W' only, giving one weight per channel and time slice
(``α_k^c(t)``). The map is returned at the layer's native resolution; :func:`xcore.explain.run` upsamples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.explain.base import Target, capture, default_layer, register
from xcore.explain.cam_common import pooled_dims


def activation_and_gradient(model: nn.Module, x: Tensor, target: Target, layer: str,
                            softmax: bool = False) -> tuple[Tensor, Tensor]:
    """``A`` and ``∂s/∂A`` of ``layer`` for the batch (one forward, one backward)."""
    x = x.detach().requires_grad_(True)  # parameters are frozen: the input anchors the graph
    with capture(model, layer) as store:
        out = model(x)
    act = store["act"]
    scores = target.select(out, softmax=softmax)
    (grad,) = torch.autograd.grad(scores.sum(), act)
    return act.detach(), grad.detach()


def pool_weights(grad: Tensor, pooling: str) -> Tensor:
    """Channel weights broadcastable against ``A``: the mean of ``grad`` over the pooled dims."""
    return grad.mean(dim=pooled_dims(grad, pooling), keepdim=True)


def weighted_sum(weights: Tensor, act: Tensor, relu: bool) -> Tensor:
    """``Σ_k α_k A^k`` then ReLU (eq 2.3)."""
    cam = (weights * act).sum(dim=1)
    return cam.clamp(min=0) if relu else cam


@register("gradcam")
def gradcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None,
            pooling: str = "global", relu: bool = True, softmax: bool = False) -> Tensor:
    """Grad-CAM map at the layer's resolution (B, *S')."""
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    return weighted_sum(pool_weights(grad, pooling), act, relu)
