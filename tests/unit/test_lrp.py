"""Deep Taylor / LRP: each rule against an independent matrix-form re-derivation (Linear, Conv3d), the pool and
sum rules by hand, conservation on bias-free nets and through an unfoldable BatchNorm, pass-through at every
activation, and equality with zennit on seeded VGG-16 / ResNet-18 and a Conv3d net with and without a BatchNorm
that cannot be folded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
import zennit.composites as zc
import zennit.types
from torch import Tensor, nn
from zennit.attribution import Gradient
from zennit.rules import AlphaBeta, ZBox
from zennit.torchvision import ResNetCanonizer
from zennit.types import Convolution, Linear

import xcore.explain as E
from xcore.core.targets import Target
from xcore.errors import UsageError
from xcore.explain.lrp import alpha_beta, lrp_rules, proportional, relevance, z_box
from xcore.models.fold import folded


def dense(module: nn.Module, in_shape: tuple[int, ...]) -> Tensor:
    """The layer's weight as a matrix W (out_flat, in_flat): f(x) = W x + b, from its response to unit inputs."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n).reshape(n, *in_shape)
    with torch.no_grad():
        out = module(basis) - (module(torch.zeros(1, *in_shape)) if module.bias is not None else 0)
    return out.reshape(n, -1).T


def matrix_alpha_beta(w: Tensor, b: Tensor, x: Tensor, r: Tensor, alpha: float, beta: float) -> Tensor:
    """R_i = Σ_j (α z⁺_ij / (Σ_i z⁺_ij + b⁺_j) − β z⁻_ij / (Σ_i z⁻_ij + b⁻_j)) R_j with z_ij = x_i w_ji."""
    z = x[None, :] * w  # (out j, in i)
    zp, zn = z.clamp(min=0), z.clamp(max=0)
    dp = zp.sum(1) + b.clamp(min=0)
    dn = zn.sum(1) + b.clamp(max=0)
    fp = torch.where(dp != 0, r / dp, torch.zeros_like(r))
    fn = torch.where(dn != 0, r / dn, torch.zeros_like(r))
    return alpha * (zp * fp[:, None]).sum(0) - beta * (zn * fn[:, None]).sum(0)


def matrix_z_box(w: Tensor, x: Tensor, lo: Tensor, hi: Tensor, r: Tensor) -> Tensor:
    """R_i = Σ_j (x_i w_ji − l_i w⁺_ji − h_i w⁻_ji) / Σ_i' (…) R_j."""
    z = x[None, :] * w - lo[None, :] * w.clamp(min=0) - hi[None, :] * w.clamp(max=0)
    return (z * (r / z.sum(1))[:, None]).sum(0)


LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (7,)),
    "conv3d": (lambda: nn.Conv3d(2, 3, kernel_size=(2, 3, 3), padding=(0, 1, 1), stride=(1, 2, 1)), (2, 3, 4, 5)),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize(("alpha", "beta", "bias"), [(1.0, 0.0, False), (2.0, 1.0, True), (1.0, 0.0, True)])
