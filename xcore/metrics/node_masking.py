"""Node-masking faithfulness for skeleton explanations (Das, Ortega, *Gradient-weighted Class Activation Mapping for
Spatio Temporal Graph Convolutional Network*, §3.2, eq 7 and Tables 1–3).

For each sample the (joint, frame) cells (``unit="cell"``, default) or the joints (``unit="joint"``, ranked by
the map averaged over valid frames) are ranked by its heatmap; the top (**important**) or bottom
(**unimportant**) fraction m of the *valid* ones — frames holding any non-zero coordinate — is masked by setting
every coordinate of every person there to 0, and the model predicts again. Per sample the predicted class
under each m is recorded; accuracies α_m and ``β_faithful = Σ_i m_i |α_0 − α_{m_i}| / α_0`` are aggregated
over the dataset by :mod:`xcore.analysis.skeleton`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xcore.core.batching import chunked, forward_batch_size
from xcore.core.context import model_device, model_state
from xcore.core.maps import resize_to
from xcore.core.targets import Targets
from xcore.metrics.base import register


def valid_frames(x: Tensor) -> Tensor:
    """(B, T) bool: frames of a (B, C, T, V, M) skeleton batch that hold any non-zero coordinate."""
    return x.abs().amax(dim=(1, 3, 4)) > 0


def masks(maps: Tensor, valid: Tensor, fractions: Sequence[float], unit: str) -> Tensor:
    """(B, 2, F, T, V) bool masks: [important, unimportant] × fraction, over valid frames only."""
    B, T, V = maps.shape
    if unit == "cell":
        scores = maps.reshape(B, T * V)
        ok = valid[:, :, None].expand(B, T, V).reshape(B, T * V)
    elif unit == "joint":
        w = valid.to(maps.dtype)[:, :, None]
        scores = (maps * w).sum(1) / w.sum(1).clamp(min=1)
        ok = valid.any(dim=1, keepdim=True).expand(B, V)
    else:
        raise ValueError(f"unknown masking unit {unit!r}; use 'cell' or 'joint'")
    n_ok = ok.sum(dim=1)
    out = torch.zeros(B, 2, len(fractions), scores.shape[1], dtype=torch.bool, device=maps.device)
    for d, sign in enumerate((-1.0, 1.0)):  # important: descending; unimportant: ascending
        key = (sign * scores).masked_fill(~ok, float("inf"))
        order = key.argsort(dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        for f, frac in enumerate(fractions):
            k = torch.floor(frac * n_ok.to(torch.float64) + 0.5).to(rank.dtype)
            out[:, d, f] = (rank < k[:, None]) & ok
    if unit == "joint":
        out = out[..., None, :].expand(B, 2, len(fractions), T, V) & valid[:, None, None, :, None]
    return out.reshape(B, 2, len(fractions), T, V)


@register("node_masking", keys=("important_preds", "unimportant_preds"),
          list_keys=("important_preds", "unimportant_preds"))
def node_masking(model: nn.Module, x: Tensor, maps: Tensor, targets: Targets = None, *,
                 fractions: Sequence[float] = (0.1, 0.5, 0.9), unit: str = "cell",
                 batch_size: int | None = None) -> dict[str, Tensor]:
    """Predicted classes after masking the important / unimportant fraction of nodes.

    ``x`` (B, C, T, V, M), ``maps`` (B, T, V) (a native (B, T', V) map is repeated over frames; a (B, T, V, M)
    map is reduced by the max over person slots). Returns
    ``important_preds`` and ``unimportant_preds`` (B, F) and ``clean_pred`` (B,), on the CPU.

    Keyword parameters (the defaults are the published ones):

    - ``fractions`` = (0.1, 0.5, 0.9): the masked fractions m of the valid nodes, Das & Ortega's 10 / 50 / 90 %
      (Table 1).
    - ``unit`` = ``"cell"``: a node is a (joint, frame) cell of the map repeated to the input frames; ``"joint"``:
      a joint over all its valid frames, ranked by its mean score (the paper does not say which; §3.2).
    - ``batch_size`` = ``None``: masked inputs per forward; ``None`` adapts to the device. Throughput only.
    """
    if x.ndim != 5:
        raise ValueError(f"node masking needs a skeleton batch (B, C, T, V, M); got shape {tuple(x.shape)}")
    device = model_device(model)
    x = x.to(device)
    B, C, T, V, M = x.shape
    maps = maps.to(device).float()
    if maps.ndim == 4:  # a per-person-slot map (B, T, V, M), e.g. a generic baseline: the max over slots
        maps = maps.amax(dim=-1)
    maps = resize_to(maps, (T, V), "nearest")
    keep = ~masks(maps, valid_frames(x), list(fractions), unit)  # (B, 2, F, T, V)
    n = 2 * len(fractions)
    keep = keep.reshape(B * n, 1, T, V, 1)
    with model_state(model), torch.no_grad():
        size = forward_batch_size(device, C * T * V * M, batch_size)
        clean = chunked(B, size, lambda lo, hi: model(x[lo:hi]).argmax(dim=1))

        def forward(lo: int, hi: int) -> Tensor:
            j = torch.arange(lo, hi, device=device)
            return model(x[j // n] * keep[lo:hi]).argmax(dim=1)

        preds = chunked(B * n, size, forward).reshape(B, 2, len(fractions)).cpu()
    return {"important_preds": preds[:, 0].float(), "unimportant_preds": preds[:, 1].float(),
            "clean_pred": clean.cpu().float()}
