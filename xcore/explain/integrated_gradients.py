"""Integrated gradients, XRAI form (Sundararajan, Taly, Yan, *Axiomatic Attribution for Deep Networks*, ICML 2017;
PAIR-code/saliency ``saliency/core/integrated_gradients.py``).

``IG = (x − x') ⊙ (1/m) Σ_{α ∈ linspace(0, 1, m)} ∇s(x' + α(x − x'))``: both endpoints included with equal
weight 1/m (Captum's ``riemann_trapezoid`` halves the endpoint weights instead). ``s`` is the target logit
(``softmax=True``: ``softmax(y)_c``). Project defaults (no source fixes them): m = 100 (PAIR's XRAI examples),
black baseline ``x' = 0`` in normalised space, i.e. the dataset mean colour — the meaning "set to 0" has throughout
Hartley's PhD thesis (Cardiff 2021, §2.4.2.2, §3.5.1). The m interpolated copies are batched across steps
and samples; channels are reduced with ``max_c |·|`` like the other gradient maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.maps import reduce_channels
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._copies import resolve, tiled_gradient
from xcore.explain.base import register

Baseline = str | float | Tensor


def baseline_input(x: Tensor, baseline: Baseline) -> Tensor:
    """The reference input ``x'`` (shape of ``x``): ``"black"`` = 0 (normalised space), ``"white"`` = each
    sample's ``max(x)`` everywhere (XRAI's max baseline; the method does not know the normalisation), a float
    constant, or a tensor broadcastable to ``x``."""
    if isinstance(baseline, Tensor):
        return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "white":
        peak = x.detach().flatten(1).amax(dim=1)
        return peak.reshape(-1, *([1] * (x.ndim - 1))).expand_as(x).clone()
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise UsageError(f"unknown IG baseline {baseline!r}; use 'black', 'white', a number or a tensor")


def ig_channels(model: nn.Module, x: Tensor, target: Target, baseline: Baseline, *, steps: int, batch_size: int,
                softmax: bool) -> Tensor:
    """Unreduced IG (shape of ``x``): ``(x − x') ⊙ (1/m) Σ_α ∇s(x' + α(x − x'))``; ``target`` must be resolved."""
    if steps < 2:
        raise UsageError(f"integrated_gradients needs steps >= 2 (both endpoints); got {steps}")
    x = x.detach()
    ref = baseline_input(x, baseline)
    delta = x - ref
    alphas = torch.linspace(0, 1, steps, device=x.device, dtype=x.dtype)
    total = torch.zeros_like(x)
    for start, stop in spans(steps, x.shape[0], batch_size):
        a = alphas[start:stop].reshape(-1, *([1] * x.ndim))
        total += tiled_gradient(model, ref[None] + a * delta[None], target, softmax=softmax).sum(0)
    return delta * total / steps


@register("integrated_gradients")
def integrated_gradients(model: nn.Module, x: Tensor, target: Target, *, steps: int = 100,
                         baseline: Baseline = "black", reduce: str = "max_abs", softmax: bool = False,
                         batch_size: int = 32) -> Tensor:
    """``reduce_c(IG)``, (B, *S).

    Keyword parameters (the defaults are the published ones):

    - ``steps`` = 100: the m ≥ 2 points of ``linspace(0, 1, m)``, both endpoints included (PAIR-code/saliency's
      form; 100 as its XRAI examples; a project choice).
    - ``baseline`` = ``"black"``: the reference ``x'`` (:func:`baseline_input`): ``"black"`` = 0 in normalised
      space (the dataset mean colour), ``"white"`` = each sample's max, a number, or a tensor.
    - ``reduce`` = ``"max_abs"``: channel reduction (:func:`xcore.core.maps.reduce_channels`), as the other
      gradient maps (Simonyan et al. §3.1).
    - ``softmax`` = ``False``: integrate the gradient of the logit ``y^c``; ``True`` of ``softmax(y)_c``.
    - ``batch_size`` = 32: model inputs per forward / backward pass (a throughput knob; the thesis batches at 32,
      §5.4.5); the result does not depend on it.
    """
    resolve(model, x.detach(), target, softmax=softmax)
    return reduce_channels(ig_channels(model, x, target, baseline, steps=steps, batch_size=batch_size,
                                       softmax=softmax), reduce)
