"""Filter-filtered SWAG and fixing by suppression (thesis §6.3.2, §6.4.1): the filtered gradient equals the hand
gradient through one filter, a hand-built "surprise" is fixed only when the gradient is filtered, and the batched
sweep equals a plain loop over (K, r)."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
from filter_nets import TwoConvNet
from skimage.segmentation import slic
from torch import Tensor, nn

from xcore.errors import UsageError
from xcore.explain.guided_backprop import guided_relus
from xcore.filters.suppression import (
    SWEEP_REMOVALS,
    SWEEP_SEGMENTS,
    VISUAL_SEGMENTS,
    filtered_gradient,
    superpixel_scores,
    suppression_sweep,
    surprise_superpixel,
)

IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # normalised input = RGB in [0, 1]; "set to 0" = black


def Net(n_filters: int = 5, classes: int = 3) -> TwoConvNet:  # noqa: N802  (used like a class)
    """conv → ReLU → conv (the filtered layer, 5 filters) → ReLU → GAP → linear."""
    return TwoConvNet(4, n_filters, classes)


def _net() -> TwoConvNet:
    torch.manual_seed(0)
    return Net().double()


def _vanilla(model: nn.Module, x: Tensor, classes: list[int]) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[torch.arange(len(classes)), torch.tensor(classes)].sum(), x)
    return g


def _through_filter_only(model: TwoConvNet, k: int) -> TwoConvNet:
    """The same net with every linear column but k zeroed: with a GAP + linear head, ``y^c`` then depends on the
    input only through filter k, ``y^c = w^c_k · mean(ReLU(A^k)) + b_c``, so its gradient is the one through k."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        keep = torch.zeros_like(m.fc.weight)
        keep[:, k] = 1
        m.fc.weight.mul_(keep)
    return m


# ----------------------------------------------------------------------------------- (1) the filtered gradient


def test_filtered_gradient_equals_the_hand_gradient_through_one_filter() -> None:
    model = _net()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    classes, keep = [0, 2, 1, 1], torch.tensor([3, 0, 4, -1])
    got = filtered_gradient(model, x, classes, keep, layer="conv2")
    for b, k in enumerate(keep.tolist()):
        hand = model if k == -1 else _through_filter_only(model, k)  # -1: unfiltered = vanilla
        want = _vanilla(hand, x[b : b + 1], [classes[b]])[0]
        assert want.abs().max() > 0
        torch.testing.assert_close(got[b], want, rtol=1e-10, atol=1e-12)
    # keep=None is the vanilla gradient of the whole batch; the filter changes it
    vanilla = _vanilla(model, x, classes)
    torch.testing.assert_close(filtered_gradient(model, x, classes, None, layer="conv2"), vanilla,
                               rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got[:3], vanilla[:3])
    # the same filter seen from the head's input (B, K): GAP is per channel, so the gradient is the same
    torch.testing.assert_close(filtered_gradient(model, x, classes, keep, layer="fc", tap="input"), got,
                               rtol=1e-10, atol=1e-12)
    # guided backprop (every ReLU guided) with the same filter = guided gradient of the filter-only net
    got_gb = filtered_gradient(model, x, classes, keep, layer="conv2", guided=True)
    for b, k in enumerate(keep.tolist()):
        hand = model if k == -1 else _through_filter_only(model, k)
        with guided_relus():
            want = _vanilla(hand, x[b : b + 1], [classes[b]])[0]
        torch.testing.assert_close(got_gb[b], want, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got_gb, got)


def test_filtered_gradient_restores_the_model_and_rejects_bad_filters() -> None:
    model = _net().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    filtered_gradient(model, x, [0, 1], torch.tensor([1, 2]), layer="conv2")
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not model.conv2._forward_hooks and not model.conv2._forward_pre_hooks
    with pytest.raises(UsageError, match=r"-1\.\.4"):
        filtered_gradient(model, x, [0, 1], torch.tensor([5, 0]), layer="conv2")
    with pytest.raises(UsageError, match="1 kept filters for a batch of 2"):
        filtered_gradient(model, x, [0, 1], torch.tensor([0]), layer="conv2")
    model.unused = nn.Conv2d(4, 5, 1)  # never called by forward: nothing would be filtered
    with pytest.raises(UsageError, match="did not run"):
        filtered_gradient(model, x, [0, 1], torch.tensor([0, 1]), layer="unused")
    assert not model.conv2._forward_hooks


