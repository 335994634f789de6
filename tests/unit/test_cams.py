"""CAM family beyond Grad-CAM: hand-computed values, exact identities (2-D and 3-D) and equality with pytorch-grad-cam.

pytorch-grad-cam comparisons replicate its post-processing: ReLU, min–max at native size, cv2 bilinear resize
(half-pixel centres = ``resize_to``), min–max again; its output is compared to ours after the same steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xcore.explain as E
from xcore.core.context import capture
from xcore.core.maps import resize_to
from xcore.errors import UsageError
from xcore.explain.gradamap_cam import gradamap_weights
from xcore.explain.gradcam import activation_and_gradient
from xcore.explain.gradcam_pp import gradcam_pp_weights

CAMS = ("gradcam_pp", "xgradcam", "gradamap_cam", "scorecam", "ablationcam")


class GapNet(nn.Module):
    """stride-2 conv → ReLU (the CAM layer ``act``) → global average pool over every position → linear; 2-D or 3-D."""

    xcore_cam_layer = "act"

    def __init__(self, dims: int = 2, k: int = 5, classes: int = 3) -> None:
        super().__init__()
        # stride 2: the CAM layer is coarser than the input, so upsampling choices matter
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(3, k, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(k, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(2).mean(2))


def _net_and_input(dims: int, seed: int = 0) -> tuple[GapNet, torch.Tensor]:
    torch.manual_seed(seed)
    shape = (3, 3, 6, 7) if dims == 2 else (3, 3, 4, 5, 6)
    return GapNet(dims).eval(), torch.randn(*shape)


def _bcast(w: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    return w.reshape(*w.shape, *([1] * (act.ndim - 2)))


# ---------------------------------------------------------------- hand-computed values and exact identities


def test_gradcam_pp_hand_computed_weights_2d_and_3d() -> None:
    # channel 0: ΣA = 4; g = 1, -1, 0, .5 -> a = 1/(2+4), 1/(2-4), 0, .25/(.5+4·.125) = 1/6, -1/2, 0, 1/4
    #   paper α0 = 1/6·1 + 1/4·.5 = 7/24; official: a / Σa = a / (-1/12) -> α0 = -12 · 7/24 = -7/2
    # channel 1: ΣA = 2; g = 2, .5, -.25, 0 -> a = 4/24, .25/.75, .0625/.09375, 0 = 1/6, 1/3, 2/3, 0
    #   paper α1 = 1/6·2 + 1/3·.5 = 1/2; official: Σa = 7/6 -> α1 = 3/7
    A = torch.tensor([[1.0, 2.0, 0.0, 1.0], [0.5, 0.0, 1.0, 0.5]])
    g = torch.tensor([[1.0, -1.0, 0.0, 0.5], [2.0, 0.5, -0.25, 0.0]])
    for shape in [(1, 2, 2, 2), (1, 2, 2, 1, 2)]:  # H×W, and T×H×W with ΣA running over time too
        a, gr = A.reshape(shape), g.reshape(shape)
        paper = gradcam_pp_weights(a, gr, "paper", eps=0.0).flatten()
        assert torch.allclose(paper, torch.tensor([7 / 24, 1 / 2]), atol=1e-7)
        assert torch.allclose(gradcam_pp_weights(a, gr, "paper").flatten(), paper, atol=1e-5)  # ε = 1e-6
        official = gradcam_pp_weights(a, gr, "official").flatten()
        assert torch.allclose(official, torch.tensor([-7 / 2, 3 / 7]), atol=1e-6)
    # the common bug (A_ij instead of Σ_ab A_ab in the denominator) gives a different α0
    buggy = (torch.where(g != 0, g**2 / (2 * g**2 + A * g**3), 0) * g.clamp(min=0)).sum(1)
    assert not torch.allclose(buggy, torch.tensor([7 / 24, 1 / 2]))
    with pytest.raises(UsageError, match="variant"):
        gradcam_pp_weights(A.reshape(1, 2, 2, 2), g.reshape(1, 2, 2, 2), "nope")


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_pp_on_gap_head_has_closed_form(dims: int) -> None:
    # g = w_k/Z everywhere -> a = 1/(2 + ΣA·w_k/Z), α_k = Z·ReLU(w_k/Z)·a = ReLU(w_k) / (2 + w_k·mean(A^k))
    net, x = _net_and_input(dims)
    t = [0, 2, 1]
    got = E.run("gradcam_pp", net, x, t, eps=0.0, resize=False)
    A, w = net.features(x), net.fc.weight.detach()[t]
    alpha = w.clamp(min=0) / (2 + w * A.flatten(2).mean(2))
    assert torch.allclose(got, torch.relu((_bcast(alpha, A) * A).sum(1)), atol=1e-5)
    assert got.shape == (3, *A.shape[2:]) and got.amax() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_xgradcam_equals_gradcam_on_gap_linear_head(dims: int) -> None:
    # α_k = Σ_ij (A_ij/ΣA) · w_k/Z = w_k/Z = Grad-CAM's weight (dead channels differ but have A = 0)
    net, x = _net_and_input(dims, seed=1)
    t = [1, 0, 2]
    got = E.run("xgradcam", net, x, t, resize=False)
    assert torch.allclose(got, E.run("gradcam", net, x, t, resize=False), atol=1e-6)
    A, w = net.features(x), net.fc.weight.detach()[t]
    assert torch.allclose(got, torch.relu((_bcast(w, A) * A).sum(1)) / A[0, 0].numel(), atol=1e-6)
    assert got.amax() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_gradamap_weights_sum_to_logit_minus_bias_over_z(dims: int) -> None:
    net, x = _net_and_input(dims, seed=2)
    t = torch.tensor([2, 2, 0])
    act, grad = activation_and_gradient(net, x, E.Target.of(t, 3), "act")
    alpha = gradamap_weights(act, grad).flatten(1)  # (B, K)
    Z = act[0, 0].numel()
    y = net(x).detach().gather(1, t[:, None])[:, 0]
    assert torch.allclose(alpha.sum(1), (y - net.fc.bias.detach()[t]) / Z, atol=1e-6)
    A, w = net.features(x), net.fc.weight.detach()[t]
    assert torch.allclose(alpha, w * A.flatten(2).mean(2) / Z, atol=1e-7)
    want = torch.relu((_bcast(alpha, A) * A).sum(1))
    assert torch.allclose(E.run("gradamap_cam", net, x, t, resize=False), want, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_ablationcam_on_gap_head_is_weight_times_mean_over_score(dims: int) -> None:
    # zeroing A^k removes w_k·mean(A^k) from the logit: α_k = w_k·mean(A^k) / y^c
    net, x = _net_and_input(dims, seed=3)
    t = [0, 1, 2]
    A, w = net.features(x), net.fc.weight.detach()[t]
    y = net(x).detach()[range(3), t]
    alpha = w * A.flatten(2).mean(2) / y[:, None]
    want = (_bcast(alpha, A) * A).sum(1)
    for bs in (1, 4, 64):  # chunking must not matter (4 splits pairs of different channels)
        got = E.run("ablationcam", net, x, t, relu=False, batch_size=bs, resize=False)
        assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(E.run("ablationcam", net, x, t, resize=False), want.clamp(min=0), atol=1e-5)
    # callable targets score the perturbed forwards per sample too
    fns = [lambda o, c=c: o[0, c] for c in t]
    assert torch.allclose(E.run("ablationcam", net, x, fns, relu=False, batch_size=4, resize=False), want, atol=1e-5)


def _scorecam_reference(net: nn.Module, x: torch.Tensor, t: list[int], variant: str) -> torch.Tensor:
    """haofanwang/Score-CAM's loop, one sample and one channel at a time (paper_v2: softmax over kept channels)."""
    A = net.features(x)
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    maps = []
    for b in range(x.shape[0]):
        ups, scores = [], []
        for k in range(A.shape[1]):
            up = F.interpolate(A[b : b + 1, k : k + 1], size=x.shape[2:], mode=mode, align_corners=False)
            if up.max() == up.min():
                continue
            m = (up - up.min()) / (up.max() - up.min())
            scores.append(F.softmax(net(x[b : b + 1] * m), dim=1)[0, t[b]].detach())
            ups.append(up[0, 0])
        s, up = torch.stack(scores), torch.stack(ups)
        if variant == "paper_v2":
            s = s.softmax(0)
        maps.append(torch.relu((_bcast(s, up[None]) * up).sum(0)))
    return torch.stack(maps)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("variant", ["official", "paper_v2"])
