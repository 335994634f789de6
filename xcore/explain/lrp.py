"""Deep Taylor decomposition / LRP for 1D, 2D and 3D CNNs (Hiley, Taylor, Preece, Hicks, Marshall, *Discriminating
Spatial and Temporal Relevance in Deep Taylor Decompositions for Explainable Activity Recognition*, §4.3; the rules'
formulas, sources and the peers' conventions: docs/methods/lrp.md).

Relevance starts at the explained output (one-hot 1 at the class, as liamhiley/torchexplain; ``init="score"``
starts from ``y^c``) and flows back through a backward pass whose "gradient" *is* the relevance:

- conv / linear (any ``_ConvNd``, ``nn.Linear``): the αβ rule (α − β = 1; by default α = 1, β = 0 with the bias
  ignored, as torchexplain and innvestigate's ``Alpha1Beta0IgnoreBiasRule``; ``bias=True``: b⁺ / b⁻ in the
  denominators, as the paper's formula and zennit's ``AlphaBeta``);
- the first conv / linear layer executed: the z^β (box) rule with the input bounds l, h (the bias cancels);
- average pools: proportional ``R_k = x_k R_j / Σ_k' x_k'`` (torchexplain's code) or ``avgpool="uniform"``,
  ``R_k = R_j / N`` (the paper's text);
- sums of two activations (residual connections, in any form: ``a + b``, ``out += identity``): proportional;
- max pools: the winner takes all (their plain gradient, so no rule is attached to them);
- ReLU and every other element-wise activation (:data:`xcore.explain._activations.ACTIVATIONS`, as modules or
  functions): relevance passes through, ``R_in = R_out`` ("ReLU nonlinearities simply pass on relevance", §4.3;
  zennit's ``Pass``), also at units the activation zeroed, which a later unfolded BatchNorm's shift can make relevant;
- BatchNorm: folded into the preceding conv first (:mod:`xcore.models.fold`); one that cannot be folded
  passes relevance through unchanged.

Denominators that are exactly 0 give relevance 0 (torchexplain adds ε only there, with ε = 0). Every rule is one
call of :func:`redistribute`: ``R_in = Σ_t c_t · a_t ⊙ J_tᵀ (R / Σ_t c_t f(a_t; w_t))``, with the transposed
Jacobian of the layer's own (dimension-agnostic) forward computed by autograd. The map is the relevance
summed over input channels (``reduce``), signed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xcore.core.maps import reduce_channels
from xcore.core.params import by_value, ignores
from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._activations import ACTIVATIONS
from xcore.explain.base import register
from xcore.models.fold import folded

Rule = Callable[[nn.Module, Tensor, Tensor], Tensor]
Term = tuple[float, Tensor, Tensor | None]  # (coefficient c_t, layer input a_t, weight w_t or None = as is)

_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_AVGPOOL = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
_BATCHNORM = nn.modules.batchnorm._BatchNorm


def safe_divide(r: Tensor, z: Tensor) -> Tensor:
    """``r / z`` with 0 where ``z == 0`` (no relevance flows through a zero denominator)."""
    return r / z.masked_fill(z == 0, float("inf"))


def layer_forward(module: nn.Module, a: Tensor, weight: Tensor | None, bias: Tensor | None = None) -> Tensor:
    """``module``'s own forward on ``a`` with ``weight`` / ``bias`` swapped in (``weight=None``: the module)."""
    if weight is None:
        return module(a)
    if isinstance(module, nn.modules.conv._ConvNd):
        return module._conv_forward(a, weight, bias)
    return nn.functional.linear(a, weight, bias)


def redistribute(module: nn.Module, terms: Sequence[Term], r: Tensor, bias: Tensor | None = None) -> Tensor:
    """One LRP step: ``z = Σ_t c_t f(a_t; w_t) + b``, ``R_in = Σ_t c_t a_t ⊙ J_{w_t}ᵀ (R / z)``.

    ``f`` is linear in its input (bias excluded), so ``c_t J_{w_t}ᵀ s`` is the autograd backward of ``z`` to ``a_t``.
    """
    with torch.enable_grad():
        leaves = [a.detach().requires_grad_(True) for _, a, _ in terms]
        z = sum(c * layer_forward(module, leaf, w) for (c, _, w), leaf in zip(terms, leaves, strict=True))
        assert isinstance(z, Tensor)
        if bias is not None:
            z = z + bias.reshape((-1,) + (1,) * (z.ndim - 2))
        grads = torch.autograd.grad(z, leaves, safe_divide(r, z.detach()))
    return sum(a * g for (_, a, _), g in zip(terms, grads, strict=True))  # type: ignore[return-value]  # g has c_t


