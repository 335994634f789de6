"""One forward (and backward) that records a layer's activation and its gradients: the inputs of every filter score
of Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University,
2021 ("thesis"), §6.2.1, eqs 6.1–6.6.

:func:`filter_pass` taps a tensor ``A`` (B, K, *S) of the named module — its forward output (``tap="output"``) or
its first positional input (``tap="input"``; on a ReLU module that is the pre-ReLU map, the tap point the BatchNorm
sign caveat of thesis §6.2.2.1 asks for) — and returns, per sample,

- ``g = ∂y^c/∂A`` with ``y^c`` the target's logit (or ``softmax(y)_c`` with ``softmax=True``), and/or
- ``∂O/∂A`` with ``O = Σ_b CE(y_b, label_b)``: the training loss of eq 6.4 as per-sample cross-entropy **summed**
  over the batch (not averaged), so that a sample's gradient never depends on its batch's size or contents.

The tapped tensor is handed on to the rest of the network as a clone, so an in-place op after it (torchvision VGG's
``ReLU(inplace=True)``) cannot overwrite the record; gradients with respect to the record are unchanged by this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.context import model_state
from xcore.core.layers import default_layer, get_layer
from xcore.core.targets import Target, Targets
from xcore.errors import UsageError

TAPS = ("output", "input")


@dataclass(frozen=True)
class FilterPass:
    """What one :func:`filter_pass` recorded (all detached, on the model's device).

    - ``act``: (B, K, *S) the tapped activation ``A``;
    - ``out``: (B, n_classes) the model output (logits);
    - ``classes``: (B,) long, the class each score is of (the predicted class where the target was ``None``;
      −1 where the target is a function of the output rather than a class);
    - ``grad``: (B, K, *S) ``∂y^c/∂A`` per sample, or ``None`` when not asked for;
    - ``loss_grad``: (B, K, *S) ``∂O/∂A``, ``O`` the per-sample cross-entropy against the labels, or ``None``.
    """

    act: Tensor
    out: Tensor
    classes: Tensor
    grad: Tensor | None
    loss_grad: Tensor | None


@contextlib.contextmanager
def tapped(model: nn.Module, layer: str, tap: str) -> Iterator[list[Tensor]]:
    """Record the tensor at ``tap`` of ``model.<layer>`` in the yielded list (one entry per call of the module) and
    pass a clone of it on; the hook is removed on exit."""
    if tap not in TAPS:
        raise UsageError(f"unknown tap {tap!r}; use 'output' or 'input'")
    module = get_layer(model, layer)
    seen: list[Tensor] = []

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not args or not isinstance(args[0], Tensor):
            raise UsageError(f"layer {layer!r} has no positional tensor input to tap; use tap='output'")
        seen.append(args[0])
        return (args[0].clone(), *args[1:])

    def post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
        if isinstance(out, Tensor):
            seen.append(out)
            return out.clone()
        if type(out) is tuple and out and isinstance(out[0], Tensor):
            seen.append(out[0])
            return (out[0].clone(), *out[1:])
        raise UsageError(f"layer {layer!r} returns {type(out).__name__}, not a tensor; tap another layer")

    handle = module.register_forward_pre_hook(pre) if tap == "input" else module.register_forward_hook(post)
    try:
        yield seen
    finally:
        handle.remove()


def _target(targets: Targets | Target, batch: int) -> Target:
    try:
        return Target.of(targets, batch)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _labels(labels: Tensor | Sequence[int] | None, batch: int, device: torch.device) -> Tensor:
    """The labels as a (B,) long tensor on ``device``; a one-line ``UsageError`` for a missing or misshapen one."""
    if labels is None:
        raise UsageError("the loss gradient (thesis eq 6.4) needs labels= (one class index per sample)")
    lab = torch.as_tensor(labels, device=device)
    if lab.ndim != 1 or lab.shape[0] != batch or lab.dtype.is_floating_point or lab.dtype == torch.bool:
        raise UsageError(f"labels must be {batch} integer class indices, got shape {tuple(lab.shape)} {lab.dtype}")
    return lab.long()


def _activation(seen: list[Tensor], layer: str, tap: str, batch: int) -> Tensor:
    """The single recorded tensor, checked to be (B, K, *S) with at least one spatial dim."""
    if len(seen) != 1:
        raise UsageError(f"layer {layer!r} ran {len(seen)} times in one forward; tap a layer that runs once")
    act = seen[0]
    if act.ndim < 3 or act.shape[0] != batch:
        raise UsageError(f"the {tap} of layer {layer!r} has shape {tuple(act.shape)}; filter scores need "
                         f"(B={batch}, K, *S) with spatial dims — pick a conv layer")
    return act


def _classes(target: Target, out: Tensor) -> Tensor:
    if target.is_class:
        return target.classes(out).long()
    return torch.full((out.shape[0],), -1, dtype=torch.long, device=out.device)


def filter_pass(model: nn.Module, x: Tensor, targets: Targets | Target = None, *, layer: str | None = None,
                tap: str = "output", softmax: bool = False, grad: bool = True, loss_grad: bool = False,
                labels: Tensor | Sequence[int] | None = None) -> FilterPass:
    """One forward of ``x`` (and the backward(s) asked for) recording ``A`` at ``tap`` of ``layer``.

    - ``layer``: dotted module path (:func:`xcore.core.layers.get_layer`); ``None`` = :func:`default_layer`.
    - ``tap``: ``"output"`` (forward hook) or ``"input"`` (the module's first positional input, pre-hook).
    - ``softmax``: ``y^c = softmax(y)_c`` instead of the logit for ``grad``.
    - ``grad``: compute ``∂y^c/∂A`` (``targets`` as :meth:`Target.of`; ``None`` = the predicted class).
    - ``loss_grad``: compute ``∂O/∂A``, ``O = Σ_b CE(y_b, labels_b)`` (needs ``labels``).

    Runs inside :func:`xcore.core.context.model_state` (eval mode, frozen parameters, both restored on exit); the
    input is the graph's anchor (``requires_grad``). Both gradients come from the same forward graph.
    """
    if tap not in TAPS:
        raise UsageError(f"unknown tap {tap!r}; use 'output' or 'input'")
    batch = x.shape[0]
    target = _target(targets, batch)
    lab = _labels(labels, batch, x.device) if loss_grad else None
    name = layer or default_layer(model)
    backward = grad or loss_grad
    g = lg = None
    with model_state(model), torch.set_grad_enabled(backward), tapped(model, name, tap) as seen:
        xin = x.detach().requires_grad_(True) if backward else x.detach()  # parameters are frozen: x anchors
        out = model(xin)
        act = _activation(seen, name, tap, batch)
        if grad:
            scores = target.select(out, softmax=softmax)
            (g,) = torch.autograd.grad(scores.sum(), act, retain_graph=loss_grad)
        if lab is not None:
            if out.ndim != 2 or int(lab.min()) < 0 or int(lab.max()) >= out.shape[1]:
                raise UsageError(f"labels must index the {tuple(out.shape)} model output's classes")
            (lg,) = torch.autograd.grad(F.cross_entropy(out, lab.to(out.device), reduction="sum"), act)
        classes = _classes(target, out)
    return FilterPass(act.detach(), out.detach(), classes,
                      None if g is None else g.detach(), None if lg is None else lg.detach())
