"""Ablation-CAM (Desai & Ramaswamy, WACV 2020; Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — eq 2.6).

``α_k = (y^c − y^c_k) / y^c`` where ``y^c_k`` is the target score with channel k of the cached activation set to 0
and the network re-run from the layer; ``CAM = ReLU(Σ_k α_k A^k)`` at the layer's resolution (B, *S').
The ratio breaks when ``y^c ≤ 0`` (thesis §5.4.4.1: all-negative logits flip or blow up the weights); it is computed
as defined, without a guard.

"Re-run from the layer" is generic: the layer's ``forward`` is replaced (for the block only) by one returning the
ablated cached activations while the model is fed the matching (repeated) inputs, so the layer itself is never
computed in the K·B ablated forwards (as pytorch-grad-cam's swapped-in ablation layer). The modules *before* the
layer still run, ``batch_size`` at a time, since there is no model-independent way to start a forward
mid-network.

Zeroing is the paper's ablation. jacobgil/pytorch-grad-cam zeroes too when the activation minimum is 0 (post-ReLU
layers) but writes ``min − 1e7`` for signed activations; that deviation is not offered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from xcore.core.layers import default_layer, get_layer
from xcore.core.targets import Target
from xcore.explain._cam import as_channel_weights, clean_forward, pair_scores
from xcore.explain.base import register
from xcore.explain.gradcam import weighted_sum


@contextlib.contextmanager
def replaced_output(model: nn.Module, layer: str, value: Tensor) -> Iterator[None]:
    """Within the block, ``model.<layer>`` returns ``value`` without computing anything (its hooks still run)."""
    module = get_layer(model, layer)
    own = module.__dict__.get("forward")

    def forward(*_args: Any, **_kwargs: Any) -> Tensor:
        return value

    module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def ablation_weights(y: Tensor, ablated: Tensor) -> Tensor:
    """``α_k = (y^c − y^c_k) / y^c`` (eq 2.6) from clean scores (B,) and ablated scores (B, K)."""
    return (y[:, None] - ablated) / y[:, None]


@register("ablationcam")
def ablationcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, batch_size: int = 32,
                relu: bool = True) -> Tensor:
    """Ablation-CAM map at the layer's resolution (B, *S').

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the CAM layer, as :func:`xcore.explain.gradcam.gradcam` (default: the final conv
      block).
    - ``batch_size`` = 32: ablated forwards per pass (the thesis batches Ablation-CAM at 32, §5.4.5); throughput
      only.
    - ``relu`` = ``True``: the outer ReLU of the CAM.
    """
    layer = layer or default_layer(model)
    act, out, y = clean_forward(model, x, target, layer)

    def run(ks: Tensor, bs: Tensor) -> Tensor:
        ablated = act[bs].clone()
        ablated[torch.arange(len(bs), device=act.device), ks] = 0
        with replaced_output(model, layer, ablated):
            return model(x[bs])

    alpha = ablation_weights(y, pair_scores(target, out, act.shape[1], run, batch_size))
    return weighted_sum(as_channel_weights(alpha, act).to(act.dtype), act, relu)
