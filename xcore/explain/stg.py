"""STG-Grad-CAM, STG-CAM and the gradient heatmap for skeleton models (Das, Ortega, *Gradient-weighted Class
Activation Mapping for Spatio Temporal Graph Convolutional Network*, §2.2, eqs 3–5 and the STG-CAM equation before
eq 3).

Input ``x`` is (B, C, T, V, M): coordinates × frames × joints × person slots. ST-GCN folds the M persons into
the batch, so a block's output is (B·M, K, T', V); it is unfolded to (B, M, K, T', V) here.

- Gradient heatmap (eq 3): ``H_grad(n, t) = ‖ReLU(∂y^c/∂X_{:,n,t})‖₂`` over the C coordinates, at input
  resolution (B, T, V).
- STG-Grad-CAM (eqs 4–5): ``α_k = (1/(M·T'·V)) Σ_{m,n,t} ∂y^c/∂F_{m,k,n,t}`` (pooled jointly over person slots,
  nodes and time), ``H = ReLU(Σ_k α_k F_k)`` per slot; any layer with a (B·M, K, T', V) output.
- STG-CAM: ``H = ReLU(Σ_k w^c_k F^L_k)`` with ``w`` the weights of the linear / 1×1-conv head after global
  pooling (the exact CAM decomposition of ST-GCN's ``extract_feature``). Since the head averages over
  (M, T', V), STG-Grad-CAM on the last block equals STG-CAM / (M·T'·V).

Person slots are folded back by the max over the sample's non-empty slots (a slot whose input is all zero is
empty). CAM maps are (B, T', V) and reach the input frames by repeating each cell (``resize_mode="nearest"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.context import capture
from xcore.core.layers import default_layer, get_layer
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.base import register
from xcore.explain.gradcam import activation_and_gradient


def occupied_slots(x: Tensor) -> Tensor:
    """(B, M) bool: which person slots hold any non-zero coordinate."""
    return x.detach().flatten(1, -2).abs().amax(dim=1) > 0


def fold_persons(maps: Tensor, x: Tensor) -> Tensor:
    """(B, M, *S) per-slot maps -> (B, *S): the max over the non-empty slots (0 where every slot is empty)."""
    occ = occupied_slots(x).reshape(maps.shape[0], maps.shape[1], *([1] * (maps.ndim - 2)))
    masked = maps.masked_fill(~occ, float("-inf")).amax(dim=1)
    return torch.where(torch.isfinite(masked), masked, torch.zeros_like(masked))


def per_person(t: Tensor, x: Tensor) -> Tensor:
    """A layer output (B·M, K, T', V) as (B, M, K, T', V); a (B, K, T', V) output is one slot."""
    b, m = x.shape[0], x.shape[-1]
    if t.ndim != 4:
        raise UsageError(f"an ST-GCN layer output is (B·M, K, T, V); got shape {tuple(t.shape)}")
    if t.shape[0] == b * m:
        return t.reshape(b, m, *t.shape[1:])
    if t.shape[0] == b:
        return t[:, None]
    raise UsageError(f"layer output batch {t.shape[0]} is neither B={b} nor B·M={b * m}")


def head_weights(model: nn.Module, head: str | None) -> Tensor:
    """(classes, K) weights of the linear or 1×1-conv head (default: the model's last such module)."""
    if head is not None:
        module = get_layer(model, head)
    else:
        module = None
        for m in model.modules():
            if isinstance(m, nn.Linear) or (isinstance(m, nn.modules.conv._ConvNd) and m.weight[0, 0].numel() == 1):
                module = m
        if module is None:
            raise UsageError(f"{type(model).__name__} has no linear head; name it with head=")
    w = getattr(module, "weight", None)
    if w is None or w.ndim < 2 or w[0, 0].numel() != 1:
        raise UsageError("the STG-CAM head must be a linear or 1×1 convolution layer")
    return w.detach().reshape(w.shape[0], w.shape[1])


@register("stg_gradcam", resize_mode="nearest")
def stg_gradcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None) -> Tensor:
    """STG-Grad-CAM (eqs 4–5): (B, T', V) at the layer's resolution.

    Keyword parameter (the default is the published one):

    - ``layer`` = ``None``: an ST-GCN block with a (B·M, K, T', V) output; ``None`` = the model's
      ``xcore_cam_layer``, else its last conv (:func:`xcore.core.layers.default_layer`) — the last
      spatio-temporal graph convolution before the classifier, which Das & Ortega explain (§2.2; any layer l works).
    """
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model))
    act, grad = per_person(act, x), per_person(grad, x)
    alpha = grad.mean(dim=(1, 3, 4))  # (B, K): over person slots, time and nodes
    cam = torch.einsum("bk,bmktv->bmtv", alpha, act).clamp(min=0)
    return fold_persons(cam, x)


@register("stg_cam", resize_mode="nearest")
def stg_cam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None,
            head: str | None = None) -> Tensor:
    """STG-CAM: ``ReLU(Σ_k w^c_k F_k)`` with the head's class weights, (B, T', V).

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the last ST-GCN block, feeding the global average pooling (Das & Ortega's ``F^L``);
      ``None`` = the model's ``xcore_cam_layer``, else its last conv.
    - ``head`` = ``None``: dotted name of the linear or 1×1-conv classifier whose weights are ``w^c``; ``None`` = the
      model's last such module (ST-GCN's ``fcn``).
    """
    w = head_weights(model, head)
    with capture(model, layer or default_layer(model)) as store, torch.no_grad():
        out = model(x)
    if not target.is_class:
        raise UsageError("STG-CAM explains class scores; use stg_gradcam for a target function")
    classes = target.classes(out)
    act = per_person(store["act"], x)
    if act.shape[2] != w.shape[1]:
        raise UsageError(f"head has {w.shape[1]} inputs but the layer has {act.shape[2]} channels")
    cam = torch.einsum("bk,bmktv->bmtv", w[classes.to(w.device)], act).clamp(min=0)
    return fold_persons(cam, x)


@register("stg_gradient")
def stg_gradient(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """Gradient heatmap (eq 3): ``‖ReLU(∂y^c/∂X_{:,n,t})‖₂`` over coordinates, (B, T, V)."""
    xg = x.detach().requires_grad_(True)
    scores = target.select(model(xg))
    (g,) = torch.autograd.grad(scores.sum(), xg)
    h = g.clamp(min=0).pow(2).sum(dim=1).sqrt()  # (B, T, V, M)
    return fold_persons(h.movedim(-1, 1), x)