def alpha_beta(alpha: float = 1.0, beta: float = 0.0, bias: bool = False) -> Rule:
    """The αβ rule ``R_i = Σ_j (α z⁺_ij / (Σ_i z⁺_ij + b⁺_j) − β z⁻_ij / (Σ_i z⁻_ij + b⁻_j)) R_j``, α − β = 1,
    ``z_ij = x_i w_ij``; for signed inputs ``z⁺ = x⁺w⁺ + x⁻w⁻``, ``z⁻ = x⁺w⁻ + x⁻w⁺`` (b = 0 unless ``bias``)."""
    if alpha - beta != 1 or beta < 0:
        raise UsageError(f"LRP needs alpha - beta = 1 and beta >= 0; got alpha={alpha}, beta={beta}")

    def rule(module: nn.Module, x: Tensor, r: Tensor) -> Tensor:
        w, b = module.weight, module.bias if bias else None
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        xp = x.clamp(min=0)
        xn = x.clamp(max=0) if bool((x < 0).any()) else None  # post-ReLU inputs skip the x⁻ terms

        def part(w_same: Tensor, w_cross: Tensor, b_part: Tensor | None) -> Tensor:
            terms: list[Term] = [(1.0, xp, w_same)] + ([(1.0, xn, w_cross)] if xn is not None else [])
            return redistribute(module, terms, r, b_part)

        out = alpha * part(wp, wn, None if b is None else b.clamp(min=0))
        if beta:
            out = out - beta * part(wn, wp, None if b is None else b.clamp(max=0))
        return out

    return rule


def z_box(low: Tensor, high: Tensor) -> Rule:
    """The z^β rule ``R_i = Σ_j (z_ij − l_i w⁺_ij − h_i w⁻_ij) / Σ_i' (z_i'j − l_i' w⁺_i'j − h_i' w⁻_i'j) · R_j`` for
    inputs bounded by ``low ≤ x ≤ high`` (broadcast to the input's shape)."""

    def rule(module: nn.Module, x: Tensor, r: Tensor) -> Tensor:
        w = module.weight
        lo, hi = low.to(x).expand_as(x), high.to(x).expand_as(x)
        return redistribute(module, [(1.0, x, w), (-1.0, lo, w.clamp(min=0)), (-1.0, hi, w.clamp(max=0))], r)

    return rule


def proportional(module: nn.Module, x: Tensor, r: Tensor) -> Tensor:
    """The z-rule without parameters: ``R_k = x_k ∂f_j/∂x_k R_j / f_j(x)`` (average pools)."""
    return redistribute(module, [(1.0, x, None)], r)


def passthrough(module: nn.Module, x: Tensor, r: Tensor) -> Tensor:
    """Relevance passes unchanged (element-wise layers that are not gates, e.g. an unfolded BatchNorm)."""
    return r


class _Relevance(torch.autograd.Function):
    """Identity on the layer's output whose backward maps output relevance to input relevance by ``rule``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor, module: nn.Module, rule: Rule) -> Tensor:
        ctx.save_for_backward(x)
        ctx.module, ctx.rule = module, rule
        return out.clone()

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        return ctx.rule(ctx.module, x, r), None, None, None


class _Sum(torch.autograd.Function):
    """``a + b`` with the proportional rule ``R_a = a R / (a + b)``, ``R_b = b R / (a + b)``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, Tensor]:
        a, b = ctx.saved_tensors
        s = safe_divide(r, a + b)
        return a * s, b * s


class _Pass(torch.autograd.Function):
    """``f(a)`` forward (in place if ``f`` is), identity backward: the pass-through rule of an activation."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        out = f(a)
        if out is a:  # an in-place form (relu_, F.relu(inplace=True)): a is modified, as without the rule
            ctx.mark_dirty(a)
        return out

    @staticmethod
    def backward(ctx: Any, r: Tensor) -> tuple[Tensor, None]:
        return r, None


_ADDS = {torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__, Tensor.add_}


class _ElementwiseRules(TorchFunctionMode):
    """Every sum of two same-shape activations (both in the autograd graph) becomes a :class:`_Sum`, every
    element-wise activation of a tensor in the graph a :class:`_Pass`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _ADDS and len(args) == 2 and not kwargs:
            a, b = args
            if (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
                    and a.requires_grad and b.requires_grad):
                return _Sum.apply(a, b)
        if func in ACTIVATIONS and args and isinstance(args[0], Tensor) and args[0].requires_grad:
            return _Pass.apply(args[0], lambda a: func(a, *args[1:], **kwargs))
        return func(*args, **kwargs)


@contextlib.contextmanager
def lrp_rules(model: nn.Module, layer_rule: Rule, first_rule: Rule, avgpool_rule: Rule | None) -> Iterator[None]:
    """Attach the rules to ``model``'s layers for the forward passes inside the block; all removed on exit.

    The first conv / linear layer *executed* gets ``first_rule``, every later one ``layer_rule``; sums and
    element-wise activations, in any form, get their rules from :class:`_ElementwiseRules`.
    """
    state = {"first": True}

    def hook_for(kind: str) -> Callable[[nn.Module, tuple, Tensor], Tensor]:
        def hook(module: nn.Module, inputs: tuple, out: Tensor) -> Tensor:
            if kind == "linear":
                rule = first_rule if state["first"] else layer_rule
                state["first"] = False
            else:
                rule = avgpool_rule if kind == "avgpool" else passthrough  # type: ignore[assignment]
            return _Relevance.apply(inputs[0], out.detach(), module, rule)

        return hook

    handles = []
    for m in model.modules():
        if isinstance(m, _LINEAR):
            handles.append(m.register_forward_hook(hook_for("linear")))
        elif isinstance(m, _AVGPOOL) and avgpool_rule is not None:
            handles.append(m.register_forward_hook(hook_for("avgpool")))
        elif isinstance(m, _BATCHNORM):
            handles.append(m.register_forward_hook(hook_for("batchnorm")))
    try:
        with _ElementwiseRules():
            yield
    finally:
        for h in handles:
            h.remove()


