"""Vanilla gradient (Simonyan et al.) and input × gradient (methods.md §1; thesis §2.2.2.1, §3.6.3).

Per input element ``g = ∂s/∂x`` with ``s = y^c`` (pre-softmax logit, default) or ``softmax(y)_c``;
the map is the channel reduction ``M_ij = max_c |g_ijc|`` by default. Input × gradient multiplies
``x ⊙ g`` before the reduction (so zero pixels get zero attribution).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.maps import reduce_channels
from xcore.core.targets import Target
from xcore.explain.base import register


def input_gradient(model: nn.Module, x: Tensor, target: Target, *, softmax: bool = False) -> Tensor:
    """``∂s/∂x`` for the whole batch at once (samples are independent in eval mode), shape of ``x``."""
    x = x.detach().requires_grad_(True)
    scores = target.select(model(x), softmax=softmax)
    (g,) = torch.autograd.grad(scores.sum(), x)
    return g


@register("gradient")
def gradient(model: nn.Module, x: Tensor, target: Target, *, reduce: str = "max_abs",
             softmax: bool = False) -> Tensor:
    """Vanilla gradient map ``reduce_c(∂s/∂x)``."""
    return reduce_channels(input_gradient(model, x, target, softmax=softmax), reduce)


@register("input_x_gradient")
def input_x_gradient(model: nn.Module, x: Tensor, target: Target, *, reduce: str = "max_abs",
                     softmax: bool = False) -> Tensor:
    """Input × gradient map ``reduce_c(x ⊙ ∂s/∂x)``."""
    return reduce_channels(x * input_gradient(model, x, target, softmax=softmax), reduce)
