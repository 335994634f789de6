"""The filter-ranking experiment (thesis §6.2.2, Table 6.1): batched ablation curves equal a plain loop, hooks are
removed exactly, ties and the trapezoid AUC follow the conventions, and a hand-built net behaves as expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from filter_nets import TwoConvNet
from torch import Tensor, nn

from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.gradamap_cam import gradamap_weights
from xcore.explain.gradcam import activation_and_gradient
from xcore.filters.ranking import ablate, ablation_curves, ablation_steps, rank_order, ranking_auc


def Net(n_filters: int = 8, classes: int = 4) -> TwoConvNet:  # noqa: N802  (used like a class)
    """conv → ReLU → conv (the ablated layer, 8 filters) → ReLU → GAP → linear."""
    return TwoConvNet(6, n_filters, classes)


def _setup(b: int = 12) -> tuple[Net, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    model = Net().double()
    with torch.no_grad():
        model.fc.bias.zero_()  # the classes differ by the filters alone, so zeroing filters changes predictions
    x = torch.randn(b, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        labels = model(x).argmax(1)
    labels[::3] = torch.randint(0, 4, (len(labels[::3]),))  # some labels that the clean net gets wrong
    order = torch.stack([torch.randperm(8) for _ in range(b)])
    return model, x, labels, order


def _manual_curves(model: nn.Module, x: Tensor, labels: Tensor, order: Tensor, step: int) -> Tensor:
    """One sample and one step at a time: a forward hook that zeroes the channels ``order[b, :k]`` of conv2."""
    ks = [min(i * step, order.shape[1]) for i in range(-(-order.shape[1] // step) + 1)]
    out = torch.zeros(x.shape[0], len(ks))
    for b in range(x.shape[0]):
        for i, k in enumerate(ks):
            zero = order[b, :k]

            def hook(_m: nn.Module, _a: object, o: Tensor, zero: Tensor = zero) -> Tensor:
                o = o.clone()
                o[:, zero] = 0
                return o

            h = model.conv2.register_forward_hook(hook)
            with torch.no_grad():
                out[b, i] = float(int(model(x[b : b + 1]).argmax()) == int(labels[b]))
            h.remove()
    return out


# ----------------------------------------------------------------------------- (1) curves equal a plain loop


def test_curves_equal_a_manual_loop_zeroing_channels_one_step_at_a_time() -> None:
    model, x, labels, order = _setup()
    got = ablation_curves(model, x, labels, order, layer="conv2", step=3)
    want = _manual_curves(model, x, labels, order, step=3)
    assert got.shape == (12, 4) and got.dtype == torch.float32  # k = 0, 3, 6, 8
    assert torch.equal(got, want)
    assert 0 < want.sum() < want.numel() and (want[:, 1:] != want[:, :1]).any()  # both outcomes, changes with k
    # the same zeroing seen from the next module's input, and from the head's input (GAP is per channel)
    assert torch.equal(ablation_curves(model, x, labels, order, layer="relu2", tap="input", step=3), want)
    assert torch.equal(ablation_curves(model, x, labels, order, layer="fc", tap="input", step=3), want)


def test_ablation_steps_and_order_validation() -> None:
    assert ablation_steps(512).tolist() == list(range(0, 513, 16))  # 33 points, 32 increments (§6.2.2)
    assert ablation_steps(40, 16).tolist() == [0, 16, 32, 40]
    assert ablation_steps(8, 8).tolist() == [0, 8]
    model, x, labels, _ = _setup(2)
    with pytest.raises(UsageError, match="permutation"):
        ablation_curves(model, x, labels, torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6], list(range(8))]), layer="conv2")
    with pytest.raises(UsageError, match="does not match"):  # 7 ranked filters for an 8-filter layer
        ablation_curves(model, x, labels, torch.stack([torch.randperm(7), torch.randperm(7)]), layer="conv2")
    assert not model.conv2._forward_hooks


# ------------------------------------------------------------------------------------ (2) exact restoration


def test_ablate_masks_inside_the_block_and_restores_exactly_also_on_error() -> None:
    model, x, labels, order = _setup()
    model.train()
    with torch.no_grad():
        before = model(x)
        mask = (torch.rand(12, 8) > 0.5).double()
        with ablate(model, "relu2", mask):
            inside = model(x)
        feats = model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x))))).flatten(1)
        torch.testing.assert_close(inside, model.fc(feats * mask), rtol=1e-12, atol=1e-12)
    ablation_curves(model, x, labels, order, layer="conv2", step=2, chunk=5)
    assert model.training and all(m.training for m in model.modules())  # eval inside, restored on exit
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError, match="boom"), ablate(model, "conv2", mask):
        raise RuntimeError("boom")
    with pytest.raises(UsageError, match="does not match"), torch.no_grad(), ablate(model, "conv2", mask[:3]):
        model(x)
    with pytest.raises(UsageError, match="tap"), ablate(model, "conv2", mask, tap="weights"):
        pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)


# ------------------------------------------------------------------------------------------------ (3) ties


def test_rank_order_sorts_descending_and_ties_go_to_the_lower_index() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0], [-1.0, -1.0, 2.0, -1.0, 5.0]])
    assert rank_order(scores).tolist() == [[1, 2, 4, 0, 3], [4, 2, 0, 1, 3]]
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(50, 64)).astype(np.float32)  # many ties
    assert np.array_equal(rank_order(torch.from_numpy(s)).numpy(), np.argsort(-s, axis=1, kind="stable"))


# ------------------------------------------------------------------------------------------------- (4) AUC


def test_ranking_auc_on_hand_curves() -> None:
    res = ranking_auc(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), n_filters=32, step=16)
    assert res["accuracy"].tolist() == [1.0, 0.5, 0.0] and res["normalised"].tolist() == [1.0, 0.5, 0.0]
    assert res["fractions"].tolist() == [0.0, 0.5, 1.0] and res["auc"] == pytest.approx(0.5, abs=1e-12)
    # normalised by the unablated accuracy: raw [.5, .5, 0] → [1, 1, 0], AUC .75
    res = ranking_auc(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), n_filters=32, step=16)
    assert res["normalised"].tolist() == [1.0, 1.0, 0.0] and res["auc"] == pytest.approx(0.75, abs=1e-12)
    # a partial last step: K = 40, step 16 → k = 0, 16, 32, 40, fractions 0, .4, .8, 1
    curves = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    res = ranking_auc(curves, n_filters=40, step=16)
    assert res["fractions"].tolist() == pytest.approx([0.0, 0.4, 0.8, 1.0], abs=1e-15)
    assert res["normalised"].tolist() == [1.0, 0.5, 0.25, 0.0]
    hand = 0.4 * (1 + 0.5) / 2 + 0.4 * (0.5 + 0.25) / 2 + 0.2 * (0.25 + 0) / 2  # = .475
    assert res["auc"] == pytest.approx(hand, abs=1e-12) and hand == pytest.approx(0.475)
    # uniform grid: the RISE formula (Σ s − s_0/2 − s_n/2)/n, and numpy's trapezoid
    curves = (torch.rand(200, 33, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    curves[:, 0] = 1.0
    res = ranking_auc(curves, n_filters=512)
    s = res["normalised"].numpy()
    assert res["auc"] == pytest.approx((s.sum() - s[0] / 2 - s[-1] / 2) / 32, abs=1e-12)
    assert res["auc"] == pytest.approx(np.trapezoid(s, res["fractions"].numpy()), abs=1e-12)
    with pytest.raises(UsageError):
        ranking_auc(torch.zeros(3, 3), n_filters=32, step=16)  # unablated accuracy 0
    with pytest.raises(UsageError):
        ranking_auc(curves, n_filters=40)


# ------------------------------------------------------------------------------------------------ (5) chunks


def test_chunking_does_not_change_the_curves() -> None:
    model, x, labels, order = _setup()
    one = ablation_curves(model, x, labels, order, layer="conv2", step=2, chunk=1)
    many = ablation_curves(model, x, labels, order, layer="conv2", step=2, chunk=1000)
    odd = ablation_curves(model, x, labels, order, layer="conv2", step=2, chunk=7)
    assert torch.equal(one, many) and torch.equal(odd, many)


# -------------------------------------------------------------------------- (6) one filter carries the class


def _evidence_model() -> nn.Sequential:
    """Every filter copies the input (A^k = x ≥ .5); class 1 = 3·mean(A^0) (+ .5 Σ_{k>0} mean(A^k)), class 0 = 1
    (+ the same shared term): correct (class 1) exactly while filter 0 is kept."""
    conv, fc = nn.Conv2d(1, 8, 1, bias=False), nn.Linear(8, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        fc.weight.fill_(0.5)
        fc.weight[:, 0] = torch.tensor([0.0, 3.0])
        fc.bias.copy_(torch.tensor([1.0, 0.0]))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).double()


def test_ranking_the_evidence_filter_first_drops_accuracy_at_step_one() -> None:
    model = _evidence_model()
    x = 0.5 + 0.5 * torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.ones(6, dtype=torch.long)
    first = torch.arange(8).expand(6, 8)
    last = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0]).expand(6, 8)
    c_first = ablation_curves(model, x, labels, first, layer="1", step=2)
    c_last = ablation_curves(model, x, labels, last, layer="1", step=2)
    assert c_first.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]] * 6  # k = 0, 2, 4, 6, 8
    assert c_last.tolist() == [[1.0, 1.0, 1.0, 1.0, 0.0]] * 6
    assert ranking_auc(c_first, 8, 2)["auc"] == pytest.approx(0.125)
    assert ranking_auc(c_last, 8, 2)["auc"] == pytest.approx(0.875)
    # Grad-AMap (eq 6.6) scores of the label rank filter 0 first: α_k = w^1_k · mean(A^k) / Z
    act, grad = activation_and_gradient(model, x.clone(), Target.of(labels, 6), "1")
    scores = gradamap_weights(act, grad).flatten(1)
    order = rank_order(scores)
    assert (order[:, 0] == 0).all()
    assert torch.equal(ablation_curves(model, x, labels, order, layer="1", step=2), c_first)
    # the random baseline (an independent permutation per image): correct while filter 0 is not among the first k
    rand = rank_order(torch.rand(6, 8, generator=torch.Generator().manual_seed(1)))
    pos0 = (rand == 0).int().argmax(1)  # rank of filter 0 per image
    assert len(set(pos0.tolist())) > 1
    want = (ablation_steps(8, 2)[None] <= pos0[:, None]).float()
    assert torch.equal(ablation_curves(model, x, labels, rand, layer="1", step=2), want)
