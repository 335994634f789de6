"""Filter importance scores: one value per (sample, filter k) of a conv layer (Hartley, *An Investigation into
Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §6.2.1,
eqs 6.1–6.6, compared in Table 6.1).

With ``A`` the tapped activation (B, K, *S), ``Z`` the number of positions of ``S``, ``g = ∂y^c/∂A`` and ``O`` the
training loss (per-sample cross-entropy, :mod:`xcore.filters.tap`):

- ``gradamap`` (eq 6.6): ``α_k = (1/Z) Σ_ij g_ij A_ij``, signed;
- ``gradcam`` (eq 6.1): ``α_k = (1/Z) Σ_ij g_ij``;
- ``gradcam_pp`` (eq 6.2) and ``xgradcam`` (eq 6.3): the channel weights of the CAM methods;
- ``taylor`` (eq 6.4): ``α_k = |(1/Z) Σ_ij (∂O/∂A_ij) A_ij|``; ``taylor_class``: the same with ``y^c`` for ``O``;
- ``l1`` (eq 6.5): ``α_k = Σ_ij |A_ij|`` (the printed single-element form is a typo);
- ``random``: uniform [0, 1) per sample from its own seed (the baseline of Table 6.1).

For a GAP + linear head ``g^c_k,ij = w^c_k / Z``, so ``Σ_k gradamap_k = (y^c − b_c)/Z``. Every scorer is
``fn(p: FilterPass, **params) -> (B, K)``; its keyword-only defaults are its published parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from xcore.core.targets import Target, Targets
from xcore.errors import UsageError
from xcore.explain._cam import positions
from xcore.explain.gradamap_cam import gradamap_weights
from xcore.explain.gradcam import pool_weights
from xcore.explain.gradcam_pp import gradcam_pp_weights
from xcore.explain.xgradcam import xgradcam_weights
from xcore.filters.tap import FilterPass, filter_pass
from xcore.registry import Registry, keyword_defaults, merge_params

NEEDS = ("grad", "loss_grad", "act")
ScoreFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Scorer:
    """A registered filter scorer: ``fn(p, **params) -> (B, K)``, what the :class:`FilterPass` must carry
    (``needs``: ``"grad"``, ``"loss_grad"`` or ``"act"``) and whether ``softmax`` applies (class-score scorers)."""

    fn: ScoreFn
    needs: str
    softmax_option: bool

    @property
    def defaults(self) -> dict[str, Any]:
        """The published parameters: the keyword-only defaults of ``fn``."""
        return keyword_defaults(self.fn)


SCORERS: Registry[Scorer] = Registry("filter scorer")


def register(name: str, *, needs: str, softmax_option: bool) -> Callable[[ScoreFn], ScoreFn]:
    """Register ``fn`` as filter scorer ``name``."""
    if needs not in NEEDS:
        raise ValueError(f"filter scorer {name!r}: needs must be one of {NEEDS}, got {needs!r}")

    def deco(fn: ScoreFn) -> ScoreFn:
        SCORERS.add(name, Scorer(fn, needs, softmax_option))
        return fn

    return deco


def _flat(weights: Tensor) -> Tensor:
    """(B, K, 1, ...) channel weights -> (B, K) float32."""
    return weights.reshape(weights.shape[:2]).float()


def _grad(p: FilterPass) -> Tensor:
    if p.grad is None:
        raise UsageError("this filter scorer needs a FilterPass made with grad=True")
    return p.grad


@register("gradamap", needs="grad", softmax_option=True)
def gradamap(p: FilterPass) -> Tensor:
    """Grad-AMap (eq 6.6): ``α_k = (1/Z) Σ_ij (∂y^c/∂A_ij) A_ij``, signed."""
    return _flat(gradamap_weights(p.act, _grad(p)))


@register("gradcam", needs="grad", softmax_option=True)
def gradcam(p: FilterPass) -> Tensor:
    """Grad-CAM (eq 6.1): ``α_k = (1/Z) Σ_ij ∂y^c/∂A_ij``."""
    return _flat(pool_weights(_grad(p), "global"))


@register("gradcam_pp", needs="grad", softmax_option=True)
def gradcam_pp(p: FilterPass, *, variant: str = "paper") -> Tensor:
    """Grad-CAM++ (eq 6.2): ``α_k = Σ_ij a_ij · ReLU(g_ij)``, the weights of
    :func:`xcore.explain.gradcam_pp.gradcam_pp_weights` (its ε = 1e-6).

    - ``variant`` = ``"paper"``: ``a = g² / (2g² + (Σ_ab A_ab) g³ + ε)``; ``"official"``: the released code's
      normalised ``a`` (see :mod:`xcore.explain.gradcam_pp`).
    """
    return _flat(gradcam_pp_weights(p.act, _grad(p), variant))


@register("xgradcam", needs="grad", softmax_option=True)
def xgradcam(p: FilterPass) -> Tensor:
    """XGrad-CAM (eq 6.3): ``α_k = Σ_ij (A_ij / (Σ_ab A_ab + ε)) g_ij`` with ε = 1e-7
    (:func:`xcore.explain.xgradcam.xgradcam_weights`)."""
    return _flat(xgradcam_weights(p.act, _grad(p)))


@register("taylor", needs="loss_grad", softmax_option=False)
def taylor(p: FilterPass) -> Tensor:
    """Taylor (eq 6.4): ``α_k = |(1/Z) Σ_ij (∂O/∂A_ij) A_ij|``, ``O`` the cross-entropy against the labels."""
    if p.loss_grad is None:
        raise UsageError("filter scorer 'taylor' needs a FilterPass made with loss_grad=True and labels")
    return _flat(gradamap_weights(p.act, p.loss_grad).abs())


@register("taylor_class", needs="grad", softmax_option=True)
def taylor_class(p: FilterPass) -> Tensor:
    """Taylor (class), thesis §6.2.2: eq 6.4 with ``y^c`` for ``O``, i.e. ``|gradamap|``."""
    return _flat(gradamap_weights(p.act, _grad(p)).abs())


@register("l1", needs="act", softmax_option=False)
def l1(p: FilterPass) -> Tensor:
    """ℓ1-norm (eq 6.5): ``α_k = Σ_ij |A_ij|``."""
    return p.act.abs().sum(dim=positions(p.act)).float()


@register("random", needs="act", softmax_option=False)
def random(p: FilterPass, *, seeds: Sequence[int] | Tensor | None = None) -> Tensor:
    """Random baseline (Table 6.1): uniform [0, 1) scores, sample b's from ``torch.Generator().manual_seed(seeds[b])``
    on the CPU, so a sample's scores depend on its seed only (never on its batch, shard or device).

    - ``seeds`` = ``None``: one int per sample; required.
    """
    batch, k = p.act.shape[:2]
    if seeds is None:
        raise UsageError("filter scorer 'random' needs seeds= (one int per sample)")
    seq = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    if len(seq) != batch:
        raise UsageError(f"filter scorer 'random' got {len(seq)} seeds for a batch of {batch} samples")
    # one generator per sample: no batched op draws from per-sample seeds
    rows = [torch.rand(k, generator=torch.Generator().manual_seed(int(s))) for s in seq]
    return torch.stack(rows).to(p.act.device)


def score_many(scorers: Mapping[str, Mapping[str, Any]], model: nn.Module, x: Tensor, targets: Targets | Target = None,
               *, layer: str | None = None, tap: str = "output", labels: Tensor | Sequence[int] | None = None,
               softmax: bool = False) -> tuple[dict[str, Tensor], FilterPass]:
    """Each named scorer's (B, K) float32 scores (with its params) from ONE :func:`filter_pass`, and that pass.

    Only the gradients some scorer needs are computed; ``softmax`` (``y^c = softmax(y)_c``) is one per pass and
    applies to the class-score scorers. Unknown scorers raise ``UnknownNameError``, unknown params ``UsageError``.
    """
    if not scorers:
        raise UsageError("name at least one filter scorer")
    plan: dict[str, tuple[Scorer, dict[str, Any]]] = {}
    for name, params in scorers.items():
        scorer = SCORERS.get(name)
        if "softmax" in params:
            raise UsageError(f"softmax is one per pass: give score_many softmax=, not filter scorer {name!r}")
        plan[name] = (scorer, merge_params("filter scorer", name, scorer.defaults, dict(params)))
    needs = {scorer.needs for scorer, _ in plan.values()}
    if "loss_grad" in needs and labels is None:
        users = sorted(n for n, (s, _) in plan.items() if s.needs == "loss_grad")
        raise UsageError(f"filter scorer(s) {users} need labels= (the training loss O of thesis eq 6.4)")
    p = filter_pass(model, x, targets, layer=layer, tap=tap, softmax=softmax, grad="grad" in needs,
                    loss_grad="loss_grad" in needs, labels=labels)
    return {name: scorer.fn(p, **params).to(x.device) for name, (scorer, params) in plan.items()}, p


def score(name: str, model: nn.Module, x: Tensor, targets: Targets | Target = None, *, layer: str | None = None,
          tap: str = "output", labels: Tensor | Sequence[int] | None = None, **params: Any) -> Tensor:
    """Filter scores (B, K) float32 of scorer ``name`` on ``x``'s device: ``score_many({name: params}, ...)``, with
    ``softmax`` taken from ``params`` (only for the class-score scorers)."""
    scorer = SCORERS.get(name)
    softmax = False
    if "softmax" in params:
        if not scorer.softmax_option:
            raise UsageError(f"filter scorer {name!r} has no softmax option")
        softmax = bool(params.pop("softmax"))
    scores, _ = score_many({name: params}, model, x, targets, layer=layer, tap=tap, labels=labels, softmax=softmax)
    return scores[name]
