"""Visualising surprise and "fixing" misclassified images by suppressing it (Hartley, *An Investigation into
Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §6.3.2, §6.4.1,
Figures 6.10–6.13).

A filter-filtered SWAG (§6.3.2; SWAG itself §3.3, eq 3.1):

1. the input gradient ``g = ∂y^c/∂x`` of the ground-truth class score, where at the chosen layer the gradient of
   every filter except the surprised one is zeroed before the backward pass continues — only the pixels relevant to
   that filter keep a gradient (vanilla gradients by default; guided backprop as an option, §6.4.1);
2. regular SLIC superpixels on the image (SWAG_I, eq 3.4) and per superpixel the mean of ``M = max_c |g|``
   (eq 3.1).

Visualisation (§6.3.2): 50 superpixels, a border around the top-scoring one. Suppression (§6.4.1): for every
superpixel count ``K ∈ {100, 200, 300, 400}`` and removal count ``r ∈ {1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100}`` set
the top-r superpixels to 0 in the normalised input (= the dataset mean colour) and check whether the prediction
becomes the ground truth; an image is fixed when any (K, r) works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from xcore.core.context import model_device, model_state
from xcore.core.layers import get_layer
from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target, Targets
from xcore.errors import UsageError
from xcore.explain.guided_backprop import guided_relus
from xcore.explain.superpixels import denormalise, slic_image
from xcore.explain.swag import pool_superpixels

#: Superpixels for the visualisation of surprise (§6.3.2: one contiguous region rather than part of a feature).
VISUAL_SEGMENTS = 50
#: The sweep grid of §6.4.1: superpixel counts K and numbers r of top superpixels set to 0.
SWEEP_SEGMENTS: tuple[int, ...] = (100, 200, 300, 400)
SWEEP_REMOVALS: tuple[int, ...] = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100)


def _keep_mask(keep: Tensor, batch: int, n_filters: int, device: torch.device) -> Tensor:
    """(B, K) 0/1 mask: one-hot of ``keep[b]``, all ones where ``keep[b] == -1`` (no filter: unfiltered)."""
    keep = torch.as_tensor(keep, dtype=torch.long, device=device).reshape(-1)
    if keep.shape[0] != batch:
        raise UsageError(f"got {keep.shape[0]} kept filters for a batch of {batch} samples")
    if bool(((keep < -1) | (keep >= n_filters)).any()):
        raise UsageError(f"kept filters must be in -1..{n_filters - 1} (-1 = unfiltered); got {keep.tolist()}")
    onehot = torch.nn.functional.one_hot(keep.clamp(min=0), n_filters).bool()
    return (onehot | (keep == -1)[:, None]).float()


@contextlib.contextmanager
def _gradient_filter(model: nn.Module, layer: str, keep: Tensor, tap: str) -> Iterator[None]:
    """During the block's forwards, a tensor hook on the ``tap`` tensor A (B, K, *S) of ``layer`` multiplies its
    gradient by the :func:`_keep_mask` (broadcast over S). The hook sees the total gradient of A (all its uses)."""
    if tap not in ("output", "input"):
        raise UsageError(f"unknown tap {tap!r}; use 'output' or 'input'")
    attached: list[bool] = []

    def attach(t: Any) -> None:
        if not isinstance(t, Tensor) or t.ndim < 2 or t.shape[0] != keep.shape[0]:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise UsageError(f"the {tap} of layer {layer!r} is {shape}; need (B={keep.shape[0]}, K, ...)")
        if not t.requires_grad:
            raise UsageError(f"the {tap} of layer {layer!r} does not depend on the input; no gradient to filter")
        mask = _keep_mask(keep, t.shape[0], t.shape[1], t.device).to(t.dtype).view(*t.shape[:2], *([1] * (t.ndim - 2)))
        t.register_hook(lambda g: g * mask)
        attached.append(True)

    def post(_m: nn.Module, _args: Any, out: Any) -> None:
        attach(out)

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
        attach(args[0] if args else None)

    module = get_layer(model, layer)
    handle = module.register_forward_hook(post) if tap == "output" else module.register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()
    if not attached:
        raise UsageError(f"layer {layer!r} did not run in the forward pass; no gradient was filtered")


def filtered_gradient(model: nn.Module, x: Tensor, targets: Targets, keep: Tensor | None, *, layer: str,
                      tap: str = "output", guided: bool = False, softmax: bool = False) -> Tensor:
    """Input gradient (B, C, *S) of the target score ``s`` (logit ``y^c``, or ``softmax(y)_c``) backpropagated
    through filter ``keep[b]`` of ``layer`` only (§6.3.2): at the tapped tensor A, ``∂s/∂A^k := 0`` for every
    ``k ≠ keep[b]``, then the backward pass continues to the input. With a GAP + linear head this is the gradient of
    ``w^c_k · mean(A^k)`` alone.

    ``keep`` = ``None`` or ``keep[b] = -1``: unfiltered (the plain vanilla gradient). ``guided=True``: every ReLU is
    a guided-backprop ReLU (:class:`xcore.explain.guided_backprop.guided_relus`), same filter. One batched forward and
    backward in eval mode (restored on exit).
    """
    device = model_device(model)
    x = x.detach().to(device).requires_grad_(True)
    target = Target.of(targets, x.shape[0])
    keep_t = torch.full((x.shape[0],), -1) if keep is None else torch.as_tensor(keep, dtype=torch.long).reshape(-1)
    if keep_t.shape[0] != x.shape[0]:
        raise UsageError(f"got {keep_t.shape[0]} kept filters for a batch of {x.shape[0]} samples")
    with model_state(model), torch.enable_grad():
        with contextlib.ExitStack() as stack:
            stack.enter_context(_gradient_filter(model, layer, keep_t, tap))
            if guided:
                stack.enter_context(guided_relus())
            out = model(x)
        (g,) = torch.autograd.grad(target.select(out, softmax=softmax).sum(), x)
    return g.detach()


def superpixel_scores(x_rgb01: np.ndarray | Tensor, grad: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """Regular SLIC superpixels (SWAG_I, eq 3.4, compactness 10) of one RGB image ``x_rgb01`` (H, W, 3) in [0, 1]
    and the mean of ``M = max_c |grad|`` over each (eq 3.1) for ``grad`` (C, H, W).

    Returns (segments (H, W) long with labels 0..n-1, scores (n,)), both on ``grad``'s device.
    """
    rgb = x_rgb01.detach().cpu().double().numpy() if isinstance(x_rgb01, Tensor) else np.asarray(x_rgb01, float)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise UsageError(f"the image must be RGB (H, W, 3) in [0, 1]; got shape {rgb.shape}")
    if grad.ndim != 3 or tuple(grad.shape[1:]) != rgb.shape[:2]:
        raise UsageError(f"grad must be (C, H, W) with (H, W) = {rgb.shape[:2]}; got shape {tuple(grad.shape)}")
    seg = torch.from_numpy(np.ascontiguousarray(slic_image(rgb, n_segments), dtype=np.int64)).to(grad.device)
    return seg, pool_superpixels(grad.detach().abs().amax(dim=0), seg, "mean")


def surprise_superpixel(model: nn.Module, x: Tensor, label: int, keep: int | None, *, layer: str,
                        tap: str = "output", n_segments: int = VISUAL_SEGMENTS,
                        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                        ) -> tuple[Tensor, int]:
    """The region a surprised filter responds to (§6.3.2) for one normalised image ``x`` (C, H, W): the SLIC
    segments (H, W) of its RGB image and the label of the top-scoring superpixel (ties → lower label) under the
    vanilla gradient of class ``label`` filtered through filter ``keep`` (``None`` = unfiltered). A figure draws a
    border around that superpixel."""
    if x.ndim != 3:
        raise UsageError(f"surprise_superpixel takes one image (C, H, W); got shape {tuple(x.shape)}")
    grad = filtered_gradient(model, x[None], [int(label)], None if keep is None else torch.tensor([int(keep)]),
                             layer=layer, tap=tap)
    seg, scores = superpixel_scores(denormalise(x, mean, std), grad[0], n_segments)
    return seg, int(scores.argmax())


def suppression_sweep(model: nn.Module, x: Tensor, labels: Tensor | Sequence[int], keep: Tensor | None, *,
                      layer: str, tap: str = "output", guided: bool = False,
                      n_segments: Sequence[int] = SWEEP_SEGMENTS, removals: Sequence[int] = SWEEP_REMOVALS,
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                      chunk: int = 256) -> dict[str, Tensor]:
    """Fixing by suppression (§6.4.1) for a batch of normalised images ``x`` (B, C, H, W) with ground truth
    ``labels`` and surprised filters ``keep`` (B,) (``-1`` / ``None``: unfiltered SWAG, the thesis' comparison).

    Per sample: ``g`` = :func:`filtered_gradient` of the ground-truth logit (one batched backward); for each K in
    ``n_segments``, SLIC on the RGB image (``x·std + mean``) and the superpixel scores (:func:`superpixel_scores`),
    ranked by a stable descending sort (ties → lower label); for each r in ``removals`` the top-r superpixels are set
    to 0 (all of them when r exceeds their number) and the sample is fixed for (K, r) when ``argmax == label``.
    All (K, r) variants of all samples are evaluated ``chunk`` forwards at a time, under ``torch.no_grad()``.

    Returns ``grid`` (B, len(n_segments), len(removals)) bool, ``fixed`` (B,) bool = any (K, r), and ``first`` (B, 2)
    long = the values (K, r) of the first fixing pair in sweep order (K outer, r inner), (-1, -1) when none.
    """
    if x.ndim != 4:
        raise UsageError(f"suppression_sweep takes images (B, C, H, W); got shape {tuple(x.shape)}")
    if not n_segments or not removals or min(n_segments) < 1 or min(removals) < 1 or chunk < 1:
        raise UsageError("n_segments and removals must be non-empty positive counts, chunk >= 1")
    device = model_device(model)
    x = x.detach().to(device)
    b, n_k, n_r = x.shape[0], len(n_segments), len(removals)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.shape[0] != b:
        raise UsageError(f"got {labels.shape[0]} labels for a batch of {b} samples")
    grad = filtered_gradient(model, x, labels, keep, layer=layer, tap=tap, guided=guided)
    # rank[b, j, p] = rank of pixel p's superpixel under K = n_segments[j]; pixel removed for r iff rank < r
    rank = torch.empty((b, n_k, *x.shape[2:]), dtype=torch.long, device=device)
    for i in range(b):  # SLIC runs on CPU, one image at a time
        rgb = denormalise(x[i], mean, std)
        for j, k in enumerate(n_segments):
            seg, scores = superpixel_scores(rgb, grad[i], int(k))
            order = torch.sort(scores, descending=True, stable=True).indices
            rank[i, j] = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=device))[seg]
    r_vals = torch.as_tensor(list(removals), dtype=torch.long, device=device)
    rows = b * n_k * n_r  # row = (i·n_k + j)·n_r + q
    correct = torch.empty(rows, dtype=torch.bool, device=device)
    with model_state(model), torch.no_grad():
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            r = torch.arange(start, stop, device=device)
            sample, j, q = r // (n_k * n_r), (r // n_r) % n_k, r % n_r
            keep_px = rank[sample, j] >= r_vals[q].view(-1, 1, 1)  # (n, H, W): False = removed (set to 0)
            out = model(x[sample] * keep_px[:, None].to(x.dtype))
            correct[start:stop] = out.argmax(dim=1) == labels[sample]
    grid = correct.view(b, n_k, n_r)
    flat = grid.reshape(b, -1)
    fixed = flat.any(dim=1)
    pair = torch.arange(n_k * n_r, device=device)
    idx = torch.where(flat, pair, n_k * n_r).amin(dim=1).clamp(max=n_k * n_r - 1)  # first fixing pair in sweep order
    ks = torch.as_tensor(list(n_segments), dtype=torch.long, device=device)
    first = torch.stack([ks[idx // n_r], r_vals[idx % n_r]], dim=1)
    first[~fixed] = -1
    return {"fixed": fixed, "first": first, "grid": grid}
