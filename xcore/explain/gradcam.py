"""Grad-CAM (Selvaraju et al.; thesis eqs 2.2–2.3 / 6.1; 001 §2.1 for video; methods.md §2, §7.1).

``CAM^c = ReLU(Σ_k α_k^c A^k)`` with ``α_k^c = (1/Z) Σ_{ij} ∂y^c/∂A^k_{ij}``, ``A`` the activation of the
named layer (B, K, *S'), pooled over all non-channel dims (``pooling="global"``). For video activations
(B, K, T', H', W') ``pooling="time"`` pools over H'×W' only, giving one weight per channel and time slice
(``α_k^c(t)``). The map is returned at the layer's native resolution; :func:`xcore.explain.run` upsamples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.context import capture
from xcore.core.layers import default_layer
from xcore.core.params import reject_ignored
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._cam import pooled_dims
from xcore.explain.base import register


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


def block_frames(cam: Tensor, frames: int) -> Tensor:
    """(B, T', H', W') -> (B, T, H', W'): frame f shows slice ``floor(f·T'/T)``, i.e. slice τ starts at frame
    ``τ·T/T'`` (001_bccc7524706a9455.txt §2.4: with 10 frames and T' = 2, slice 2 from frame 6 on)."""
    idx = torch.arange(frames, device=cam.device) * cam.shape[1] // frames
    return cam[:, idx]


@register("gradcam")
def gradcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None,
            pooling: str = "global", relu: bool = True, softmax: bool = False, temporal: str = "linear") -> Tensor:
    """Grad-CAM map at the layer's resolution (B, *S').

    For clips, ``temporal`` maps the T' slices to the T frames: ``"linear"`` (default; trilinear with the rest of
    the upsampling) or ``"block"`` (each slice repeated over its frames, the seed's overlay; the map is then
    (B, T, H', W') and only H'×W' is interpolated).
    """
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    cam = weighted_sum(pool_weights(grad, pooling), act, relu)
    if temporal not in ("linear", "block"):
        raise UsageError(f"unknown temporal mapping {temporal!r}; use 'linear' or 'block'")
    if not (x.ndim == 5 and cam.ndim == 4):
        reject_ignored(gradcam, f"a map without a time axis (input {tuple(x.shape)}, map {tuple(cam.shape)})",
                       temporal=temporal)
    return block_frames(cam, x.shape[2]) if temporal == "block" else cam
