"""Deletion / insertion engine: exact curves on hand-built toy models, AUC rule, tie order, batching."""

from __future__ import annotations

import math

import torch
from torch import nn

from xcore.core.batching import chunked, forward_batch_size
from xcore.metrics.deletion_insertion import auc, deletion_insertion, rise_blur, step_counts


class LinearLogit(nn.Module):
    """logits = [Σ_p w_p · Σ_c x_cp, 0]: softmax of class 0 is σ(Σ w·x)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.sum(1) * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def trapz(ys: list[float], xs: list[float]) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def test_exact_curves_on_a_hand_built_model() -> None:
    w = torch.tensor([[4.0, 3.0], [2.0, 1.0]])
    x = torch.ones(1, 1, 2, 2)
    r = deletion_insertion(LinearLogit(w), x, w[None], [0], steps=4)
    dele = [sig(v) for v in (10, 6, 3, 1, 0)]
    ins = [sig(v) for v in (0, 4, 7, 9, 10)]
    xs = [0, 0.25, 0.5, 0.75, 1]
    assert torch.allclose(r["deletion_curve"][0], torch.tensor(dele, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(r["insertion_curve"][0], torch.tensor(ins, dtype=torch.float64), atol=1e-6)
    assert abs(r["deletion_auc"][0].item() - trapz(dele, xs)) < 1e-6
    assert abs(r["insertion_auc"][0].item() - trapz(ins, xs)) < 1e-6
    # the reversed map removes the weakest first: a worse (higher) deletion AUC
    worse = deletion_insertion(LinearLogit(w), x, -w[None], [0], steps=4)
    assert worse["deletion_auc"][0] > r["deletion_auc"][0] and worse["insertion_auc"][0] < r["insertion_auc"][0]


def test_partial_last_step_is_weighted_by_its_true_fraction() -> None:
    w = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    x = torch.ones(1, 1, 1, 5)
    r = deletion_insertion(LinearLogit(w), x, w[None], [0], steps=2)  # step = ceil(5/2) = 3
    assert torch.equal(r["fractions"], torch.tensor([0, 0.6, 1.0], dtype=torch.float64))
    dele = [sig(15), sig(3), sig(0)]
    assert abs(r["deletion_auc"][0].item() - trapz(dele, [0, 0.6, 1.0])) < 1e-6


def test_ties_break_towards_the_lower_flat_index_and_any_spatial_rank() -> None:
    # a constant map over a T×H×W clip: voxels go in flat (row-major) order
    w = 0.1 * torch.arange(1, 9, dtype=torch.float32).reshape(2, 2, 2)
    x = torch.ones(1, 2, 2, 2, 2)
    r = deletion_insertion(LinearLogit(w), x, torch.zeros(1, 2, 2, 2), [0], steps=8)
    cum = torch.cumsum(0.1 * torch.arange(1, 9, dtype=torch.float64), 0)
    want = [sig(2 * 3.6)] + [sig(2 * (3.6 - c.item())) for c in cum]
    assert torch.allclose(r["deletion_curve"][0], torch.tensor(want, dtype=torch.float64), atol=1e-6)


def test_auc_rule_and_shared_endpoints() -> None:
    xs = torch.linspace(0, 1, 3, dtype=torch.float64)
    assert auc(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), xs).item() == 0.5
    assert abs(auc(torch.full((29,), 0.3, dtype=torch.float64), torch.linspace(0, 1, 29,
                                                                                dtype=torch.float64)) - 0.3) < 1e-12
    assert step_counts(224 * 224, 28)[1] == 1792 and step_counts(16 * 112 * 112, 28)[1] == 7168
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(3, 3, 10, 10)
    r = deletion_insertion(net, x, torch.randn(3, 10, 10))
    p0 = net(torch.zeros(3, 3, 10, 10)).softmax(1).gather(1, r["target"][:, None]).squeeze(1).double()
    assert r["deletion_curve"].shape == (3, 29)
    assert torch.allclose(r["deletion_curve"][:, -1], p0.detach(), atol=1e-6)
    assert torch.allclose(r["insertion_curve"][:, 0], p0.detach(), atol=1e-6)
    clean = net(x).softmax(1).amax(1).double().detach()
    assert torch.allclose(r["deletion_curve"][:, 0], clean, atol=1e-6)  # default target = predicted class
    assert torch.allclose(r["insertion_curve"][:, -1], clean, atol=1e-6)
    # RISE variant: insertion starts from the blurred image, deletion still ends at zeros
    v = deletion_insertion(net, x, torch.randn(3, 10, 10), r["target"], insertion_substrate="blur")
    p_blur = net(rise_blur(x)).softmax(1).gather(1, r["target"][:, None]).squeeze(1).double().detach()
    assert torch.allclose(v["insertion_curve"][:, 0], p_blur, atol=1e-6)
    assert torch.allclose(v["deletion_curve"][:, -1], p0.detach(), atol=1e-6)
    assert not torch.allclose(p_blur, p0.detach(), atol=1e-4)


def test_chunked_and_unchunked_give_the_same_curves() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    x, maps = torch.randn(5, 3, 12, 12), torch.randn(5, 12, 12)
    one = deletion_insertion(net, x, maps, batch_size=1)
    big = deletion_insertion(net, x, maps, batch_size=1000)
    odd = deletion_insertion(net, x, maps, batch_size=7)
    for k in ("deletion_curve", "insertion_curve"):
        assert torch.allclose(one[k], big[k], atol=1e-6) and torch.allclose(odd[k], big[k], atol=1e-6)
    # per-sample results do not depend on the other samples of the batch
    solo = deletion_insertion(net, x[2:3], maps[2:3])
    assert torch.allclose(solo["deletion_auc"], big["deletion_auc"][2:3], atol=1e-6)


def test_native_resolution_maps_are_upsampled_and_nan_maps_rejected() -> None:
    w = torch.ones(4, 4)
    x = torch.ones(1, 1, 4, 4)
    coarse = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    r = deletion_insertion(LinearLogit(w), x, coarse, [0], steps=16)
    # after 4 steps the four top-left pixels (the upsampled hot cell) are gone
    assert abs(r["deletion_curve"][0, 4].item() - sig(12)) < 1e-6
    bad = torch.full((1, 4, 4), float("nan"))
    try:
        deletion_insertion(LinearLogit(w), x, bad, [0])
    except ValueError as err:
        assert "NaN" in str(err)
    else:
        raise AssertionError("a NaN map must be rejected")


def test_rise_blur_kernel_and_zero_padding() -> None:
    img = torch.zeros(1, 1, 21, 21)
    img[0, 0, 10, 10] = 1.0
    k = rise_blur(img)[0, 0, 5:16, 5:16]
    assert abs(k.sum().item() - 1) < 1e-6 and abs(k.max().item() - 0.0088326) < 1e-6
    ones = rise_blur(torch.ones(1, 1, 21, 21))[0, 0]
    assert ones[10, 10] > 0.999 and ones[0, 0] < 0.5  # borders darken towards 0 (the mean colour)


def test_forward_budget_adapts_to_the_device_and_halves_on_oom() -> None:
    assert forward_batch_size("cpu", 3 * 112 * 112) == 16
    assert forward_batch_size("cpu", 3 * 224 * 224) == 4
    assert forward_batch_size("cpu", 10, requested=5) == 5
    sizes: list[int] = []

    def run(lo: int, hi: int) -> torch.Tensor:
        sizes.append(hi - lo)
        if hi - lo > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate")
        return torch.arange(lo, hi)

    assert torch.equal(chunked(10, 8, run), torch.arange(10))
    assert sizes[:3] == [8, 4, 2]


def test_batchnorm_folding_keeps_the_curves_and_tracks_weight_changes() -> None:
    from xcore.models.fold import folded

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(6, 4)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    x, maps = torch.randn(4, 3, 12, 12), torch.randn(4, 12, 12)
    fast = deletion_insertion(net, x, maps)
    slow = deletion_insertion(net, x, maps, fold_batchnorm=False)
    for k in ("deletion_curve", "insertion_curve"):
        assert torch.allclose(fast[k], slow[k], atol=1e-6)
    copy = folded(net)
    assert copy is not net and not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert folded(net) is copy  # cached
    with torch.no_grad():
        net[0].weight.mul_(2)  # an in-place change invalidates the cached copy
    assert folded(net) is not copy
    assert torch.allclose(folded(net)(x), net(x), atol=1e-5)


def test_clips_go_channels_last_3d_without_changing_the_curves() -> None:
    """5-D inputs are fed as ``channels_last_3d`` (faster oneDNN convs); a model that rejects that layout gets
    contiguous clips; the curves are the same either way."""
    from xcore.core.batching import accepts_channels_last

    class ViewFirst(nn.Module):  # ``.view`` fails on channels-last strides: forces the contiguous path
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.view(x.shape[0], -1).view(x.shape))

    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    x, maps = torch.randn(2, 3, 4, 6, 6), torch.randn(2, 4, 6, 6)
    assert accepts_channels_last(net, x[:1]) and not accepts_channels_last(ViewFirst(net), x[:1])
    fast, plain = deletion_insertion(net, x, maps, steps=7), deletion_insertion(ViewFirst(net), x, maps, steps=7)
    for k in ("deletion_curve", "insertion_curve"):
        assert torch.allclose(fast[k], plain[k], atol=1e-6)
