"""The filter-ranking experiment: zero a layer's filters in rank order and track accuracy (Hartley, *An
Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" —
§6.2.2, Figure 6.1, Table 6.1).

For every image the filters (channels) of one layer are ranked by a score (Grad-AMap eq 6.6, Grad-CAM eq 6.1, ...,
or random scores for the baseline: an independent random permutation per image), and the channels of that layer's
output are zeroed in rank order ``step`` = 16 at a time — ``k_i = min(i·step, K)``, ``i = 0..⌈K/step⌉`` (33 points
for 512 filters). Zeroing a channel of the activation equals pruning its filter. At each step the prediction is
compared with the ground-truth label; the dataset curve is the accuracy per step normalised by the unablated
accuracy (100 % at ``k = 0``), and its trapezoid AUC over the fraction of removed filters ``k_i/K`` is the score —
lower = the ranking finds the important filters first.

ResNet caveat (§6.2.2): zeroing the output of a conv layer whose result is then added to a residual (skip) branch
does not remove that information from the network — the identity path still carries the block's input — so
accuracy can rise slightly as filters are removed (the "bump" of ResNet18 in Figure 6.1). Record which module and
tap point (``tap="output"`` / ``"input"``) was ablated; the thesis' layer is the final conv layer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xcore.core.context import model_device, model_state
from xcore.core.layers import get_layer
from xcore.errors import UsageError

TAPS = ("output", "input")


def _check_tap(tap: str) -> None:
    if tap not in TAPS:
        raise UsageError(f"unknown tap {tap!r}; use 'output' or 'input'")


def _masked(t: Any, mask: Tensor, layer: str, tap: str) -> Tensor:
    """``t · mask`` with ``mask`` (N, K) broadcast over the positions of ``t`` (N, K, *S)."""
    if not isinstance(t, Tensor) or t.ndim < 2 or tuple(t.shape[:2]) != tuple(mask.shape):
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise UsageError(f"mask {tuple(mask.shape)} does not match the {tap} of layer {layer!r} {shape} (N, K, ...)")
    return t * mask.to(device=t.device, dtype=t.dtype).view(*mask.shape, *([1] * (t.ndim - 2)))


@contextlib.contextmanager
def ablate(model: nn.Module, layer: str, mask: Tensor, *, tap: str = "output") -> Iterator[None]:
    """Within the block, the ``tap`` tensor A (N, K, *S) of module ``layer`` — its output (forward hook) or its
    first input (forward pre-hook) — is replaced by ``A · mask`` with ``mask`` (N, K) broadcast over S (0 = filter
    zeroed, §6.2.2). The hook is removed on exit, also on error, so the model computes exactly as before."""
    _check_tap(tap)
    if mask.ndim != 2:
        raise UsageError(f"mask must be (N, K); got shape {tuple(mask.shape)}")
    module = get_layer(model, layer)

    def post(_m: nn.Module, _args: Any, out: Any) -> Tensor:
        return _masked(out, mask, layer, tap)

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not args:
            raise UsageError(f"layer {layer!r} was called without a positional input to ablate")
        return (_masked(args[0], mask, layer, tap), *args[1:])

    handle = module.register_forward_hook(post) if tap == "output" else module.register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


def rank_order(scores: Tensor) -> Tensor:
    """Filter indices (B, K) from highest to lowest score per row: a stable descending sort, so tied filters keep
    ascending index order (ties → lower index first, the pixel-ordering rule of the deletion metrics)."""
    if scores.ndim != 2:
        raise UsageError(f"filter scores must be (B, K); got shape {tuple(scores.shape)}")
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def ablation_steps(n_filters: int, step: int = 16) -> Tensor:
    """Numbers of zeroed filters ``k_i = min(i·step, K)`` for ``i = 0..⌈K/step⌉`` (long, ⌈K/step⌉ + 1 entries);
    512 filters, step 16 → 0, 16, ..., 512 (§6.2.2)."""
    if n_filters < 1 or step < 1:
        raise UsageError(f"need n_filters >= 1 and step >= 1; got n_filters={n_filters}, step={step}")
    n = math.ceil(n_filters / step)
    return (torch.arange(n + 1, dtype=torch.long) * step).clamp(max=n_filters)


def _positions(order: Tensor) -> Tensor:
    """Inverse permutation: ``pos[b, order[b, j]] = j`` (the rank of each filter)."""
    b, k = order.shape
    if order.dtype.is_floating_point or order.dtype == torch.bool:
        raise UsageError("order must hold integer filter indices")
    expect = torch.arange(k, device=order.device).expand(b, k)
    if not torch.equal(torch.sort(order, dim=1).values, expect):
        raise UsageError(f"order must be a permutation of 0..{k - 1} in every row")
    return torch.empty_like(order).scatter_(1, order, expect.clone())


def ablation_curves(model: nn.Module, x: Tensor, labels: Tensor | Sequence[int], order: Tensor, *, layer: str,
                    tap: str = "output", step: int = 16, chunk: int = 256) -> Tensor:
    """Per-sample correctness curves (B, S+1) float: entry (b, i) is 1.0 when the prediction on ``x[b]`` with its
    first ``k_i`` ranked filters ``order[b, :k_i]`` zeroed (:func:`ablation_steps`) equals ``labels[b]``, else 0.0.

    One forward evaluates many steps: the batch is repeated over the steps — row ``i·B + b`` is sample b at step i —
    and each row gets its own (K,) 0/1 mask in :func:`ablate`; rows go through the model ``chunk`` at a time. Runs
    under ``torch.no_grad()`` in eval mode (:func:`xcore.core.context.model_state`, restored on exit). ``x`` is any
    batched input (images, clips, skeletons); K = ``order.shape[1]`` must be the channel count of the tapped
    tensor.
    """
    _check_tap(tap)
    if chunk < 1:
        raise UsageError(f"chunk must be >= 1; got {chunk}")
    if order.ndim != 2 or order.shape[0] != x.shape[0]:
        raise UsageError(f"order must be (B, K) with B = {x.shape[0]} samples; got shape {tuple(order.shape)}")
    device = model_device(model)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise UsageError(f"got {labels.shape[0]} labels for a batch of {x.shape[0]} samples")
    b, k = order.shape
    ks = ablation_steps(k, step).to(device)
    pos = _positions(order.to(device=device, dtype=torch.long))
    x = x.to(device)
    rows = ks.numel() * b
    correct = torch.empty(rows, dtype=torch.bool, device=device)
    with model_state(model), torch.no_grad():
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            r = torch.arange(start, stop, device=device)
            sample, i = r % b, r // b
            mask = (pos[sample] >= ks[i][:, None]).float()  # (n, K): 0 where the filter is among the first k_i
            with ablate(model, layer, mask, tap=tap):
                out = model(x[sample])
            correct[start:stop] = out.argmax(dim=1) == labels[sample]
    return correct.view(ks.numel(), b).t().float()


def ranking_auc(curves: Tensor, n_filters: int, step: int = 16) -> dict[str, Any]:
    """Dataset summary of :func:`ablation_curves` (B, S+1) — lower AUC = better ranking (Table 6.1):

    - ``accuracy`` (S+1,): raw accuracy per step, ``a_i = (1/B) Σ_b curves[b, i]``;
    - ``normalised``: ``s_i = a_i / a_0`` (100 % at no filter removed, §6.2.2);
    - ``fractions``: ``f_i = k_i / K``, the x axis (a partial last step ends at 1);
    - ``auc``: the trapezoid area ``Σ_i (f_{i+1} − f_i)(s_i + s_{i+1})/2`` (float); on a uniform grid this is
      ``(Σ_i s_i − s_0/2 − s_n/2)/n``, the RISE deletion AUC the thesis uses.
    """
    ks = ablation_steps(n_filters, step)
    if curves.ndim != 2 or curves.shape[1] != ks.numel() or curves.shape[0] == 0:
        raise UsageError(f"curves must be (B >= 1, {ks.numel()}) for {n_filters} filters in steps of {step}; "
                         f"got shape {tuple(curves.shape)}")
    accuracy = curves.detach().double().mean(dim=0).cpu()
    if accuracy[0] <= 0:
        raise UsageError("the unablated accuracy is 0, so the normalised curve is undefined")
    normalised = accuracy / accuracy[0]
    fractions = ks.double() / n_filters
    auc = float(((fractions[1:] - fractions[:-1]) * (normalised[1:] + normalised[:-1]) / 2).sum())
    return {"accuracy": accuracy, "normalised": normalised, "fractions": fractions, "auc": auc}
