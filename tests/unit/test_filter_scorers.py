"""Filter scores (thesis §6.2.1, eqs 6.1–6.6) against hand computations, exact identities and the CAM weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xcore.core.targets import Target
from xcore.errors import UnknownNameError, UsageError
from xcore.explain.gradamap_cam import gradamap_weights
from xcore.explain.gradcam import activation_and_gradient, pool_weights
from xcore.explain.gradcam_pp import gradcam_pp_weights
from xcore.explain.xgradcam import xgradcam_weights
from xcore.filters.scorers import SCORERS, score, score_many
from xcore.filters.tap import filter_pass

RTOL, ATOL = 1e-5, 1e-6
ALL = ("gradamap", "gradcam", "gradcam_pp", "xgradcam", "taylor", "taylor_class", "l1", "random")


class GapNet(nn.Module):
    """conv(2→3) → ReLU → GAP → linear(3→4): ``∂y^c/∂A_k,ij = w_ck / Z`` at the ReLU output."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


class TwoConv(nn.Module):
    """Two convs before GAP, so the first block's gradient is not a constant per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3)))


def gapnet(inplace: bool = False) -> GapNet:
    torch.manual_seed(0)
    return GapNet(inplace).double()


def twoconv() -> TwoConv:
    torch.manual_seed(1)
    return TwoConv().double()


def batch(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def by_hand(model: GapNet, x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pre-ReLU map, A (post-ReLU), logits, W, b of the GAP net in numpy, without any hook."""
    with torch.no_grad():
        pre = F.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
    pre_np = pre.numpy()
    A = np.maximum(pre_np, 0.0)
    W, b = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    return pre_np, A, A.mean(axis=(2, 3)) @ W.T + b, W, b


