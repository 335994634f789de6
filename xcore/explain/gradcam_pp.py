"""Grad-CAM++ (Chattopadhyay, Sarkar, Howlader, Balasubramanian, WACV 2018; Hartley's PhD thesis, Cardiff 2021, eq
2.4 / 6.2 — "thesis").

``variant="paper"`` (default; eq 19 of the paper via the exp-output trick, as jacobgil/pytorch-grad-cam):
``a^k_ij = g² / (2g² + (Σ_ab A^k_ab)·g³ + ε)`` (0 where g = 0), ``α_k = Σ_ij a^k_ij · ReLU(g^k_ij)``,
``CAM = ReLU(Σ_k α_k A^k)``, with ``g = ∂y^c/∂A`` and the denominator using the **sum over the map** ``Σ_ab A_ab``.

``variant="official"`` (adityac94/Grad_CAM_plus_plus ``misc/utils.py``): ``a = g² / (2g² + (Σ_ab A_ab)·g³)`` with a
zero denominator replaced by 1 (no ε), then ``a`` divided per channel by its sum over **all** positions (the released
code sums every location, not only positive-gradient ones; a zero sum is replaced by 1 here where the original would
give NaN). The code's ``exp(y^c)`` factor on the first derivative is a positive per-sample constant that cancels in
its max-only normalisation; it is omitted (it overflows float32 for y^c > 88). Normalisation is a separate step.

All sums run over every non-channel dim, so (B, K, T', H', W') activations work (pytorch-grad-cam issue #583).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xcore.core.layers import default_layer
from xcore.core.params import by_value, ignores
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain._cam import pooled_dims
from xcore.explain.base import register
from xcore.explain.gradcam import activation_and_gradient, weighted_sum


def gradcam_pp_weights(act: Tensor, grad: Tensor, variant: str = "paper", eps: float = 1e-6,
                       pooling: str = "global") -> Tensor:
    """Channel weights ``α_k`` (B, K, 1, ...) of eq 2.4 from ``A`` and ``g`` (both (B, K, *S')); with
    ``pooling="time"`` every sum runs over H'×W' of each time slice (one weight per channel and slice)."""
    dims = pooled_dims(act, pooling)
    g2 = grad.pow(2)
    g3 = g2 * grad
    total = act.sum(dim=dims, keepdim=True)  # Σ_ab A^k_ab, one per channel
    if variant == "paper":
        a = torch.where(grad != 0, g2 / (2 * g2 + total * g3 + eps), torch.zeros_like(g2))
    elif variant == "official":
        den = 2 * g2 + total * g3
        a = g2 / torch.where(den != 0, den, torch.ones_like(den))
        norm = a.sum(dim=dims, keepdim=True)
        a = a / torch.where(norm != 0, norm, torch.ones_like(norm))
    else:
        raise UsageError(f"unknown Grad-CAM++ variant {variant!r}; use 'paper' or 'official'")
    return (a * grad.clamp(min=0)).sum(dim=dims, keepdim=True)


@register("gradcam_pp")
@ignores(by_value("variant", {"official": ("eps",)}))
def gradcam_pp(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, variant: str = "paper",
               eps: float = 1e-6, relu: bool = True, softmax: bool = False, pooling: str = "global") -> Tensor:
    """Grad-CAM++ map at the layer's resolution (B, *S'): ``ReLU(Σ_k α_k A^k)`` with eq 2.4 weights.

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the CAM layer, as :func:`xcore.explain.gradcam.gradcam` (default: the final conv
      block).
    - ``variant`` = ``"paper"``: the weights of the paper's eq 19 (as jacobgil/pytorch-grad-cam
      ``grad_cam_plusplus.py``); ``"official"``: adityac94/Grad_CAM_plus_plus ``misc/utils.py`` (see above).
    - ``eps`` = 1e-6: the ε in the ``"paper"`` denominator (jacobgil/pytorch-grad-cam's value);
      ``"official"`` has none, so there it must stay at its default.
    - ``relu`` = ``True``: the outer ReLU of the CAM; ``softmax`` = ``False``: ``y^c`` is the logit.
    - ``pooling`` = ``"global"``: sums over every position; ``"time"``: over H'×W' per time slice of a clip
      (:func:`xcore.explain._cam.pooled_dims`).
    """
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    return weighted_sum(gradcam_pp_weights(act, grad, variant, eps, pooling), act, relu)
