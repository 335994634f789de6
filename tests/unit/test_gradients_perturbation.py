"""Integrated gradients, SmoothGrad, occlusion, RISE and the sobel / noise / constant baselines.

Captum equality on a seeded random-weight ResNet-18, exact identities (IG completeness, RISE's weighting) and
hand values (Sobel on a step edge).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import xcore.explain as E
from xcore.errors import UsageError
from xcore.explain.rise import rise_masks

NONE = nn.Identity()  # the baselines ignore the model


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=10).eval()


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> None:
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * float(want.abs().max()))


class Head(nn.Module):
    """A smooth tiny model: conv → tanh → linear (3 classes)."""

    def __init__(self, quadratic: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 3)
        self.quadratic = quadratic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc((h * h if self.quadratic else torch.tanh(h)).flatten(1))


# ---------------------------------------------------------------- integrated gradients


def test_ig_equals_captum_trapezoid_plus_endpoint_terms(resnet: nn.Module) -> None:
    # Captum's riemann_trapezoid uses the same alphas linspace(0,1,m) with weights 1/m, endpoints 1/(2m); the XRAI
    # form weighs all m points 1/m, so IG = Captum + (x − x') ⊙ (g(x') + g(x)) / (2m) (both gradients from Captum).
    from captum.attr import IntegratedGradients, Saliency

    torch.manual_seed(1)
    x, t, m = torch.randn(2, 3, 64, 64), [3, 7], 8
    cap = IntegratedGradients(resnet).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=m,
                                                method="riemann_trapezoid")
    sal = Saliency(resnet)
    ends = sal.attribute(torch.zeros_like(x), target=t, abs=False) + sal.attribute(x, target=t, abs=False)
    want = cap + x * ends / (2 * m)
    close(E.run("integrated_gradients", resnet, x, t, steps=m, reduce="sum", batch_size=10), want.sum(1))
    close(E.run("integrated_gradients", resnet, x, t, steps=m), want.abs().amax(1))
    with pytest.raises(UsageError):
        E.run("integrated_gradients", resnet, x, t, steps=m, reduce="none")


@pytest.mark.parametrize("baseline", ["black", "white", -0.5])
def test_ig_is_exact_for_quadratic_models_and_complete_for_smooth_ones(baseline: str | float) -> None:
    # f quadratic ⇒ ∇f affine in α, and the mean of linspace(0,1,m) is 1/2 ⇒ the m-point sum is the exact
    # integral: Σ IG = f(x) − f(x') for any m (it would be off by O(1/m) without either endpoint).
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 5)
    ref = {"black": torch.zeros_like(x), "white": x.flatten(1).amax(1)[:, None, None, None].expand_as(x),
           -0.5: torch.full_like(x, -0.5)}[baseline]
    t = [0, 2]
    for quadratic, m, rel in [(True, 5, 1e-4), (False, 400, 2e-3)]:
        net = Head(quadratic).eval()
        ig = E.run("integrated_gradients", net, x, t, steps=m, baseline=baseline, reduce="sum", batch_size=7)
        with torch.no_grad():
            want = net(x)[[0, 1], t] - net(ref)[[0, 1], t]
        torch.testing.assert_close(ig.sum((1, 2)), want, rtol=rel, atol=rel)


def test_ig_batch_function_target_is_linear_in_the_target() -> None:
    torch.manual_seed(3)
    net, x = Head().eval(), torch.randn(3, 3, 5, 5)
    diff = E.run("integrated_gradients", net, x, lambda y: y[:, 0] - 2 * y[:, 1], steps=8, reduce="sum",
                 batch_size=4)
    a = E.run("integrated_gradients", net, x, [0, 0, 0], steps=8, reduce="sum")
    b = E.run("integrated_gradients", net, x, [1, 1, 1], steps=8, reduce="sum")
    torch.testing.assert_close(diff, a - 2 * b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- smoothgrad


def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(resnet: nn.Module,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from captum.attr import NoiseTunnel, Saliency

    torch.manual_seed(4)
    x, t, n = torch.randn(2, 3, 64, 64), [1, 5], 4
    x[1] *= 3  # the two samples get different σ = 0.15 (max − min)
    z = torch.randn(n, *x.shape)  # per-sample standard-normal draws
    sigma = 0.15 * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    eps = (sigma[None, :, None, None, None] * z).transpose(0, 1).reshape(2 * n, *x.shape[1:])  # sample-major
    monkeypatch.setattr(torch, "normal", lambda mean, std: eps.clone())
    cap = NoiseTunnel(Saliency(resnet)).attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=1.0, target=t,
                                                  abs=False)
    monkeypatch.undo()
    close(E.run("smoothgrad", resnet, x, t, noise=z, batch_size=3), cap.abs().amax(1))
    close(E.run("smoothgrad", resnet, x, t, noise=z, reduce="sum"), cap.sum(1))


def test_smoothgrad_seeded_noise_is_shared_standard_normal() -> None:
    torch.manual_seed(5)
    net, x = Head().eval(), torch.randn(2, 3, 5, 5)
    z = torch.randn((6, 3, 5, 5), generator=torch.Generator().manual_seed(11))
    got = E.run("smoothgrad", net, x, [0, 1], samples=6, seed=11)
    torch.testing.assert_close(got, E.run("smoothgrad", net, x, [0, 1], noise=z, batch_size=1))
    torch.testing.assert_close(got, E.run("smoothgrad", net, x, [0, 1], noise=z[:, None].expand(6, 2, 3, 5, 5)))
    assert not torch.allclose(got, E.run("smoothgrad", net, x, [0, 1], samples=6, seed=12))
    # sigma = 0 gives the plain gradient
    torch.testing.assert_close(E.run("smoothgrad", net, x, [0, 1], sigma=0.0), E.run("gradient", net, x, [0, 1]))


# ---------------------------------------------------------------- occlusion


@pytest.mark.parametrize("softmax", [False, True])
def test_occlusion_equals_captum(resnet: nn.Module, softmax: bool) -> None:
    # windows 16 with stride 10 on 64×60: the last window of each axis is cut at the edge, as in Captum
    from captum.attr import Occlusion

    torch.manual_seed(6)
    x, t = torch.randn(2, 3, 64, 60), [2, 9]
    fwd = (lambda v: resnet(v).softmax(1)) if softmax else resnet
    cap = Occlusion(fwd).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 10, 10), baselines=0.0,
                                   target=t, perturbations_per_eval=16)
    assert torch.equal(cap[:, 0], cap[:, 2])  # one value for all channels of a pixel
    got = E.run("occlusion", resnet, x, t, window=16, stride=10, softmax=softmax, batch_size=20)
    close(got, cap[:, 0])


def test_occlusion_hand_values_on_a_linear_model() -> None:
    # y_0 = Σ w ⊙ x; occluding a window W drops y_0 by Σ_W w ⊙ x; 1-D windows of 2, stride 1 on 3 pixels
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]]))
    x = torch.ones(1, 1, 3)
    got = E.run("occlusion", net, x, [0], window=2, stride=1, softmax=False)
    # windows {0,1}: drop 3, {1,2}: drop 6 ⇒ pixel 0: 3, pixel 1: (3+6)/2, pixel 2: 6
    torch.testing.assert_close(got, torch.tensor([[3.0, 4.5, 6.0]]))


# ---------------------------------------------------------------- RISE


def test_rise_masks_match_the_reference_skimage_generator() -> None:
    from skimage.transform import resize

    gen = torch.Generator().manual_seed(7)
    s, shape = 4, (13, 10)
    grids = torch.rand((5, s, s), generator=gen) < 0.5
    cells = [math.ceil(n / s) for n in shape]
    shifts = torch.stack([torch.randint(c, (5,), generator=gen) for c in cells], dim=1)
    got = rise_masks(grids, shifts, shape)
    up = [(s + 1) * c for c in cells]
    for i in range(5):  # eclique/RISE generate_masks
        big = resize(grids[i].numpy().astype("float32"), up, order=1, mode="reflect", anti_aliasing=False)
        dx, dy = shifts[i].tolist()
        np.testing.assert_allclose(got[i].numpy(), big[dx:dx + shape[0], dy:dy + shape[1]], atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1


def test_rise_weighting_on_hand_masks() -> None:
    # y = [Σ x, 0] ⇒ p_0(x ⊙ M) = sigmoid(Σ M) for x = 1; S = Σ_i p_0 M_i / (N p)
    class Sum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.flatten(1).sum(1)
            return torch.stack([s, torch.zeros_like(s)], dim=1)

    masks = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    sig = [1 / (1 + math.exp(-v)) for v in (1.0, 3.0, 0.0)]
    want = sum(w * m for w, m in zip(sig, masks, strict=True)) / (3 * 0.5)
    x = torch.ones(2, 1, 2, 2)
    got = E.run("rise", Sum(), x, [0, 0], masks=masks, batch_size=2)
    torch.testing.assert_close(got, torch.stack([want, want]))
    logit = E.run("rise", Sum(), x, [0, 0], masks=masks, p=0.25, softmax=False)
    torch.testing.assert_close(logit[0], (1 * masks[0] + 3 * masks[1]) / (3 * 0.25))


def test_rise_peaks_where_the_model_looks() -> None:
    class Region(nn.Module):  # class 0 logit = 6 · (mean of rows 2:6, columns 9:14 − 1/2)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            r = 6 * (x[:, :, 2:6, 9:14].mean((1, 2, 3)) - 0.5)
            return torch.stack([r, torch.zeros_like(r)], dim=1)

    x = torch.ones(1, 3, 16, 16)
    sal = E.run("rise", Region(), x, [0], n_masks=600, cells=4, seed=3)[0]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[2:6, 9:14] = True
    assert sal[inside].mean() > sal[~inside].mean() + 0.1
    r, c = divmod(int(sal.argmax()), 16)
    assert inside[r, c]
    torch.testing.assert_close(sal, E.run("rise", Region(), x, [0], n_masks=600, cells=4, seed=3)[0])
    assert not torch.equal(sal, E.run("rise", Region(), x, [0], n_masks=600, cells=4, seed=4)[0])


# ---------------------------------------------------------------- shared: predicted class fixed on the clean input


@pytest.mark.parametrize("name,params", [("integrated_gradients", {"steps": 6}), ("smoothgrad", {"samples": 3}),
                                         ("occlusion", {"window": 3, "stride": 2, "softmax": False}),
                                         ("rise", {"n_masks": 20})])
def test_default_target_is_the_class_predicted_on_the_clean_input(name: str, params: dict) -> None:
    class Energy(nn.Module):  # y = [Σ x², 0, 40]: class 0 on the clean inputs, class 2 at x' = 0 and under RISE masks
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e = x.pow(2).flatten(1).sum(1)
            return torch.stack([e, torch.zeros_like(e), torch.full_like(e, 40.0)], dim=1)

    x = 1.5 * torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(8))
    assert (Energy()(x).argmax(1) == 0).all()
    torch.testing.assert_close(E.run(name, Energy(), x, **params), E.run(name, Energy(), x, [0, 0, 0], **params))
    assert not torch.allclose(E.run(name, Energy(), x, **params), E.run(name, Energy(), x, [2, 2, 2], **params))


# ---------------------------------------------------------------- baselines


def test_sobel_step_edge_hand_values_video_and_skimage() -> None:
    from skimage.filters import sobel

    x = torch.zeros(1, 1, 4, 5)
    x[..., 2:] = 1.0  # step between columns 1 and 2: G_w = (1 + 2 + 1)(1 − 0) = 4 at both, G_h = 0
    want = torch.tensor([0.0, 4.0, 4.0, 0.0, 0.0]).expand(4, 5)
    torch.testing.assert_close(E.run("sobel", NONE, x)[0], want)
    rgb = torch.zeros(1, 3, 4, 5)
    rgb[:, 1, :, 2:] = 1.0  # green step: luma 0.587
    torch.testing.assert_close(E.run("sobel", NONE, rgb)[0], 0.587 * want)
    clip = torch.stack([x, x.flip(3)], dim=2)  # (1, 1, 2, 4, 5): two frames
    torch.testing.assert_close(E.run("sobel", NONE, clip)[0], torch.stack([want, want.flip(1)]))
    img = torch.rand(1, 1, 9, 7, generator=torch.Generator().manual_seed(9))
    np.testing.assert_allclose(E.run("sobel", NONE, img)[0].numpy(), 4 * math.sqrt(2) * sobel(img[0, 0].numpy()),
                               atol=1e-5)


def test_noise_baseline_is_seeded_uniform() -> None:
    x = torch.zeros(3, 3, 8, 9)
    a = E.run("noise", NONE, x, seed=5)
    assert a.shape == (3, 8, 9) and a.min() >= 0 and a.max() < 1
    torch.testing.assert_close(a, E.run("noise", NONE, x, seed=5))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a, E.run("noise", NONE, x, seed=6))
    per = E.run("noise", NONE, x, seeds=[4, 5, 6])
    torch.testing.assert_close(per[1], torch.rand((8, 9), generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (2, 3, 4, 6, 7), (1, 1, 1, 2)])
def test_constant_baseline_has_one_one_and_one_zero(shape: tuple[int, ...]) -> None:
    for seed in range(5):
        m = E.run("constant", NONE, torch.zeros(shape), seed=seed)
        assert m.shape == (shape[0], *shape[2:])
        flat = m.flatten(1)
        assert ((flat == 1).sum(1) == 1).all() and ((flat == 0).sum(1) == 1).all()
        assert torch.isclose(flat, torch.tensor(0.9)).sum(1).eq(flat.shape[1] - 2).all()
    with pytest.raises(UsageError):
        E.run("constant", NONE, torch.zeros(1, 1, 1, 1))


@pytest.mark.parametrize("name,params", [("integrated_gradients", {"steps": 4}), ("smoothgrad", {"samples": 3}),
                                         ("occlusion", {"window": 3, "stride": 2}), ("rise", {"n_masks": 10}),
                                         ("sobel", {}), ("noise", {}), ("constant", {})])
def test_every_method_runs_on_video_clips(name: str, params: dict) -> None:
    torch.manual_seed(10)
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 6 * 7, 5)).eval()
    x = torch.randn(2, 3, 4, 6, 7)
    got = E.run(name, net, x, [1, 3], resize=False, **params)
    assert got.shape == (2, 4, 6, 7) and torch.isfinite(got).all() and got.abs().sum() > 0