def test_scorecam_equals_the_official_loop(dims: int, variant: str) -> None:
    net, x = _net_and_input(dims, seed=4)
    with torch.no_grad():  # channel 0 constant (ReLU(0.5)): the official code skips it
        net.conv.weight[0] = 0
        net.conv.bias[0] = 0.5
    t = [2, 0, 1]
    want = _scorecam_reference(net, x, t, variant)
    for bs in (3, 7):
        got = E.run("scorecam", net, x, t, variant=variant, batch_size=bs, resize=False)
        assert got.shape == x[:, 0].shape
        assert torch.allclose(got, want, atol=1e-5)
    assert want.amax() > 0
    # predicted class when no target is given
    pred = net(x).argmax(1).tolist()
    assert torch.allclose(E.run("scorecam", net, x, None, variant=variant), _scorecam_reference(net, x, pred, variant),
                          atol=1e-5)


def test_regression_gradcam_with_negative_squared_error_target() -> None:
    """Regression Grad-CAM (Gupta & Ahmed, ADL 2020 Project-III report, §2.3): ŷ = Σ_kij W_kij A_kij + b, target
    −(ŷ − y)², so ∂(−L)/∂A_kij = −2(ŷ − y) W_kij and α_k = mean_ij of it."""
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    head = nn.Linear(4 * 5 * 5, 1)
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head).eval()
    x, y = torch.randn(2, 3, 5, 5), torch.tensor([0.7, -1.3])
    A = torch.relu(conv(x)).detach()
    yhat = net(x).detach()[:, 0]
    W = head.weight.detach().reshape(4, 5, 5)
    alpha = (-2 * (yhat - y)[:, None, None, None] * W).mean(dim=(2, 3))  # (B, K)
    want = torch.relu((alpha[:, :, None, None] * A).sum(1))

    def neg_sq_err(out: torch.Tensor) -> torch.Tensor:
        return -((out[:, 0] - y) ** 2)

    per_sample: list[Callable[[torch.Tensor], torch.Tensor]] = [
        lambda o, yi=yi: -((o[0, 0] - yi) ** 2) for yi in y.tolist()]
    for target in (neg_sq_err, per_sample):
        got = E.run("gradcam", net, x, target, layer="1", resize=False)
        assert torch.allclose(got, want, atol=1e-6)
    assert want.amax() > 0


