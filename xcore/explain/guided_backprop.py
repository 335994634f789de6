"""Guided backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller, *Striving for Simplicity: The All
Convolutional Net*, ICLR workshop 2015; Hartley's PhD thesis, Cardiff 2021, §2.2.2.2 and §3.6.3).

At every ReLU the backward pass becomes ``δ_in = 1[a_in > 0] · max(δ_out, 0)``: only positive gradients
flow, and only through positive forward activations. Unlike Captum, which overrides ``nn.ReLU`` modules only,
every ReLU is guided — modules, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms — by
intercepting them with a ``TorchFunctionMode`` for the duration of the forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xcore.core.maps import reduce_channels
from xcore.core.targets import Target
from xcore.explain._activations import RELUS
from xcore.explain.base import register
from xcore.explain.gradient import input_gradient


class GuidedReLU(torch.autograd.Function):
    """ReLU whose backward is ``1[a > 0] · max(δ, 0)``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor) -> Tensor:
        ctx.save_for_backward(a)
        return a.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return grad.clamp(min=0) * (a > 0).to(grad.dtype)


class guided_relus(TorchFunctionMode):  # noqa: N801  (used as a context manager)
    """Within this context every ReLU call of any form is a :class:`GuidedReLU`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in RELUS:
            return GuidedReLU.apply(args[0])
        return func(*args, **(kwargs or {}))


@register("guided_backprop")
def guided_backprop(model: nn.Module, x: Tensor, target: Target, *, reduce: str = "max_abs",
                    softmax: bool = False) -> Tensor:
    """Guided-backprop map ``reduce_c(∂s/∂x)`` with every ReLU guided, (B, *S).

    Keyword parameters (the defaults are the published ones):

    - ``reduce`` = ``"max_abs"``: channel reduction (:func:`xcore.core.maps.reduce_channels`); ``max_c |GB|`` is
      the pixel score of SWAG (thesis §3.3).
    - ``softmax`` = ``False``: start from the logit ``y^c``; ``True`` starts from ``softmax(y)_c``, as SWAG does
      (thesis §3.6.3).
    """
    with guided_relus():
        g = input_gradient(model, x, target, softmax=softmax)
    return reduce_channels(g, reduce)