def test_alpha_beta_equals_matrix_form(kind: str, alpha: float, beta: float, bias: bool) -> None:
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    layer = make()
    x = torch.randn(1, *shape)  # signed input: the x⁻ terms are exercised too
    with torch.no_grad():
        out = layer(x)
    r = torch.rand_like(out)
    got = alpha_beta(alpha, beta, bias)(layer, x, r)
    w = dense(layer, shape)
    b = (layer.bias.detach() if bias else torch.zeros(layer.out_channels if kind == "conv3d" else 5))
    if kind == "conv3d":
        b = b.repeat_interleave(out[0, 0].numel())
    want = matrix_alpha_beta(w, b, x.flatten(), r.flatten(), alpha, beta)
    torch.testing.assert_close(got.flatten(), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_z_box_equals_matrix_form_with_channel_bounds(kind: str) -> None:
    torch.manual_seed(1)
    make, shape = LAYERS[kind]
    layer = make()
    lo_c = -torch.rand(shape[0]) - 1.0
    hi_c = torch.rand(shape[0]) + 1.0
    view = (1, -1) + (1,) * (len(shape) - 1)
    lo, hi = lo_c.reshape(view), hi_c.reshape(view)
    x = lo + (hi - lo) * torch.rand(1, *shape)
    with torch.no_grad():
        r = torch.rand_like(layer(x))
    got = z_box(lo, hi)(layer, x, r)
    want = matrix_z_box(dense(layer, shape), x.flatten(), lo.expand_as(x).flatten(), hi.expand_as(x).flatten(),
                        r.flatten())
    torch.testing.assert_close(got.flatten(), want, rtol=1e-4, atol=1e-6)
    assert got.sum().item() == pytest.approx(r.sum().item(), rel=1e-4)  # the z^β rule conserves


def test_pool_rules_by_hand() -> None:
    """x = [1, 3] → pool → w = 1: avg-pool proportional [1/4, 3/4], uniform [1/2, 1/2]; max-pool winner [0, 1]."""
    x = torch.tensor([[[1.0, 3.0]]])
    for pool, avgpool, want in [(nn.AvgPool1d(2), "proportional", [0.25, 0.75]),
                                (nn.AvgPool1d(2), "uniform", [0.5, 0.5]),
                                (nn.MaxPool1d(2), "proportional", [0.0, 1.0])]:
        head = nn.Linear(1, 1, bias=False)
        head.weight.data.fill_(1.0)
        net = nn.Sequential(pool, nn.Flatten(), head)
        r = relevance(net, x, Target.of([0], 1), first="alpha_beta", avgpool=avgpool)
        assert r.flatten().tolist() == pytest.approx(want)
    assert proportional(nn.AvgPool1d(2), x, torch.tensor([[[2.0]]])).flatten().tolist() == pytest.approx([0.5, 1.5])


class Residual(nn.Module):
    """conv → ReLU → (conv → ReLU) + skip, in place as in torchvision → GAP → linear; no biases."""

    def __init__(self, conv: type[nn.Module] = nn.Conv2d) -> None:
        super().__init__()
        self.stem = conv(3, 4, 3, padding=1, bias=False)
        self.branch = conv(4, 4, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1) if conv is nn.Conv2d else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.relu(self.stem(x))
        out = torch.relu(self.branch(a))
        out += a
        return self.fc(self.pool(out).flatten(1))


@pytest.mark.parametrize("conv", [nn.Conv2d, nn.Conv3d])
def test_residual_sum_is_proportional_and_relevance_is_conserved(conv: type[nn.Module]) -> None:
    """Bias-free ReLU net with a residual sum: α1β0 + z^β conserve relevance, Σ R = 1 per sample (one-hot init);
    a gradient-style split of the sum would double the skip's share and break the identity."""
    torch.manual_seed(2)
    net = Residual(conv).eval()
    with torch.no_grad():  # positive weights so every explained logit has positive z⁺
        net.fc.weight.abs_()
    x = torch.randn(3, 3, *([4] * (3 if conv is nn.Conv3d else 2)))
    maps = E.run("lrp", net, x, [0, 1, 2], low=-5.0, high=5.0, resize=False)
    assert maps.flatten(1).sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0], rel=1e-5)
    score = E.run("lrp", net, x, [0, 1, 2], low=-5.0, high=5.0, init="score", resize=False)
    with torch.no_grad():
        logits = net(x)[torch.arange(3), torch.tensor([0, 1, 2])]
    torch.testing.assert_close(score.flatten(1).sum(1), logits, rtol=1e-5, atol=1e-6)


def test_rule_parameters_are_checked() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(1, 1, 4)
    with pytest.raises(UsageError):
        E.run("lrp", net, x, alpha=2.0, beta=0.0)
    with pytest.raises(UsageError):
        E.run("lrp", net, x, avgpool="median")


