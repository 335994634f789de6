"""Vanilla gradient and input × gradient (Simonyan, Vedaldi, Zisserman, *Deep Inside Convolutional Networks*, ICLR
workshop 2014; Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff
University, 2021 — "thesis" — §2.2.2.1, §3.6.3 and Table 3.4).

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
    """Vanilla gradient map ``reduce_c(∂s/∂x)``, (B, *S).

    Keyword parameters (the defaults are the published ones):

    - ``reduce`` = ``"max_abs"``: how the C channels of ``g`` become one map
      (:func:`xcore.core.maps.reduce_channels`); ``max_c |g|`` is Simonyan et al.'s §3.1 and the thesis's §3.3.
    - ``softmax`` = ``False``: differentiate the logit ``y^c`` (Simonyan et al. backpropagate the pre-softmax
      score, thesis §2.2.2.1); ``True`` differentiates ``softmax(y)_c`` as SWAG does (thesis §3.6.3).
    """
    return reduce_channels(input_gradient(model, x, target, softmax=softmax), reduce)


@register("input_x_gradient")
def input_x_gradient(model: nn.Module, x: Tensor, target: Target, *, reduce: str = "max_abs",
                     softmax: bool = False) -> Tensor:
    """Input × gradient map ``reduce_c(x ⊙ ∂s/∂x)``, (B, *S); the product is taken before the channel reduction
    (thesis §3.6.3).

    Keyword parameters: ``reduce`` = ``"max_abs"`` and ``softmax`` = ``False``, as :func:`gradient`.
    """
    return reduce_channels(x * input_gradient(model, x, target, softmax=softmax), reduce)