def close(actual: Tensor, expected: np.ndarray | Tensor) -> None:
    assert actual.dtype == torch.float32
    np.testing.assert_allclose(actual.numpy(), np.asarray(expected, dtype=np.float64), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------------ 1. hand values


def test_every_scorer_equals_a_hand_computation_on_a_gap_net() -> None:
    model, x = gapnet(), batch((5, 2, 4, 5))
    _, A, out, W, b = by_hand(model, x)
    Z = 20
    labels = torch.tensor([3, 0, 1, 1, 2])
    seeds = [11, 12, 13, 14, 15]
    got, p = score_many({n: ({"seeds": seeds} if n == "random" else {}) for n in ALL}, model, x, labels=labels,
                        layer="relu")
    c = out.argmax(axis=1)  # no targets: the predicted class
    np.testing.assert_array_equal(p.classes.numpy(), c)
    np.testing.assert_allclose(p.act.numpy(), A, rtol=1e-12, atol=1e-12)
    g = W[c] / Z  # (B, K): ∂y^c/∂A_k,ij is constant over positions
    S, mean = A.sum(axis=(2, 3)), A.mean(axis=(2, 3))
    close(got["gradcam"], g)
    close(got["gradamap"], g * mean)
    close(got["taylor_class"], np.abs(g * mean))
    pp = np.where(g != 0, Z * np.maximum(g, 0) * g**2 / (2 * g**2 + S * g**3 + 1e-6), 0.0)
    close(got["gradcam_pp"], pp)
    close(got["xgradcam"], g * S / (S + 1e-7))
    close(got["l1"], np.abs(A).sum(axis=(2, 3)))
    # taylor: the loss gradient of an independent graph built on A itself
    leaf = torch.from_numpy(A).requires_grad_(True)
    logits = leaf.mean(dim=(2, 3)) @ torch.from_numpy(W).T + torch.from_numpy(b)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (gO,) = torch.autograd.grad(loss, leaf)
    close(got["taylor"], (gO * leaf).mean(dim=(2, 3)).abs().detach().numpy())
    prob = np.exp(out - out.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    dO = prob - np.eye(4)[labels.numpy()]  # ∂O/∂y for the summed cross-entropy
    close(got["taylor"], np.abs((dO @ W) / Z * mean))
    rand = np.stack([torch.rand(3, generator=torch.Generator().manual_seed(s)).numpy() for s in seeds])
    np.testing.assert_array_equal(got["random"].numpy(), rand)
    assert got["random"].dtype == torch.float32 and ((rand >= 0) & (rand < 1)).all()
    assert not np.array_equal(rand[0], rand[1])


def test_explicit_and_function_targets() -> None:
    model, x = gapnet(), batch((3, 2, 4, 5), seed=1)
    _, A, _, W, _ = by_hand(model, x)
    got, p = score_many({"gradcam": {}, "gradamap": {}}, model, x, [2, 0, 3], layer="relu")
    np.testing.assert_array_equal(p.classes.numpy(), [2, 0, 3])
    close(got["gradcam"], W[[2, 0, 3]] / 20)
    close(got["gradamap"], W[[2, 0, 3]] / 20 * A.mean(axis=(2, 3)))
    got, p = score_many({"gradcam": {}}, model, x, lambda out: out[:, 0] - out[:, 1], layer="relu")
    np.testing.assert_array_equal(p.classes.numpy(), [-1, -1, -1])
    close(got["gradcam"], np.broadcast_to((W[0] - W[1]) / 20, (3, 3)))


# ------------------------------------------------------------------------------------------ 2. GAP + linear identity


@pytest.mark.parametrize("targets", [None, [0] * 5, [1] * 5, [2] * 5, [3] * 5, [3, 1, 0, 2, 1]])
def test_gradamap_sums_to_the_logit_minus_bias_over_z(targets: list[int] | None) -> None:
    model, x = gapnet(), batch((5, 2, 4, 5), seed=2)
    _, _, out, _, b = by_hand(model, x)
    got = score("gradamap", model, x, targets, layer="relu")
    c = out.argmax(axis=1) if targets is None else np.array(targets)
    yc = out[np.arange(5), c]
    np.testing.assert_allclose(got.double().sum(dim=1).numpy(), (yc - b[c]) / 20, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------- 3. equal to the CAM channel weights


@pytest.mark.parametrize(("targets", "softmax"), [(None, False), ([2, 0, 1], False), ([1, 1, 2], True)])
def test_cam_scorers_equal_the_cam_weights_on_an_inner_layer(targets: list[int] | None, softmax: bool) -> None:
    model, x = twoconv(), batch((3, 3, 8, 8), seed=3)
    target = Target.of(targets, 3)
    act, grad = activation_and_gradient(model, x, target, "relu1", softmax)
    assert grad.std() > 0 and not torch.allclose(grad[:, :, :1, :1], grad)  # g varies over positions
    names = {"gradcam": {}, "gradamap": {}, "gradcam_pp": {}, "xgradcam": {}}
    got, p = score_many(names, model, x, targets, layer="relu1", softmax=softmax)
    np.testing.assert_allclose(p.grad.numpy(), grad.numpy(), rtol=1e-12, atol=1e-15)
    close(got["gradcam"], pool_weights(grad, "global").reshape(3, 4))
    close(got["gradamap"], gradamap_weights(act, grad).reshape(3, 4))
    close(got["gradcam_pp"], gradcam_pp_weights(act, grad).reshape(3, 4))
    close(got["xgradcam"], xgradcam_weights(act, grad).reshape(3, 4))
    official = score("gradcam_pp", model, x, targets, layer="relu1", variant="official", softmax=softmax)
    close(official, gradcam_pp_weights(act, grad, "official").reshape(3, 4))
    assert not torch.allclose(official, got["gradcam_pp"])


# ------------------------------------------------------------------------------------------- 4. batch independence


def test_scores_of_a_batch_equal_the_per_sample_scores() -> None:
    model, x = twoconv(), batch((5, 3, 8, 8), seed=4)
    labels, seeds = torch.tensor([0, 2, 1, 1, 0]), [7, 8, 9, 10, 11]
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    whole, _ = score_many({n: ({"seeds": seeds} if n == "random" else {}) for n in ALL}, model, x,
                          layer="relu1", labels=labels)
    assert len(calls) == 1  # one forward for every scorer
    parts = [score_many({n: ({"seeds": seeds[i : i + 1]} if n == "random" else {}) for n in ALL}, model,
                        x[i : i + 1], layer="relu1", labels=labels[i : i + 1])[0] for i in range(5)]
    handle.remove()
    for n in ALL:
        assert whole[n].shape == (5, 4)
        np.testing.assert_allclose(whole[n].numpy(), torch.cat([q[n] for q in parts]).numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(whole["random"].numpy(), torch.cat([q["random"] for q in parts]).numpy())
    assert whole["taylor"].abs().sum() > 0


def test_only_the_needed_gradients_are_computed() -> None:
    model, x = gapnet(), batch((2, 2, 4, 5))
    _, p = score_many({"l1": {}, "random": {"seeds": [1, 2]}}, model, x, layer="relu")
    assert p.grad is None and p.loss_grad is None
    _, p = score_many({"taylor": {}}, model, x, layer="relu", labels=[0, 1])
    assert p.grad is None and p.loss_grad is not None
    _, p = score_many({"gradcam": {}, "taylor": {}}, model, x, layer="relu", labels=[0, 1])
    assert p.grad is not None and p.loss_grad is not None
    # and they are the right gradients: on the GAP net ∂y^c/∂A_ij = w_c / Z, ∂O/∂A_ij = Σ_j (p_j − 1[j = y]) w_j / Z
    _pre, _A, logits, W, _b = by_hand(model, x)
    z = x.shape[2] * x.shape[3]
    c = p.classes.numpy()
    np.testing.assert_allclose(p.grad.numpy(), np.broadcast_to((W[c] / z)[:, :, None, None], p.grad.shape),
                               rtol=1e-12, atol=1e-15)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    prob[[0, 1], [0, 1]] -= 1
    np.testing.assert_allclose(p.loss_grad.numpy(), np.broadcast_to((prob @ W / z)[:, :, None, None],
                                                                     p.loss_grad.shape), rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------------------------------------------ 5. taps


@pytest.mark.parametrize("inplace", [False, True])
def test_input_tap_on_the_relu_is_the_pre_relu_map(inplace: bool) -> None:
    model, x = gapnet(inplace), batch((4, 2, 4, 5), seed=5)
    pre, A, out, W, _ = by_hand(model, x)
    assert (pre < 0).any()
    p = filter_pass(model, x, layer="relu", tap="input")
    np.testing.assert_allclose(p.act.numpy(), pre, rtol=1e-12, atol=1e-12)
    # the conv's own output, even when an in-place ReLU follows it
    np.testing.assert_allclose(filter_pass(model, x, layer="conv").act.numpy(), pre, rtol=1e-12, atol=1e-12)
    l1_in, l1_out = score("l1", model, x, layer="relu", tap="input"), score("l1", model, x, layer="relu")
    close(l1_in, np.abs(pre).sum(axis=(2, 3)))
    close(l1_out, A.sum(axis=(2, 3)))
    assert (l1_in > l1_out).any()
    c = out.argmax(axis=1)
    # ∂y/∂pre = (w_ck / Z)·[pre > 0]: Grad-CAM sees the active fraction, Grad-AMap is the same at both taps
    close(score("gradcam", model, x, layer="relu", tap="input"), W[c] / 20 * (pre > 0).mean(axis=(2, 3)))
    close(score("gradamap", model, x, layer="relu", tap="input"), W[c] / 20 * A.mean(axis=(2, 3)))


# --------------------------------------------------------------------------------------------------- 6. softmax


def test_softmax_option_differentiates_the_probability() -> None:
    model, x = gapnet(), batch((5, 2, 4, 5), seed=6)
    _, A, out, W, _ = by_hand(model, x)
    targets = [0, 1, 2, 3, 0]
    prob = np.exp(out - out.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    c = np.array(targets)
    pc = prob[np.arange(5), c][:, None]
    dp = pc * (np.eye(4)[c] - prob)  # ∂p_c/∂y_j
    g = dp @ W / 20
    close(score("gradamap", model, x, targets, layer="relu", softmax=True), g * A.mean(axis=(2, 3)))
    got, _ = score_many({"gradcam": {}, "taylor_class": {}}, model, x, targets, layer="relu", softmax=True)
    close(got["gradcam"], g)
    close(got["taylor_class"], np.abs(g * A.mean(axis=(2, 3))))


# ---------------------------------------------------------------------------------------------------- 7. errors


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda m, x: score("nope", m, x, layer="relu"), UnknownNameError, "nope"),
    (lambda m, x: score("gradamap", m, x, layer="relu", tap="middle"), UsageError, "tap"),
    (lambda m, x: score("taylor", m, x, layer="relu"), UsageError, "labels"),
    (lambda m, x: score("random", m, x, layer="relu"), UsageError, "seeds"),
    (lambda m, x: score("random", m, x, layer="relu", seeds=[1]), UsageError, "seeds"),
    (lambda m, x: score("gradcam", m, x, layer="relu", foo=1), UsageError, "foo"),
    (lambda m, x: score("l1", m, x, layer="relu", softmax=True), UsageError, "softmax"),
    (lambda m, x: score("l1", m, x, layer="fc"), UsageError, "spatial"),
    (lambda m, x: score("l1", m, x, layer="nolayer"), UsageError, "nolayer"),
    (lambda m, x: score("gradcam", m, x, [0, 1, 2], layer="relu"), UsageError, "targets"),
    (lambda m, x: score_many({"gradamap": {"softmax": True}}, m, x, layer="relu"), UsageError, "softmax"),
    (lambda m, x: score("taylor", m, x, layer="relu", labels=[0]), UsageError, "labels"),
    (lambda m, x: score("taylor", m, x, layer="relu", labels=[0, 9]), UsageError, "labels"),
])
def test_bad_input_raises_one_line(call, error: type[Exception], words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        call(gapnet(), batch((2, 2, 4, 5)))
    assert "\n" not in str(info.value) and words in str(info.value)


def test_registry_lists_the_eight_scorers_and_their_parameters() -> None:
    assert SCORERS.names() == sorted(ALL)
    assert SCORERS.get("gradcam_pp").defaults == {"variant": "paper"}
    assert SCORERS.get("random").defaults == {"seeds": None}
    assert {n: SCORERS.get(n).needs for n in ALL} == {
        "gradamap": "grad", "gradcam": "grad", "gradcam_pp": "grad", "xgradcam": "grad", "taylor_class": "grad",
        "taylor": "loss_grad", "l1": "act", "random": "act"}


# ------------------------------------------------------------------------------------------ 8. model state restored


def test_model_mode_flags_and_hooks_are_restored() -> None:
    model, x = gapnet(), batch((2, 2, 4, 5))
    model.train()
    model.conv.bias.requires_grad_(False)
    flags = {n: q.requires_grad for n, q in model.named_parameters()}
    score("taylor", model, x, layer="relu", labels=[0, 1])
    score("gradamap", model, x, layer="relu", tap="input")
    with pytest.raises(UsageError):
        score("l1", model, x, layer="fc")  # raised inside the pass
    assert all(m.training for m in model.modules())
    assert {n: q.requires_grad for n, q in model.named_parameters()} == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(q.grad is None for q in model.parameters())
