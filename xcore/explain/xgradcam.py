"""XGrad-CAM (Fu, Hu, Dong, Wang, Li, Liu, *Axiom-based Grad-CAM*, BMVC 2020; Hartley's PhD thesis, Cardiff 2021, eq
2.5 / 6.3 — "thesis").

``α_k = Σ_ij (A^k_ij / (Σ_ab A^k_ab + ε)) · g^k_ij`` with ``g = ∂y^c/∂A`` (the thesis typesets ∂², a typo: it is the
first derivative), ``CAM = ReLU(Σ_k α_k A^k)``. ``ε = 1e-7`` as jacobgil/pytorch-grad-cam (Fu0511/XGrad-CAM uses
1e-6). Sums run over every non-channel dim (H'×W' or T'×H'×W'), or H'×W' per time slice with ``pooling="time"``.
"""

from __future__ import annotations

from torch import Tensor, nn

from xcore.core.layers import default_layer
from xcore.core.targets import Target
from xcore.explain._cam import pooled_dims
from xcore.explain.base import register
from xcore.explain.gradcam import activation_and_gradient, weighted_sum


def xgradcam_weights(act: Tensor, grad: Tensor, eps: float = 1e-7, pooling: str = "global") -> Tensor:
    """Channel weights ``α_k`` (B, K, 1, ...) of eq 2.5 (``pooling="time"``: per time slice, sums over H'×W')."""
    dims = pooled_dims(act, pooling)
    return (grad * act / (act.sum(dim=dims, keepdim=True) + eps)).sum(dim=dims, keepdim=True)


@register("xgradcam")
def xgradcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, eps: float = 1e-7,
             relu: bool = True, softmax: bool = False, pooling: str = "global") -> Tensor:
    """XGrad-CAM map at the layer's resolution (B, *S').

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: the CAM layer, as :func:`xcore.explain.gradcam.gradcam` (default: the final conv
      block).
    - ``eps`` = 1e-7: added to ``Σ_ab A^k_ab`` (jacobgil/pytorch-grad-cam ``xgrad_cam.py``; Fu0511/XGrad-CAM uses
      1e-6).
    - ``relu`` = ``True``: the outer ReLU; ``softmax`` = ``False``: ``y^c`` is the logit.
    - ``pooling`` = ``"global"``: sums over every position; ``"time"``: over H'×W' per time slice of a clip.
    """
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    return weighted_sum(xgradcam_weights(act, grad, eps, pooling), act, relu)
