"""Shared batching for sampling methods (IG, SmoothGrad, occlusion, RISE): many perturbed copies of a batch.

A method evaluates ``n`` perturbed copies of the batch ``x`` (B, C, *S). Copies are stacked copy-major into
passes of at most ``batch_size`` model inputs (at least one whole copy of the batch per pass), so that row
``j·B + i`` of a pass is copy ``j`` of sample ``i``; :meth:`Target.tile` gives the matching target. The
predicted class is always fixed on the clean input first (:func:`resolve`), never on a perturbed copy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.targets import Target
from xcore.explain.gradient import input_gradient


def resolve(model: nn.Module, x: Tensor, target: Target, *, softmax: bool = False) -> Tensor | None:
    """Fix the predicted classes on the clean input; returns the clean target scores (B,) when it ran a forward."""
    if target.resolved:
        return None
    with torch.no_grad():
        return target.select(model(x), softmax=softmax)


def clean_scores(model: nn.Module, x: Tensor, target: Target, *, softmax: bool = False) -> Tensor:
    """The target score of the clean input (B,), resolving the predicted classes on the way."""
    scores = resolve(model, x, target, softmax=softmax)
    if scores is None:
        with torch.no_grad():
            scores = target.select(model(x), softmax=softmax)
    return scores


def tiled_gradient(model: nn.Module, xs: Tensor, target: Target, *, softmax: bool = False) -> Tensor:
    """``∂s/∂x̃`` for the copies ``xs`` (k, B, C, *S) in one forward/backward; same shape as ``xs``."""
    k, b = xs.shape[:2]
    return input_gradient(model, xs.reshape(k * b, *xs.shape[2:]), target.tile(k), softmax=softmax).reshape(xs.shape)


def tiled_scores(model: nn.Module, xs: Tensor, target: Target, *, softmax: bool = False) -> Tensor:
    """The target score of each copy in ``xs`` (k, B, C, *S), shape (k, B); one forward, no autograd."""
    k, b = xs.shape[:2]
    with torch.no_grad():
        return target.tile(k).select(model(xs.reshape(k * b, *xs.shape[2:])), softmax=softmax).reshape(k, b)