def input_bounds(model: nn.Module, x: Tensor, low: float | Sequence[float] | None,
                 high: float | Sequence[float] | None) -> tuple[Tensor, Tensor]:
    """The z^β bounds, shaped (1, C, 1, …): as given; else ``model.xcore_input_bounds``; else, for 3-channel
    input, the ImageNet-normalised pixel range ``((0 − mean)/std, (1 − mean)/std)`` every image model here uses;
    else the batch's per-channel min / max."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if low is None and high is None:
        bounds = getattr(model, "xcore_input_bounds", None)
        if bounds is not None:
            low, high = bounds
        elif x.shape[1] == 3:
            low = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
            high = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
        else:
            dims = [d for d in range(x.ndim) if d != 1]
            return x.amin(dim=dims).reshape(shape), x.amax(dim=dims).reshape(shape)
    if low is None or high is None:
        raise UsageError("give both LRP input bounds low= and high=, or neither")
    lo = torch.as_tensor(low, dtype=x.dtype, device=x.device).reshape(shape)
    hi = torch.as_tensor(high, dtype=x.dtype, device=x.device).reshape(shape)
    return lo, hi


def relevance(model: nn.Module, x: Tensor, target: Target, *, alpha: float = 1.0, beta: float = 0.0,
              bias: bool = False, first: str = "zbox", low: Any = None, high: Any = None,
              avgpool: str = "proportional", init: str = "onehot") -> Tensor:
    """Input relevance, shape of ``x``: the backward of the explained output under the LRP rules."""
    if first not in ("zbox", "alpha_beta"):
        raise UsageError(f"unknown LRP first-layer rule {first!r}; use zbox or alpha_beta")
    if avgpool not in ("proportional", "uniform"):
        raise UsageError(f"unknown LRP avgpool rule {avgpool!r}; use proportional or uniform")
    if init not in ("onehot", "score"):
        raise UsageError(f"unknown LRP initial relevance {init!r}; use onehot or score")
    layer_rule = alpha_beta(alpha, beta, bias)
    first_rule = z_box(*input_bounds(model, x, low, high)) if first == "zbox" else layer_rule
    net = folded(model)
    x = x.detach().requires_grad_(True)
    with lrp_rules(net, layer_rule, first_rule, proportional if avgpool == "proportional" else None):
        out = net(x)
    s = target.select(out)
    if init == "score":
        s = s * s.detach()
    (r,) = torch.autograd.grad(s.sum(), x)
    return r


@register("lrp")
@ignores(by_value("first", {"alpha_beta": ("low", "high")}))
def lrp(model: nn.Module, x: Tensor, target: Target, *, alpha: float = 1.0, beta: float = 0.0, bias: bool = False,
        first: str = "zbox", low: Any = None, high: Any = None, avgpool: str = "proportional",
        init: str = "onehot", reduce: str = "sum") -> Tensor:
    """Deep Taylor / LRP map (B, *S): input relevance (:func:`relevance`) reduced over channels.

    Keyword parameters (the defaults are the published ones; docs/methods/lrp.md §1):

    - ``alpha`` = 1.0, ``beta`` = 0.0: the αβ rule's weights, α − β = 1 (torchexplain's defaults; Hiley et al. do
      not state them).
    - ``bias`` = ``False``: ignore the biases, as torchexplain; ``True`` adds b⁺ / b⁻ to the denominators (§4.3).
    - ``first`` = ``"zbox"``: the z^β rule on the first layer (§4.3); ``"alpha_beta"`` uses the αβ rule there too.
    - ``low`` / ``high`` = ``None``: the z^β input bounds, floats or one per channel; ``None`` = the model's
      ``xcore_input_bounds``, else the ImageNet-normalised pixel range for 3 channels, else the batch's min / max
      (:func:`input_bounds`). Used by ``first="zbox"`` only.
    - ``avgpool`` = ``"proportional"``: torchexplain's average-pool rule; ``"uniform"``: the paper's ``R_j / N``.
    - ``init`` = ``"onehot"``: start from 1 at the class (torchexplain); ``"score"``: from ``y^c``.
    - ``reduce`` = ``"sum"``: channel reduction (:func:`xcore.core.maps.reduce_channels`); the sum keeps the sign
      and the total relevance.
    """
    r = relevance(model, x, target, alpha=alpha, beta=beta, bias=bias, first=first, low=low, high=high,
                  avgpool=avgpool, init=init)
    return reduce_channels(r, reduce)