# ---- zennit as the peer ------------------------------------------------------------------------------------------

def _randomise_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _zennit(model: nn.Module, x: Tensor, classes: list[int], lo: Tensor, hi: Tensor, alpha: float, beta: float,
            bias: bool, canonizers: list) -> Tensor:
    """zennit's αβ / z^β with its base layer map: ``Pass`` for activations and BatchNorm, ``Norm`` for sums and
    average pools (``zennit.composites.layer_map_base``); max pools keep their gradient."""

    def stab(z: Tensor) -> Tensor:  # zero denominators give zero relevance, as in our engine
        return z.masked_fill(z == 0, float("inf"))

    zero = None if bias else "bias"
    composite = zc.SpecialFirstLayerMapComposite(
        layer_map=[(Convolution, AlphaBeta(alpha, beta, stabilizer=stab, zero_params=zero)),
                   (Linear, AlphaBeta(alpha, beta, stabilizer=stab, zero_params=zero)),
                   *zc.layer_map_base(stab)],
        first_map=[(Convolution, ZBox(lo, hi, stabilizer=stab))], canonizers=canonizers)
    n = model(x).shape[1]
    with Gradient(model, composite) as attr:
        _, rel = attr(x, torch.eye(n)[classes])
    return rel


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
@pytest.mark.parametrize(("alpha", "beta", "bias"), [(1.0, 0.0, False), (2.0, 1.0, True)])
def test_lrp_equals_zennit_on_torchvision(arch: str, alpha: float, beta: float, bias: bool) -> None:
    torch.manual_seed(3)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    _randomise_batchnorm(model)
    x = torch.randn(2, 3, 64, 64)
    lo, hi = -torch.full((1, 3, 1, 1), 2.2), torch.full((1, 3, 1, 1), 2.7)
    ours = relevance(model, x, Target.of([1, 7], 2), alpha=alpha, beta=beta, bias=bias, low=-2.2, high=2.7)
    canon = [ResNetCanonizer()] if arch == "resnet18" else []
    peer = _zennit(model, x, [1, 7], lo, hi, alpha, beta, bias, canon)
    scale = peer.abs().max()
    assert (ours - peer).abs().max() <= 1e-4 * scale
    assert not any(isinstance(m, nn.BatchNorm2d) and m.training for m in model.modules())