def test_superpixel_scores_are_slic_segments_and_mean_max_abs_gradient() -> None:
    rng = np.random.default_rng(0)
    rgb = np.clip(np.kron(rng.uniform(size=(4, 4, 3)), np.ones((8, 8, 1))) + rng.normal(0, 0.02, (32, 32, 3)), 0, 1)
    grad = torch.from_numpy(rng.normal(size=(3, 32, 32)))
    seg, scores = superpixel_scores(rgb, grad, 20)
    want_seg = slic(rgb, n_segments=20, compactness=10.0, channel_axis=-1, start_label=0)
    np.testing.assert_array_equal(seg.numpy(), want_seg)
    m = np.abs(grad.numpy()).max(axis=0).ravel()
    lab = want_seg.ravel()
    want = np.bincount(lab, weights=m) / np.bincount(lab)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-12)
    seg_t, scores_t = superpixel_scores(torch.from_numpy(rgb), grad, 20)  # a tensor image gives the same
    assert torch.equal(seg_t, seg) and torch.equal(scores_t, scores)


# --------------------------------------------------------------------- (2) a surprise that only filtering finds


def _surprise_model() -> nn.Sequential:
    """Filter 0 = "red" (R − G), evidence for the WRONG class 1 (and against class 0); filter 1 = "green" (G − R),
    the evidence of the correct class 0. The green filter has the larger input gradient (|∂y^0/∂x| = 4/Z on green
    pixels vs 2/Z on red ones, Z = H·W), and class 1 wins when nothing is left (bias 0.5)."""
    conv, fc = nn.Conv2d(3, 2, 1, bias=False), nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[2.0, -2.0, 0.0], [-1.0, 1.0, 0.0]]).view(2, 3, 1, 1))
        fc.weight.copy_(torch.tensor([[-1.0, 4.0], [24.0, 0.0]]))
        fc.bias.copy_(torch.tensor([0.0, 0.5]))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


def _surprise_images() -> tuple[Tensor, Tensor]:
    """Green backgrounds (correct class 0 spread over the image) with a red patch (the surprising feature):
    0 = 8×8 patch, 1 = 16×16 patch (several superpixels), 2 = too little green to ever win."""
    x = torch.zeros(3, 3, 32, 32)
    x[:, 1] = 0.6
    x[2, 1] = 0.1
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    x[0, :, 4:12, 20:28] = red
    x[1, :, 8:24, 8:24] = red
    x[2, :, 4:12, 20:28] = red
    patch = torch.zeros(3, 32, 32, dtype=torch.bool)
    patch[0, 4:12, 20:28] = patch[1, 8:24, 8:24] = patch[2, 4:12, 20:28] = True
    return x, patch


SMALL = {"n_segments": (16, 32, 64), "removals": (1, 2, 3, 4, 8, 16), "mean": IDENTITY[0], "std": IDENTITY[1]}


def test_filtered_suppression_fixes_the_surprise_and_unfiltered_does_not() -> None:
    model, (x, _) = _surprise_model(), _surprise_images()
    labels = torch.zeros(3, dtype=torch.long)
    assert torch.equal(model(x).argmax(1), torch.ones(3, dtype=torch.long))  # all misclassified as class 1
    filt = suppression_sweep(model, x, labels, torch.zeros(3, dtype=torch.long), layer="0", **SMALL)
    plain = suppression_sweep(model, x, labels, None, layer="0", **SMALL)
    # Filtered through the red filter, only red pixels have a gradient (the green filter's is zeroed at the layer),
    # so the top superpixels are the patch; removing it leaves class 0: y^0 = 4·0.6·(1 − p) > y^1 = 0.5.
    # Unfiltered, the green pixels' gradient (4/Z) exceeds the red ones' (2/Z), so SWAG removes the correct class'
    # evidence first; by the time the red patch goes, no green is left and the bias keeps class 1 — never fixed.
    assert filt["fixed"].tolist() == [True, True, False]
    assert filt["first"].tolist() == [[16, 1], [16, 2], [-1, -1]]
    assert not plain["fixed"].any() and not plain["grid"].any()
    assert plain["first"].tolist() == [[-1, -1]] * 3
    # sample 0 at K=16: the patch is one superpixel, so every r < number of superpixels fixes it; r=16 removes all
    assert filt["grid"][0, 0].tolist() == [True] * 5 + [False]


