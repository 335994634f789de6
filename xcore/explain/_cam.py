"""Pieces shared by the CAM modules (the CAM family of Hartley's PhD thesis, Cardiff 2021, §2.2.2.3, eqs 2.2–2.6):
position dims, a clean cached forward, and the scoring of
every (channel k, sample b) perturbation in chunks for the gradient-free CAMs (Score-CAM, Ablation-CAM).

Activations are (B, K, *S') with S' = H'×W' (images) or T'×H'×W' (video); every sum / mean "over the map"
runs over all of S', never over a hard-coded pair of axes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from xcore.core.context import capture
from xcore.core.targets import Target
from xcore.errors import UsageError

PairForward = Callable[[Tensor, Tensor], Tensor]


def positions(act: Tensor) -> tuple[int, ...]:
    """The non-channel dims of a (B, K, *S') activation (the ``Σ_ij`` / ``Σ_ab`` of thesis eqs 2.2–2.5 run over
    these)."""
    if act.ndim < 3:
        raise UsageError(f"CAM layer output has no spatial dims (shape {tuple(act.shape)}); pick a conv layer")
    return tuple(range(2, act.ndim))


def pooled_dims(act: Tensor, pooling: str = "global") -> tuple[int, ...]:
    """The dims a CAM's channel weights pool over: ``"global"`` every position (T'×H'×W' for clips, as Captum's
    ``LayerGradCam`` and jacobgil/pytorch-grad-cam), ``"time"`` H'×W' only, one weight per channel and time slice
    (open-mmlab/mmaction2 ``mmaction/utils/gradcam_utils.py``)."""
    if pooling == "global":
        return positions(act)
    if pooling == "time":
        if act.ndim != 5:
            raise UsageError("pooling='time' needs a (B, K, T, H, W) activation")
        return (3, 4)
    raise UsageError(f"unknown pooling {pooling!r}; use 'global' or 'time'")


def as_channel_weights(alpha: Tensor, act: Tensor) -> Tensor:
    """(B, K) weights reshaped to broadcast against ``act`` (B, K, *S'), for ``gradcam.weighted_sum``."""
    return alpha.reshape(*alpha.shape[:2], *([1] * (act.ndim - 2)))


def clean_forward(model: nn.Module, x: Tensor, target: Target, layer: str,
                  softmax: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """No-grad forward of the clean batch: the layer's activation ``A``, the output, and the target scores (B,).

    Selecting the scores here also fixes the predicted class when no target was given, so perturbed forwards
    are scored for the class of the clean input.
    """
    with torch.no_grad(), capture(model, layer) as store:
        out = model(x)
    act = store["act"].detach()
    positions(act)
    return act, out, target.select(out, softmax=softmax)


def pair_scores(target: Target, clean_out: Tensor, n_channels: int, run: PairForward, batch_size: int,
                softmax: bool = False) -> Tensor:
    """Target scores (B, K) of K·B perturbed forwards, ``batch_size`` at a time, without gradients.

    ``run(ks, bs)`` returns the model output (n, ...) for the pairs ``(ks[i], bs[i])`` (channel, sample). Pairs are
    enumerated channel-major so that the outputs reshape to (K, B, ...): slice k is a batch aligned with the
    samples, and the target (class indices, per-sample or whole-batch callables) selects from it as usual.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    B = clean_out.shape[0]
    flat = torch.arange(n_channels * B, device=clean_out.device)
    with torch.no_grad():
        outs = [run(idx // B, idx % B) for idx in flat.split(batch_size)]
    out = torch.cat(outs).reshape(n_channels, B, *clean_out.shape[1:])
    return torch.stack([target.select(o, softmax=softmax) for o in out], dim=1)