def _c3d(batchnorm: bool) -> nn.Sequential:
    """A C3D-shaped net (Conv3d, ReLU, MaxPool3d, linear head) with biases; with ``batchnorm``, a BatchNorm3d
    after the first pool, which no conv precedes, so it cannot be folded and shifts dead units off 0."""
    torch.manual_seed(4)
    norm = [nn.BatchNorm3d(4)] if batchnorm else []
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)), *norm,
                        nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                        nn.Flatten(), nn.Linear(6 * 2 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    _randomise_batchnorm(net)
    return net


@pytest.mark.parametrize("batchnorm", [False, True])
def test_lrp_equals_zennit_on_conv3d(batchnorm: bool) -> None:
    """Signed input; with the unfoldable BatchNorm the relevance its shift gives dead units must pass back through
    the pool and the ReLU (zennit's ``Pass``), not be dropped by the ReLU's gradient (which was off by
    10–13 % of the map's peak; now ≤ 2e-7)."""
    net = _c3d(batchnorm)
    assert any(isinstance(m, nn.BatchNorm3d) for m in folded(net).modules()) == batchnorm
    x = torch.randn(2, 3, 4, 8, 8)
    lo, hi = -torch.full((1, 3, 1, 1, 1), 3.0), torch.full((1, 3, 1, 1, 1), 3.0)
    for alpha, beta, bias in [(1.0, 0.0, False), (2.0, 1.0, False), (2.0, 1.0, True)]:
        ours = relevance(net, x, Target.of([0, 3], 2), alpha=alpha, beta=beta, bias=bias, low=-3.0, high=3.0)
        peer = _zennit(net, x, [0, 3], lo, hi, alpha, beta, bias, [])
        torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-6 * float(peer.abs().max()))


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (2.0, 1.0)])
def test_relevance_is_conserved_through_an_unfolded_batchnorm(alpha: float, beta: float) -> None:
    """Bias ignored, α − β = 1: every conv / linear step gives Σ_i R_i = (α − β) R_j = R_j (no denominator is 0
    here), the z^β first layer, the max pools (winner takes all), the BatchNorm and the ReLUs (pass-through)
    conserve, so Σ R = 1 (one-hot) or Σ R = y_c (``init="score"``) although the net has biases and a BatchNorm
    shift. Dropping the relevance of dead units gave 0.971 / 0.965 (α1β0) and 1.008 / 0.970 (α2β1)."""
    net, classes = _c3d(batchnorm=True), [0, 3]
    x = torch.randn(2, 3, 4, 8, 8)
    params = {"alpha": alpha, "beta": beta, "bias": False, "low": -3.0, "high": 3.0}
    onehot = relevance(net, x, Target.of(classes, 2), **params)
    torch.testing.assert_close(onehot.flatten(1).sum(1), torch.ones(2), rtol=1e-5, atol=1e-6)
    score = relevance(net, x, Target.of(classes, 2), init="score", **params)
    with torch.no_grad():
        logits = net(x)[torch.arange(2), torch.tensor(classes)]
    torch.testing.assert_close(score.flatten(1).sum(1), logits, rtol=1e-5, atol=1e-6)


def _activation_modules() -> list[nn.Module]:
    """One instance of every element-wise activation module zennit passes relevance through."""
    args: dict[type, tuple] = {nn.PReLU: (4,), nn.Threshold: (0.5, -1.0)}
    kinds = [k for k in zennit.types.Activation.__subclass__ if k is not nn.MultiheadAttention]
    return [k(*args.get(k, ())) for k in kinds]


@pytest.mark.parametrize("act", _activation_modules(), ids=lambda m: type(m).__name__)
def test_every_activation_module_passes_relevance_through(act: nn.Module) -> None:
    """Inside the LRP rules the backward of an activation is the identity: R_in = R_out, whatever its gradient."""
    a = torch.linspace(-3.0, 3.0, 24).reshape(1, 4, 6).requires_grad_(True)
    r = torch.arange(1.0, 25.0).reshape(1, 4, 6)
    with lrp_rules(act, alpha_beta(), alpha_beta(), None):
        out = act(a.clone())
    (got,) = torch.autograd.grad(out, a, r)
    assert torch.equal(got, r)


@pytest.mark.parametrize("call", ["torch.relu", "Tensor.relu_", "F.relu(inplace)", "F.leaky_relu", "torch.tanh"])
def test_functional_activations_pass_relevance_through(call: str) -> None:
    """The functional and in-place forms too (an in-place form still modifies its input, as outside the rules)."""
    fns = {"torch.relu": torch.relu, "Tensor.relu_": Tensor.relu_,
           "F.relu(inplace)": lambda t: F.relu(t, inplace=True), "F.leaky_relu": F.leaky_relu,
           "torch.tanh": torch.tanh}
    a = torch.linspace(-3.0, 3.0, 12).requires_grad_(True)
    r = torch.arange(1.0, 13.0)
    with lrp_rules(nn.Identity(), alpha_beta(), alpha_beta(), None):
        pre = a * 1.0
        out = fns[call](pre)
    want = fns[call](a.detach().clone())
    assert torch.equal(out.detach(), want)
    if call in ("Tensor.relu_", "F.relu(inplace)"):
        assert out is pre
    (got,) = torch.autograd.grad(out, a, r)
    assert torch.equal(got, r)
