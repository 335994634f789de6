"""Deletion / insertion (Petsiuk, Das, Saenko, *RISE*, BMVC 2018; Hartley, *An Investigation into Explanations
for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §3.5.1, §4.5.2.1, §5.4.3).

1. ``c`` = the explained class (default: predicted on the clean input); order the P spatial locations
   (pixels, voxels, joint×frame cells) by the map, most important first — stable descending sort, ties
   broken towards the lower flat index.
2. ``n = steps`` (28), ``step = ceil(P / n)``; after step ``i`` the first ``k_i = min(i·step, P)`` locations
   are changed (all channels together).
3. Deletion starts from ``x`` and replaces them by the substrate (0 in normalised space = the mean colour);
   insertion starts from the substrate and copies the original values in.
4. The score is ``softmax(f(·))_c``, recorded before the first and after every step (n + 1 points).
5. AUC by the trapezoid rule over the changed fraction ``k_i / P``; for P divisible by n this is
   ``(Σ s_i − s_0/2 − s_n/2) / n`` (eclique/RISE ``evaluation.py``).

The perturbed copies of all samples and steps are built on the model's device and go through the model in
forward batches whose size adapts to the device (:mod:`xcore.core.batching`), never one step at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.batching import accepts_channels_last, chunked, forward_batch_size
from xcore.core.context import model_device, model_state
from xcore.core.maps import map_grid, resize_to
from xcore.core.targets import Target, Targets
from xcore.metrics.base import register
from xcore.models.fold import folded, same_function

# eclique/RISE blur: outer(k1, k1), k1 = scipy gaussian_filter(σ=5, truncate 4) of an 11-long delta
_RISE_K1 = (0.08795815, 0.08889612, 0.0904742, 0.09219112, 0.09348939, 0.09398206, 0.09348939, 0.09219112,
            0.0904742, 0.08889612, 0.08795815)


def rise_blur(x: Tensor) -> Tensor:
    """RISE's insertion substrate: per-channel 11×11 blur of the last two dims, zero padding of 5."""
    k1 = torch.tensor(_RISE_K1, dtype=x.dtype, device=x.device)
    kernel = torch.outer(k1, k1)[None, None]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    return F.conv2d(flat, kernel, padding=5).reshape(x.shape)


def substrate_of(x: Tensor, kind: str) -> Tensor:
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "blur":
        return rise_blur(x)
    raise ValueError(f"unknown substrate {kind!r}; use 'zero' or 'blur'")


def auc(curve: Tensor, fractions: Tensor) -> Tensor:
    """Trapezoid area under ``curve`` (..., n+1) over the x-positions ``fractions`` (n+1,)."""
    widths = fractions[1:] - fractions[:-1]
    return ((curve[..., 1:] + curve[..., :-1]) / 2 * widths).sum(-1)


def step_counts(n_locations: int, steps: int) -> Tensor:
    """``k_i = min(i · ceil(P/n), P)`` for i = 0..n."""
    step = math.ceil(n_locations / steps)
    return torch.clamp(torch.arange(steps + 1) * step, max=n_locations)