def test_surprise_superpixel_outlines_the_patch_only_when_filtered() -> None:
    model, (x, patch) = _surprise_model(), _surprise_images()
    assert VISUAL_SEGMENTS == 50
    assert inspect.signature(surprise_superpixel).parameters["n_segments"].default == VISUAL_SEGMENTS
    seg, top = surprise_superpixel(model, x[0], 0, 0, layer="0", mean=IDENTITY[0], std=IDENTITY[1])
    assert seg.shape == (32, 32) and int(seg.max()) > 20
    region = seg == top
    assert region.any() and bool(patch[0][region].all())  # inside the red patch
    # the lowest label among the tied patch superpixels (stable order)
    assert top == int(seg[patch[0]].min())
    seg_u, top_u = surprise_superpixel(model, x[0], 0, None, layer="0", mean=IDENTITY[0], std=IDENTITY[1])
    assert torch.equal(seg_u, seg) and not bool(patch[0][seg_u == top_u].any())  # green: the larger gradient


# ---------------------------------------------------------------------------- (3) the grid and the sweep order


def test_the_default_grid_is_the_thesis_grid_and_first_is_the_first_fixing_pair() -> None:
    params = inspect.signature(suppression_sweep).parameters
    assert params["n_segments"].default == SWEEP_SEGMENTS == (100, 200, 300, 400)
    assert params["removals"].default == SWEEP_REMOVALS == (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100)
    assert params["guided"].default is False and params["tap"].default == "output"
    model, (x, _) = _surprise_model(), _surprise_images()
    res = suppression_sweep(model, x, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), layer="0",
                            mean=IDENTITY[0], std=IDENTITY[1])
    assert res["grid"].shape == (3, 4, 11) and res["grid"].dtype == torch.bool
    assert torch.equal(res["fixed"], res["grid"].flatten(1).any(1))
    for b in range(3):
        pairs = [(k, r) for i, k in enumerate(SWEEP_SEGMENTS) for j, r in enumerate(SWEEP_REMOVALS)
                 if res["grid"][b, i, j]]
        assert res["first"][b].tolist() == list(pairs[0] if pairs else (-1, -1))
    assert res["fixed"].tolist() == [True, True, False]
    assert res["first"][1, 1] > 1  # the 16×16 patch spans several superpixels: one removal is not enough


def _manual_grid(model: nn.Module, x: Tensor, labels: Tensor, grad: Tensor, n_segments: tuple[int, ...],
                 removals: tuple[int, ...], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """One (sample, K, r) at a time: SLIC on x·std + mean, mean max|g| per superpixel, numpy stable ranking."""
    grid = np.zeros((x.shape[0], len(n_segments), len(removals)), dtype=bool)
    for b in range(x.shape[0]):
        rgb = np.clip(np.moveaxis(x[b].double().numpy(), 0, -1) * std + mean, 0, 1)
        m = np.abs(grad[b].double().numpy()).max(axis=0)
        for i, k in enumerate(n_segments):
            seg = slic(rgb, n_segments=k, compactness=10.0, channel_axis=-1, start_label=0)
            score = np.array([m[seg == lab].mean() for lab in range(seg.max() + 1)])
            ranked = np.argsort(-score, kind="stable")
            for j, r in enumerate(removals):
                xr = x[b].clone()
                xr[:, torch.from_numpy(np.isin(seg, ranked[:r]))] = 0
                grid[b, i, j] = int(model(xr[None]).argmax()) == int(labels[b])
    return grid


def test_the_batched_sweep_equals_a_loop_over_samples_and_pairs_with_any_chunk() -> None:
    torch.manual_seed(3)
    model = Net(n_filters=5, classes=3)
    x = torch.randn(3, 3, 24, 24)
    labels, keep = torch.tensor([0, 1, 2]), torch.tensor([1, -1, 4])
    kw = {"layer": "relu2", "n_segments": (8, 20), "removals": (1, 3, 6, 50)}
    res = suppression_sweep(model, x, labels, keep, chunk=1000, **kw)
    grad = filtered_gradient(model, x, labels, keep, layer="relu2")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet, the default
    want = _manual_grid(model, x, labels, grad, kw["n_segments"], kw["removals"], mean, std)
    np.testing.assert_array_equal(res["grid"].numpy(), want)
    assert 0 < want.sum() < want.size  # a grid with both outcomes
    again = suppression_sweep(model, x, labels, keep, chunk=1, **kw)
    assert all(torch.equal(again[key], res[key]) for key in res)
