"""Per-frame Grad-CAM for CNN-LSTM video models (Gupta, Ahmed, *ADL 2020 Project-III report* — Grad-CAM for video
models and regression — §2.2 and §3).

The per-frame 2-D CNN runs on all frames at once with the frames folded into the batch, so the CAM layer's
activation is ``A`` (B·T, K, h, w), row ``b·T + t`` = frame t of clip b (:class:`xcore.models.video_nets.CNNLSTM`).
With ``A^{(t)}`` that frame's slice and ``y^c`` the explained score (through the LSTM and the classifier):

- ``α^{(t)}_k = (1/hw) Σ_ij ∂y^c/∂A^{(t)}_kij`` (one weight per channel *and frame*),
- ``map_t = ReLU(Σ_k α^{(t)}_k A^{(t)}_k)``, stacked to (B, T, h, w); :func:`xcore.explain.run` resizes it
  trilinearly to T×H×W (T is kept, each frame upsampled).

Frame relevance (extra ``frame_relevance``, (B, T)): the model's softmax attention weights ``a_t``
(``model.last_attention`` of this forward) when it has attention (Gupta & Ahmed §2.2, §3: attention shortlists
the relevant frames); otherwise — an xcore choice, not from the report — each frame's Grad-CAM mass ``Σ_ij map_t``
divided by the clip's total (sums to 1; all 0 when the whole map is 0).

cuDNN: cuDNN's RNN backward refuses eval mode (pytorch/captum #564, #1159); :func:`xcore.core.context.model_state`,
which every method runs under, turns cuDNN off around each RNN forward on CUDA
(:func:`~xcore.core.context.rnn_without_cudnn`), so the backward through the LSTM works without switching the
model to ``train()``. Not exercised on a GPU here.
"""

from __future__ import annotations

from torch import Tensor, nn

from xcore.core.layers import default_layer
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.base import Explanation, register
from xcore.explain.gradcam import activation_and_gradient, pool_weights, weighted_sum


def frame_cams(act: Tensor, grad: Tensor, batch: int, relu: bool = True) -> Tensor:
    """Per-frame Grad-CAM (B, T, h, w) from folded activations / gradients (B·T, K, h, w), row ``b·T + t``."""
    if act.ndim != 4 or act.shape[0] % batch:
        raise UsageError(f"lstm_gradcam needs a layer with frames folded into the batch (B·T, K, h, w); "
                         f"got {tuple(act.shape)} for a batch of {batch}")
    cams = weighted_sum(pool_weights(grad, "global"), act, relu)  # α^{(t)}_k: mean over h×w of each row
    return cams.reshape(batch, -1, *cams.shape[1:])


def frame_mass(cams: Tensor) -> Tensor:
    """Each frame's share of the map's total mass (B, T); 0 where the total is 0."""
    mass = cams.flatten(2).sum(dim=2)
    total = mass.sum(dim=1, keepdim=True)
    return mass / total.masked_fill(total == 0, 1.0)


@register("lstm_gradcam", extras=("frame_relevance",))
def lstm_gradcam(model: nn.Module, x: Tensor, target: Target, *, layer: str | None = None, relu: bool = True,
                 softmax: bool = False) -> Explanation:
    """Per-frame Grad-CAM maps (B, T, h, w) of a CNN-LSTM on clips ``x`` (B, C, T, H, W) plus the frame relevance.

    Keyword parameters (the defaults are the published ones):

    - ``layer`` = ``None``: a layer of the per-frame CNN that outputs (B·T, K, h, w); ``None`` = the model's
      ``xcore_cam_layer`` (``cnn.layer4`` for CNNLSTM, the last conv block of the ResNet-18 Gupta & Ahmed use,
      §2.2), else its last conv.
    - ``relu`` = ``True``: the ReLU of each frame's map (Grad-CAM's, Selvaraju et al. eq 2).
    - ``softmax`` = ``False``: ``y^c`` is the logit; ``True``: ``softmax(y)_c``.
    """
    if x.ndim != 5:
        raise UsageError(f"lstm_gradcam needs clips (B, C, T, H, W); got shape {tuple(x.shape)}")
    B, T = x.shape[0], x.shape[2]
    act, grad = activation_and_gradient(model, x, target, layer or default_layer(model), softmax)
    if act.shape[0] != B * T:
        raise UsageError(f"layer output has {act.shape[0]} rows, expected B·T = {B * T} (frames folded into "
                         f"the batch)")
    cams = frame_cams(act, grad, B, relu)
    attention = getattr(model, "last_attention", None)
    if isinstance(attention, Tensor) and tuple(attention.shape) == (B, T):
        relevance = attention.detach().to(cams.dtype)
    else:
        relevance = frame_mass(cams)
    return Explanation({"map": cams}, {"frame_relevance": relevance})