def ranks(maps: Tensor) -> Tensor:
    """Position of every flat location in the stable descending order of ``maps`` (B, P)."""
    order = torch.sort(maps, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank


@register("deletion_insertion", keys=("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"),
          list_keys=("deletion_curve", "insertion_curve"))
@torch.no_grad()
def deletion_insertion(model: nn.Module, x: Tensor, maps: Tensor, targets: Targets = None, *,
                       steps: int = 28, substrate: str = "zero", insertion_substrate: str | None = None,
                       batch_size: int | None = None, fold_batchnorm: bool = True) -> dict[str, Tensor]:
    """Deletion and insertion curves and AUCs for a batch.

    ``x`` (B, C, *S), ``maps`` (B, *S) or a native-resolution map (resized like ``explain.run``). A map over
    fewer dims, e.g. (B, T, V) for a skeleton x (B, C, T, V, M), ranks those cells; each step removes a cell's
    values in every trailing slot (all persons) at once.
    Returns per-sample ``deletion_auc``, ``insertion_auc`` (B,), ``deletion_curve``, ``insertion_curve``
    (B, steps+1), ``target`` (B,) and the shared ``fractions`` (steps+1,), all on the CPU.

    Keyword parameters (the defaults are the published ones):

    - ``steps`` = 28: the n steps (n + 1 points per curve), as the RISE authors' released code and the thesis
      (§3.5.1; 1,792 pixels a step at 224², 7,168 voxels at 16×112², §4.5.2.1).
    - ``substrate`` = ``"zero"``: what deleted locations become and insertion starts from: 0 in normalised space,
      the mean colour (the thesis's "blank", §3.5.1, §4.5.2.1); ``"blur"``: RISE's blurred image
      (:func:`rise_blur`).
    - ``insertion_substrate`` = ``None``: insertion's start when it differs from ``substrate``;
      ``substrate="zero", insertion_substrate="blur"`` is eclique/RISE ``evaluation.py``'s variant.
    - ``batch_size`` = ``None``: perturbed inputs per forward; ``None`` adapts to the device
      (:func:`xcore.core.batching.forward_batch_size`). Throughput only.
    - ``fold_batchnorm`` = ``True``: evaluate a cached copy with BatchNorm folded into the convs (same function up
      to float rounding, fewer passes; checked on the first sample, else the model itself). Throughput only.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    device = model_device(model)
    x = x.to(device)
    B, C = x.shape[0], x.shape[1]
    spatial = map_grid(x, maps)  # the cells the map ranks; x's trailing dims (skeleton persons) ride along
    extra = tuple(x.shape[2 + len(spatial) :])
    E = math.prod(extra)
    maps = resize_to(maps.to(device).float(), spatial).reshape(B, -1)
    if not torch.isfinite(maps).all():
        raise ValueError("explanation map contains NaN or inf")
    P = maps.shape[1]
    counts = step_counts(P, steps).to(device)
    rank = ranks(maps)

    def locations_first(t: Tensor) -> Tensor:  # (B, C, *S, *extra) -> (B, P, C·E): batches come out channels-last
        return t.reshape(B, C, P, E).permute(0, 2, 1, 3).reshape(B, P, C * E).contiguous()

    flat = locations_first(x)
    sub_del = locations_first(substrate_of(x, substrate))
    sub_ins = locations_first(substrate_of(x, insertion_substrate or substrate))
    # values where the mask is on / off: deletion (sub, x), insertion (x, sub)
    on = torch.stack([sub_del, flat])
    off = torch.stack([flat, sub_ins])
    S1 = steps + 1
    # Unique perturbed inputs per sample, (mode, step): the clean input (deletion 0 = insertion n) is the
    # forward that finds the class; all-substrate (deletion n) doubles as insertion 0 when the substrates agree.
    same = (insertion_substrate or substrate) == substrate
    pairs = [(0, i) for i in range(1, S1)] + [(1, i) for i in range(1, steps)] + ([] if same else [(1, 0)])
    pair_mode = torch.tensor([m for m, _ in pairs], device=device)
    pair_step = torch.tensor([i for _, i in pairs], device=device)
    J = len(pairs)

    with model_state(model):
        if fold_batchnorm:
            fast = folded(model)
            model = fast if fast is model or same_function(fast, model, x[:1]) else model
        size = forward_batch_size(device, C * E * P, batch_size)
        keep_layout = not extra and accepts_channels_last(model, x[:1])

        def as_input(t: Tensor) -> Tensor:  # (n, P, C·E) -> (n, C, *S, *extra), channels-last where accepted
            t = t.reshape(-1, *spatial, C, *extra).movedim(1 + len(spatial), 1)
            return t if keep_layout else t.contiguous()

        logits = chunked(B, size, lambda lo, hi: model(as_input(flat[lo:hi])).float())
        # explicit class indices, else the predicted class; a callable target has no softmax class: raises
        classes = logits.argmax(dim=1) if targets is None else Target.of(targets, B).classes(logits)
        clean = logits.softmax(dim=1).gather(1, classes[:, None]).squeeze(1)

        def forward(lo: int, hi: int) -> Tensor:
            j = torch.arange(lo, hi, device=device)
            b, mode, i = j // J, pair_mode[j % J], pair_step[j % J]
            mask = (rank[b] < counts[i][:, None])[:, :, None]  # (n, P, 1)
            batch = as_input(torch.where(mask, on[mode, b], off[mode, b]))
            return model(batch).float().softmax(dim=1).gather(1, classes[b][:, None]).squeeze(1)

        perturbed = chunked(B * J, size, forward).reshape(B, J)
    scores = torch.empty(2, B, S1, dtype=torch.float64)
    scores[0, :, 0] = scores[1, :, steps] = clean.double().cpu()
    perturbed = perturbed.double().cpu()
    scores[0, :, 1:] = perturbed[:, :steps]
    scores[1, :, 1:steps] = perturbed[:, steps : 2 * steps - 1]
    scores[1, :, 0] = scores[0, :, steps] if same else perturbed[:, -1]
    fractions = counts.double().cpu() / P
    return {
        "deletion_auc": auc(scores[0], fractions),
        "insertion_auc": auc(scores[1], fractions),
        "deletion_curve": scores[0],
        "insertion_curve": scores[1],
        "target": classes.cpu(),
        "fractions": fractions,
    }
