"""The peer implementations ``benchmarks/explainers.py`` times ours against, called with our defaults.

Each ``*_peer`` returns (label, a no-argument call) for one method on a :class:`Bench` batch, or ``None`` when no
peer computes the same thing: pytorch-grad-cam for the CAMs, Captum for the gradient family and occlusion, lime,
PAIR's saliency for XRAI, zennit for LRP (versions and translated arguments: the docstring of
``benchmarks/explainers.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

CAM_PEERS = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "scorecam": "ScoreCAM",
             "ablationcam": "AblationCAM"}
GRADIENT_FREE_CAMS = ("scorecam", "ablationcam")

Peer = tuple[str, Callable[[], Any]]


@dataclass
class Bench:
    """One model's benchmark inputs: the batch, its predicted classes and the CAM layers."""

    name: str
    model: nn.Module
    x: Tensor
    t: Tensor
    cam_layer: str
    quick_gf_layer: str | None
    canonizers: Callable[[], list[Any]]
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    ours_s: dict[str, float] = field(default_factory=dict)

    def fresh(self, grad: bool = False) -> Tensor:
        """A copy of the batch (peers may flip ``requires_grad`` on what they get)."""
        return self.x.detach().clone().requires_grad_(grad)

    def stats(self) -> tuple[Tensor, Tensor]:
        return (torch.tensor(self.mean).reshape(1, -1, 1, 1), torch.tensor(self.std).reshape(1, -1, 1, 1))


def cam_peer(name: str, p: dict[str, Any], b: Bench) -> Peer:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pgc, CAM_PEERS[name])
    layer = b.model.get_submodule(p["layer"])
    targets = [ClassifierOutputTarget(int(c)) for c in b.t]
    grads = name not in GRADIENT_FREE_CAMS  # its loss.backward() needs a graph: anchor it at the input

    def fn() -> np.ndarray:
        with cls(model=b.model, target_layers=[layer]) as cam:
            cam.batch_size = p.get("batch_size", 32)
            return cam(input_tensor=b.fresh(grads), targets=targets)

    return f"pgc.{cls.__name__}", fn


def captum_peer(name: str, p: dict[str, Any], b: Bench) -> Peer:
    from captum import attr as ca

    model, t, n = b.model, b.t, b.x.shape[0]
    per_pass = max(1, int(p.get("batch_size", 32)) // n)  # copies of the batch per pass, as ours
    if name == "gradient":
        return "captum.Saliency", lambda: ca.Saliency(model).attribute(b.fresh(), target=t, abs=True).amax(1)
    if name == "input_x_gradient":
        return "captum.InputXGradient", lambda: ca.InputXGradient(model).attribute(b.fresh(), target=t).abs().amax(1)
    if name == "guided_backprop":
        return "captum.GuidedBackprop", lambda: ca.GuidedBackprop(model).attribute(b.fresh(), target=t).abs().amax(1)
    if name == "integrated_gradients":
        def ig() -> Tensor:
            x = b.fresh()
            return ca.IntegratedGradients(model).attribute(
                x, baselines=torch.zeros_like(x), target=t, n_steps=p["steps"], method="riemann_trapezoid",
                internal_batch_size=p["batch_size"]).abs().amax(1)
        return "captum.IntegratedGradients", ig
    if name == "smoothgrad":
        flat = b.x.flatten(1)
        sd = float((p["sigma"] * (flat.amax(1) - flat.amin(1))).mean())
        return "captum.NoiseTunnel", lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            b.fresh(), nt_type="smoothgrad", nt_samples=p["samples"], nt_samples_batch_size=per_pass, stdevs=sd,
            target=t, abs=False).abs().amax(1)
    assert name == "occlusion"
    fwd = (lambda v: model(v).softmax(1)) if p["softmax"] else model
    c, w, s = b.x.shape[1], p["window"], p["stride"]
    return "captum.Occlusion", lambda: ca.Occlusion(fwd).attribute(
        b.fresh(), sliding_window_shapes=(c, w, w), strides=(c, s, s), baselines=p["value"], target=t,
        perturbations_per_eval=per_pass)[:, 0]


def lime_peer(p: dict[str, Any], b: Bench) -> Peer | None:
    if p["segmenter"] != "quickshift" or p["hide"] != "mean":
        return None
    from lime import lime_image
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    seg = SegmentationAlgorithm("quickshift", kernel_size=p["kernel_size"], max_dist=p["max_dist"], ratio=p["ratio"])
    mean, std = np.asarray(p["mean"]), np.asarray(p["std"])

    def classify(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(batch).float().permute(0, 3, 1, 2).contiguous()  # NCHW, as ours feeds the model
            return b.model(x).softmax(1).double().numpy()

    def fn() -> list[Any]:
        return [lime_image.LimeImageExplainer(kernel_width=p["kernel_width"], random_state=p["seed"]).explain_instance(
            b.x[i].permute(1, 2, 0).double().numpy(), classify, labels=(int(b.t[i]),), top_labels=None,
            hide_color=None, num_features=100000, num_samples=p["n_samples"], batch_size=p["batch_size"],
            segmentation_fn=lambda im: seg(np.clip(im * std + mean, 0.0, 1.0)))
            for i in range(b.x.shape[0])]

    return "lime.LimeImageExplainer", fn


def xrai_peer(p: dict[str, Any], b: Bench) -> Peer:
    import saliency.core as sc

    mean, std = b.stats()

    def call_model(batch: np.ndarray, call_model_args: Any = None, expected_keys: Any = None) -> dict[str, Any]:
        u = torch.from_numpy(np.asarray(batch, dtype=np.float32)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        (g,) = torch.autograd.grad(b.model((u - mean) / std)[:, call_model_args].sum(), u)
        return {sc.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}

    pixels = (b.x * std + mean).permute(0, 2, 3, 1).double().numpy()
    params = sc.XRAIParameters(steps=p["steps"])
    return "saliency.XRAI", lambda: [sc.XRAI().GetMask(pixels[i], call_model, call_model_args=int(b.t[i]),
                                                       batch_size=p["batch_size"], extra_parameters=params)
                                     for i in range(len(pixels))]


def lrp_peer(b: Bench) -> Peer:
    from zennit.attribution import Gradient
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.rules import AlphaBeta, Norm, ZBox
    from zennit.types import AvgPool, Convolution, Linear

    mean, std = b.stats()
    rule = AlphaBeta(alpha=1, beta=0, zero_params="bias")
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Convolution, rule), (Linear, rule), (AvgPool, Norm())],
        first_map=[(Convolution, ZBox(low=(0 - mean) / std, high=(1 - mean) / std))], canonizers=b.canonizers())
    with torch.no_grad():
        onehot = torch.zeros_like(b.model(b.x)).scatter_(1, b.t[:, None], 1.0)

    def fn() -> Tensor:
        with Gradient(model=b.model, composite=composite) as attributor:
            _, rel = attributor(b.fresh(), onehot)
        return rel.sum(1)

    return "zennit.Gradient", fn


def peer_for(name: str, p: dict[str, Any], b: Bench) -> Peer | None:
    if name in CAM_PEERS:
        return cam_peer(name, p, b)
    if name in ("gradient", "input_x_gradient", "guided_backprop", "integrated_gradients", "smoothgrad",
                "occlusion"):
        return captum_peer(name, p, b)
    if name == "lime":
        return lime_peer(p, b)
    if name == "xrai":
        return xrai_peer(p, b)
    if name == "lrp":
        return lrp_peer(b)
    return None