def test_registered_defaults_and_errors() -> None:
    assert set(CAMS) <= set(E.available())
    assert E.validate("scorecam")["variant"] == "official"
    assert E.validate("gradcam_pp")["variant"] == "paper"
    assert E.validate("xgradcam")["eps"] == 1e-7
    net, x = _net_and_input(2)
    with pytest.raises(UsageError, match="variant"):
        E.run("scorecam", net, x, variant="mixed")
    with pytest.raises(UsageError, match="batch_size"):
        E.run("ablationcam", net, x, batch_size=0)
    for name in CAMS:  # resized to the input, batched, state restored
        assert E.run(name, net, x, [0, 1, 2]).shape == (3, 6, 7)


# ---------------------------------------------------------------- equality with pytorch-grad-cam


def _pgc_scale(native: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image: min–max at native size, cv2 bilinear resize, min–max again."""

    def scale(m: torch.Tensor) -> torch.Tensor:
        m = m - m.flatten(1).amin(1)[:, None, None]
        return m / (1e-7 + m.flatten(1).amax(1)[:, None, None])

    return scale(resize_to(scale(native), size)).numpy()


def _model(arch: str) -> tuple[nn.Module, str]:
    from torchvision.models import resnet18, vgg16

    torch.manual_seed(0)
    if arch == "resnet18":
        return resnet18(weights=None, num_classes=10).eval(), "layer4"
    return vgg16(weights=None, num_classes=10).eval(), "features.29"


def _theirs(cls: type, net: nn.Module, layer: str, x: torch.Tensor, t: list[int]) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cls(model=net, target_layers=[net.get_submodule(layer)]) as cam:
        cam.batch_size = 64  # Score-CAM and Ablation-CAM chunk size (no effect on the others)
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in t])


@pytest.mark.parametrize("arch,size", [("resnet18", 96), ("vgg16", 64)])
def test_gradient_cams_equal_pytorch_grad_cam(arch: str, size: int) -> None:
    from pytorch_grad_cam import GradCAMPlusPlus, XGradCAM

    net, layer = _model(arch)
    torch.manual_seed(1)
    x, t = torch.randn(2, 3, size, size), [3, 7]
    for name, cls in [("gradcam_pp", GradCAMPlusPlus), ("xgradcam", XGradCAM)]:
        native = E.run(name, net, x, t, layer=layer, resize=False)
        assert native.shape == (2, *[size // {"resnet18": 32, "vgg16": 16}[arch]] * 2)
        assert native.flatten(1).amax(1).min() > 0
        assert np.abs(_pgc_scale(native, (size, size)) - _theirs(cls, net, layer, x, t)).max() < 1e-4, name
    # the official Grad-CAM++ variant is a different map
    official = E.run("gradcam_pp", net, x, t, layer=layer, variant="official", resize=False)
    assert not torch.allclose(official, E.run("gradcam_pp", net, x, t, layer=layer, resize=False))


@pytest.mark.parametrize("arch,shape", [("resnet18", (2, 3, 64, 64)), ("vgg16", (1, 3, 32, 32))])
def test_score_and_ablation_cams_equal_pytorch_grad_cam(arch: str, shape: tuple[int, ...]) -> None:
    """Score-CAM: our ``variant="pytorch_grad_cam"`` (low-resolution CAM, raw logits, softmax over channels,
    align_corners=True masks). Ablation-CAM: pytorch-grad-cam zeroes the channel when the activation minimum is 0
    and writes ``min − 1e7`` otherwise; the tapped layers are post-ReLU (minimum 0, checked), so both zero."""
    from pytorch_grad_cam import AblationCAM, ScoreCAM

    net, layer = _model(arch)
    torch.manual_seed(2)
    x, t = torch.randn(*shape), [4, 1][: shape[0]]
    size = shape[2:]
    with capture(net, layer) as store, torch.no_grad():
        net(x)
    assert store["act"].min() == 0
    native = E.run("scorecam", net, x, t, layer=layer, variant="pytorch_grad_cam", batch_size=64, resize=False)
    assert native.shape[1:] == store["act"].shape[2:] and native.flatten(1).amax(1).min() > 0
    theirs = _theirs(ScoreCAM, net, layer, x, t)
    assert np.abs(_pgc_scale(native, size) - theirs).max() < 1e-4
    native = E.run("ablationcam", net, x, t, layer=layer, batch_size=64, resize=False)
    assert native.flatten(1).amax(1).min() > 0
    theirs = _theirs(AblationCAM, net, layer, x, t)
    assert np.abs(_pgc_scale(native, size) - theirs).max() < 1e-4
