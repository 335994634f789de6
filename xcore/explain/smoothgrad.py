"""SmoothGrad (Smilkov, Thorat, Kim, Viégas, Wattenberg, *SmoothGrad: removing noise by adding noise*, 2017;
Hartley's PhD thesis, Cardiff 2021, §2.2.2.1).

``SG = reduce_c((1/n) Σ_i ∂s/∂x (x + ε_i))``, ``ε_i = σ z_i``, ``z_i ~ N(0, I)``, ``σ = sigma · (max x − min x)``
per sample (project defaults: sigma = 0.15 and n = 25, inside the 10–20 % noise level Smilkov et al. recommend;
no xcore source fixes them). ``s`` is the target logit (``softmax=True``:
``softmax(y)_c``). The draws ``z_i`` (n, C, *S) come from ``torch.Generator().manual_seed(seed)`` on the CPU and
are shared by every sample of the batch (so a sample's map does not depend on its batch); ``noise`` supplies
them explicitly, either (n, C, *S) or per sample (n, B, C, *S). The noisy copies are batched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.batching import spans
from xcore.core.maps import reduce_channels
from xcore.core.params import ignores, when_given
from xcore.core.targets import Target
from xcore.explain._copies import resolve, tiled_gradient
from xcore.explain.base import register


@register("smoothgrad")
@ignores(when_given("noise", ("samples", "seed")))
def smoothgrad(model: nn.Module, x: Tensor, target: Target, *, samples: int = 25, sigma: float = 0.15,
               seed: int = 0, noise: Tensor | None = None, reduce: str = "max_abs", softmax: bool = False,
               batch_size: int = 32) -> Tensor:
    """Mean gradient over the noisy copies, reduced over channels, (B, *S).

    Keyword parameters (the defaults are the published ones):

    - ``samples`` = 25: the number n of noisy copies (Smilkov et al. see diminishing returns beyond n ≈ 50; 25
      is a project choice).
    - ``sigma`` = 0.15: the noise level σ / (max x − min x) per sample (Smilkov et al. find 10–20 % best).
    - ``seed`` = 0: seed of the CPU generator the draws come from (ignored, and refused, when ``noise`` is given).
    - ``noise`` = ``None``: explicit standard-normal draws (n, C, *S) or (n, B, C, *S) instead of seeded ones;
      then ``samples`` and ``seed`` must stay at their defaults.
    - ``reduce`` = ``"max_abs"``: channel reduction (:func:`xcore.core.maps.reduce_channels`).
    - ``softmax`` = ``False``: the gradient of the logit ``y^c``; ``True``: of ``softmax(y)_c``.
    - ``batch_size`` = 32: model inputs per pass (throughput only).
    """
    x = x.detach()
    if noise is None:
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((int(samples), *x.shape[1:]), generator=gen)
    n = noise.shape[0]
    if tuple(noise.shape[1:]) not in (tuple(x.shape), tuple(x.shape[1:])):
        raise ValueError(f"noise of shape {tuple(noise.shape)} does not fit a batch of shape {tuple(x.shape)}")
    noise = noise.to(device=x.device, dtype=x.dtype)
    flat = x.flatten(1)
    std = (sigma * (flat.amax(dim=1) - flat.amin(dim=1))).reshape(-1, *([1] * (x.ndim - 1)))
    resolve(model, x, target, softmax=softmax)
    total = torch.zeros_like(x)
    for start, stop in spans(n, x.shape[0], batch_size):
        z = noise[start:stop]
        z = z[:, None] if z.ndim == x.ndim else z  # shared draws broadcast over the batch
        total += tiled_gradient(model, x[None] + std[None] * z, target, softmax=softmax).sum(0)
    return reduce_channels(total / n, reduce)
