"""Explainers: exact identities, hand-computed values and equality with peer libraries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xcore.explain as E
from xcore.core.maps import resize_to
from xcore.errors import UnknownLayerError, UnknownNameError, UsageError


class GapNet(nn.Module):
    """conv → ReLU (the CAM layer) → global average pool → linear."""

    xcore_cam_layer = "act"

    def __init__(self, k: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, k, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(k, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_gradcam_on_gap_linear_head_is_cam_over_z() -> None:
    torch.manual_seed(0)
    net, x = GapNet(), torch.randn(4, 3, 6, 7)
    targets = [0, 2, 1, 2]
    got = E.run("gradcam", net, x, targets, resize=False)
    A = net.act(net.conv(x)).detach()
    w = net.fc.weight.detach()[targets]  # (B, K)
    cam = torch.relu((w[:, :, None, None] * A).sum(1)) / (6 * 7)
    assert torch.allclose(got, cam, atol=1e-6, rtol=0)
    assert got.abs().sum() > 0


def test_gradcam_time_pooling_gives_per_slice_weights() -> None:
    torch.manual_seed(1)
    conv = nn.Conv3d(2, 3, 1)
    head = nn.Linear(3 * 4, 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = conv, head

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2, T=4, H, W) -> per-time GAP -> linear
            return self.head(self.conv(x).mean(dim=(3, 4)).flatten(1))

    x = torch.randn(2, 2, 4, 3, 3)
    got = E.run("gradcam", Net(), x, [1, 0], layer="conv", pooling="time", relu=False, resize=False)
    A = conv(x).detach()  # (B, K, T, H, W); ∂y/∂A[k, t, i, j] = W[c, k*T + t] / (H W)
    Wc = head.weight.detach()[[1, 0]].reshape(2, 3, 4) / 9
    want = (Wc[:, :, :, None, None] * A).sum(1)
    assert torch.allclose(got, want, atol=1e-6)


def test_vanilla_gradient_matches_hand_computed_values() -> None:
    # y = W2 relu(W1 vec(x)); for class c: ∂y_c/∂x = W1ᵀ (1[h > 0] ⊙ W2[c])
    W1 = torch.tensor([[1.0, -2.0, 0.5, 0.0, 1.0, -1.0, 2.0, 0.0], [-1.0, 1.0, 1.0, 3.0, 0.0, 0.5, -0.5, 1.0],
                       [0.5, 0.5, -1.0, 1.0, 2.0, 0.0, 1.0, -2.0]])
    W2 = torch.tensor([[1.0, -1.0, 2.0], [0.0, 3.0, -1.0]])
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(W1)
        net[3].weight.copy_(W2)
    x = torch.tensor([1.0, 2.0, -1.0, 0.5, 0.0, 1.0, 1.0, -0.5]).reshape(1, 2, 2, 2)
    # h = W1 x = [1-4-0.5+0+0-1+2+0, -1+2-1+1.5+0+0.5-0.5-0.5, 0.5+1+1+0.5+0+0+1+1] = [-2.5, 1.0, 5.0]
    # active units 2 and 3: g = W1[1]*(-1) + W1[2]*2 for c=0
    g = -W1[1] + 2 * W1[2]
    want = g.reshape(2, 2, 2).abs().amax(0)
    assert torch.allclose(E.run("gradient", net, x, [0])[0], want)
    assert torch.allclose(E.run("gradient", net, x, [0], reduce="sum")[0], g.reshape(2, 2, 2).sum(0))
    xg = (x[0] * g.reshape(2, 2, 2)).abs().amax(0)
    assert torch.allclose(E.run("input_x_gradient", net, x, [0])[0], xg)


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=10).eval()


def test_gradcam_equals_pytorch_grad_cam_on_resnet18() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _resnet18()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 128, 128)
    targets = [3, 7]
    with GradCAM(model=net, target_layers=[net.layer4]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    native = E.run("gradcam", net, x, targets, layer="layer4", resize=False)
    assert native.shape == (2, 4, 4) and native.min() >= 0 and native.amax() > 0

    def scale(m: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's scale_cam_image without the resize
        m = m - m.flatten(1).amin(1)[:, None, None]
        return m / (1e-7 + m.flatten(1).amax(1)[:, None, None])

    # pytorch-grad-cam: scale at native size, cv2 bilinear resize (half-pixel centres), scale again
    ours = scale(resize_to(scale(native), (128, 128))).numpy()
    assert np.abs(ours - theirs).max() < 1e-4


def test_guided_backprop_and_input_x_gradient_equal_captum_on_resnet18() -> None:
    from captum.attr import GuidedBackprop, InputXGradient

    net = _resnet18()
    x = torch.randn(2, 3, 64, 64)
    t = torch.tensor([1, 4])
    theirs = GuidedBackprop(net).attribute(x.clone().requires_grad_(True), target=t).abs().amax(1)
    assert torch.allclose(E.run("guided_backprop", net, x, t), theirs, atol=1e-6)
    theirs = InputXGradient(net).attribute(x.clone().requires_grad_(True), target=t).abs().amax(1)
    assert torch.allclose(E.run("input_x_gradient", net, x, t), theirs, atol=1e-6)


def test_guided_backprop_guides_functional_relus_too() -> None:
    torch.manual_seed(2)
    lin1, lin2 = nn.Linear(12, 6), nn.Linear(6, 3)

    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return lin2(F.relu(lin1(x.flatten(1)), inplace=True))

    modular = nn.Sequential(nn.Flatten(), lin1, nn.ReLU(inplace=True), lin2)
    x = torch.randn(3, 3, 2, 2)
    a = E.run("guided_backprop", Functional(), x, [0, 1, 2], reduce="sum")
    b = E.run("guided_backprop", modular, x, [0, 1, 2], reduce="sum")
    assert torch.allclose(a, b)
    plain = E.run("gradient", modular, x, [0, 1, 2], reduce="sum")
    assert not torch.allclose(a, plain)  # guidance changed something
    # hand rule: δ_in = 1[h > 0] · max(W2[c], 0) through the single ReLU
    h = lin1(x.flatten(1)).detach()
    delta = (h > 0) * lin2.weight.detach()[[0, 1, 2]].clamp(min=0)
    want = (delta @ lin1.weight.detach()).reshape(3, 3, 2, 2).sum(1)
    assert torch.allclose(a, want, atol=1e-6)


def test_targets_callable_length_and_state_restored() -> None:
    net = GapNet()
    net.train()
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match="2 samples"):
        E.run("gradient", net, x, [0, 1, 2])
    # callable on the whole output: a regression-like target, here the sum of the logits
    a = E.run("gradient", net, x, lambda out: out.sum(1), reduce="sum")
    b = sum(E.run("gradient", net, x, [c, c], reduce="sum") for c in range(3))
    assert torch.allclose(a, b, atol=1e-6)
    # per-sample mix of an int and a callable
    c = E.run("gradient", net, x, [1, lambda o: o[0, 2]], reduce="sum")
    assert torch.allclose(c[0], E.run("gradient", net, x[:1], [1], reduce="sum")[0], atol=1e-6)
    assert torch.allclose(c[1], E.run("gradient", net, x[1:], [2], reduce="sum")[0], atol=1e-6)
    assert net.training and all(p.requires_grad for p in net.parameters())

    def boom(out: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        E.run("gradcam", net, x, boom)
    assert not net.act._forward_hooks and net.training


def test_predicted_class_is_the_default_target() -> None:
    net = GapNet().eval()
    x = torch.randn(3, 3, 5, 5)
    pred = net(x).argmax(1)
    assert torch.allclose(E.run("gradcam", net, x), E.run("gradcam", net, x, pred))


def test_centre_baseline_hand_values_and_3d() -> None:
    x = torch.zeros(1, 1, 3, 3)
    got = E.run("centre", None_model := nn.Identity(), x)[0]  # noqa: F841
    r = 1 - 1 / np.sqrt(2)
    want = torch.tensor([[0, r, 0], [r, 1, r], [0, r, 0]], dtype=torch.float32)
    assert torch.allclose(got, want, atol=1e-6)
    vid = E.run("centre", nn.Identity(), torch.zeros(1, 3, 3, 5, 5))[0]
    assert vid[1, 2, 2] == 1 and vid[0, 0, 0] == 0 and vid[2, 4, 4] == 0


def test_random_baseline_is_seeded_and_peaks_at_the_drawn_point() -> None:
    x = torch.zeros(4, 3, 9, 11)
    a = E.run("random", nn.Identity(), x, seed=3)
    assert torch.equal(a, E.run("random", nn.Identity(), x, seed=3))
    assert not torch.equal(a, E.run("random", nn.Identity(), x, seed=4))
    assert torch.allclose(a.flatten(1).amax(1), torch.ones(4)) and (a.flatten(1).amin(1) == 0).all()
    # per-sample seeds make a sample's map independent of the batch it travels in
    s = E.run("random", nn.Identity(), x, seeds=[5, 6, 7, 8])
    assert torch.equal(s[2:], E.run("random", nn.Identity(), x[:2], seeds=[7, 8]))


def test_unknown_method_layer_and_parameter_are_usage_errors() -> None:
    net = GapNet()
    with pytest.raises(UnknownNameError, match="unknown explanation method 'gradcamm'"):
        E.run("gradcamm", net, torch.zeros(1, 3, 4, 4))
    with pytest.raises(UnknownLayerError, match="did you mean"):
        E.validate("gradcam", net, {"layer": "convv"})
    with pytest.raises(UsageError, match="no parameter"):
        E.validate("gradient", net, {"layr": "x"})
    assert set(E.available()) >= {"gradient", "guided_backprop", "input_x_gradient", "gradcam", "centre", "random"}
