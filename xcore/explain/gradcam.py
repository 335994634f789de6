"""Grad-CAM (Selvaraju et al., ICCV 2017; Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — eqs 2.2–2.3 / 6.1; for video, Gupta & Ahmed, *ADL 2020
Project-III report*, §2.1 and §2.4).

``CAM^c = ReLU(Σ_k α_k^c A^k)`` with ``α_k^c = (1/Z) Σ_{ij} ∂y^c/∂A^k_{ij}``, ``A`` the activation of the
named layer (B, K, *S'), pooled over all non-channel dims (``pooling="global"``). For video activations
(B, K, T', H', W') ``pooling="time"`` pools over H'×W' only, giving one weight per channel and time slice
(``α_k^c(t)``, open-mmlab/mmaction2 ``mmaction/utils/gradcam_utils.py``). The map is returned at the layer's
native resolution; :func:`xcore.explain.run` upsamples.
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
    ``τ·T/T'`` (Gupta & Ahmed §2.4: with 10 frames and T' = 2, slice 2 from frame 6 on)."""
    idx = torch.arange(frames, device=cam.device) * cam.shape[1] // frames
    return cam[:, idx]


@register("gradcam")
def gradcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None,
            pooling: str = "global", relu: bool = True, softmax: bool = False, temporal: str = "linear") -> Tensor:
    """Grad-CAM map at the layer's resolution (B, *S').

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: dotted name of the CAM layer; ``None`` = the model's ``xcore_cam_layer``, else its last
      conv (:func:`xcore.core.layers.default_layer`): the final conv block, post-ReLU, as the thesis uses (§5.2).
    - ``pooling`` = ``"global"``: the dims ``α_k`` averages over (:func:`xcore.explain._cam.pooled_dims`): every
      position (eq 2.2; for clips T'×H'×W', as Captum and pytorch-grad-cam); ``"time"``: H'×W' per time slice.
    - ``relu`` = ``True``: the ReLU of eq 2.3; ``False`` keeps the signed sum.
    - ``softmax`` = ``False``: ``y^c`` is the logit (Selvaraju et al.: the score before the softmax);
      ``True``: ``softmax(y)_c``.
    - ``temporal`` = ``"linear"``: for a clip's T'×H'×W' map, how the T' slices reach the T frames: trilinearly
      with the rest of the upsampling, or ``"block"`` — each slice repeated over its frames, the overlay of Gupta &
      Ahmed §2.4; the map is then (B, T, H', W'). For a map without a time axis it does nothing and must stay
      ``"linear"``.
    """
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    cam = weighted_sum(pool_weights(grad, pooling), act, relu)
    if temporal not in ("linear", "block"):
        raise UsageError(f"unknown temporal mapping {temporal!r}; use 'linear' or 'block'")
    if not (x.ndim == 5 and cam.ndim == 4):
        reject_ignored(gradcam, f"a map without a time axis (input {tuple(x.shape)}, map {tuple(cam.shape)})",
                       temporal=temporal)
    return block_frames(cam, x.shape[2]) if temporal == "block" else cam
