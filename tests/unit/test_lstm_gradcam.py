"""Per-frame Grad-CAM on CNN-LSTMs (Gupta & Ahmed, ADL 2020 Project-III report, §2.2): maps equal a by-hand
autograd computation on each frame's activation, attention = ``last_attention``, a frame cut from the output gets a
zero map, the mass fallback, and the scoped cuDNN switch."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import xcore.explain as E
from xcore.core.context import model_state, rnn_without_cudnn
from xcore.errors import UsageError
from xcore.explain.lstm_gradcam import frame_mass
from xcore.models.video_nets import CNNLSTM, Small3DCNN

B, T, S = 2, 3, 64  # 64² frames -> 2×2 at cnn.layer4


def cnn_lstm(attention: bool, seed: int = 0) -> CNNLSTM:
    torch.manual_seed(seed)
    return CNNLSTM(4, hidden=8, attention=attention).eval()


def by_hand(model: CNNLSTM, x: Tensor, classes: list[int], relu: bool) -> Tensor:
    """Grad-CAM of each frame from its own layer4 activation made an autograd leaf, rebuilding the model's
    forward (ResNet trunk -> GAP -> LSTM -> [attention] -> fc) from its parts; (B, T, h, w)."""
    cnn = model.cnn
    with torch.no_grad():
        frames = [x[b, :, t][None] for b in range(B) for t in range(T)]
        acts = []
        for f in frames:
            a = cnn.maxpool(cnn.relu(cnn.bn1(cnn.conv1(f))))
            acts.append(cnn.layer4(cnn.layer3(cnn.layer2(cnn.layer1(a))))[0])
    leaves = [a.clone().requires_grad_(True) for a in acts]
    feats = torch.stack([a.mean(dim=(1, 2)) for a in leaves]).reshape(B, T, -1)
    out, _ = model.lstm(feats)
    if model.attn is None:
        y = model.fc(out[:, -1])
    else:
        w = torch.softmax(model.attn(out).squeeze(-1), dim=1)
        y = model.fc((w[..., None] * out).sum(1))
    grads = torch.autograd.grad(y[range(B), classes].sum(), leaves)
    maps = []
    for a, g in zip(acts, grads, strict=True):
        alpha = g.mean(dim=(1, 2))  # α^{(t)}_k
        m = (alpha[:, None, None] * a).sum(0)
        maps.append(m.clamp(min=0) if relu else m)
    return torch.stack(maps).reshape(B, T, *maps[0].shape)


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_per_frame_maps_equal_hand_computation(attention: bool, relu: bool) -> None:
    model, x = cnn_lstm(attention), torch.randn(B, 3, T, S, S)
    got = E.run("lstm_gradcam", model, x, [1, 3], resize=False, relu=relu)
    want = by_hand(model, x, [1, 3], relu)
    assert got.shape == (B, T, 2, 2)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6 * want.abs().max())
    assert want.abs().sum() > 0


def test_attention_is_the_frame_relevance_and_maps_resize_per_frame() -> None:
    model, x = cnn_lstm(True), torch.randn(B, 3, T, S, S)
    e = E.run("lstm_gradcam", model, x, parts=True)
    with torch.no_grad():
        model(x)
    assert torch.allclose(e.extras["frame_relevance"], model.last_attention)
    assert torch.allclose(e.extras["frame_relevance"].sum(1), torch.ones(B))
    native = E.run("lstm_gradcam", model, x, resize=False)
    assert e.maps["map"].shape == (B, T, S, S)
    for t in range(T):  # T is kept: frame t's map is frame t's native map upsampled bilinearly
        up = nn.functional.interpolate(native[:, t][:, None], size=(S, S), mode="bilinear", align_corners=False)
        assert torch.allclose(e.maps["map"][:, t], up[:, 0], atol=1e-6)
    assert E.METHODS.get("lstm_gradcam").extras == ("frame_relevance",)


def test_frame_cut_from_the_output_gets_zero_map_and_mass_fallback() -> None:
    """Last-hidden-state model with W_hh = 0 and the forget gate shut (f = σ(−1e4) = 0): h_T sees frame T only."""
    model = cnn_lstm(False, seed=1)
    hid = model.lstm.hidden_size
    with torch.no_grad():
        model.lstm.weight_hh_l0.zero_()
        model.lstm.bias_ih_l0[hid : 2 * hid] = -1e4  # gate order i, f, g, o
    x = torch.randn(B, 3, T, S, S)
    raw = E.run("lstm_gradcam", model, x, resize=False, relu=False)
    assert torch.equal(raw[:, :-1], torch.zeros_like(raw[:, :-1]))
    assert (raw[:, -1].abs().flatten(1).sum(1) > 0).all()
    e = E.run("lstm_gradcam", model, x, [0, 0], parts=True, resize=False)
    mass = e.maps["map"].flatten(2).sum(2)
    want = torch.where(mass.sum(1, keepdim=True) > 0, mass / mass.sum(1, keepdim=True).clamp(min=1e-30), 0.0)
    assert torch.allclose(e.extras["frame_relevance"], want)
    assert torch.equal(e.extras["frame_relevance"][:, :-1], torch.zeros(B, T - 1))


def test_frame_mass_by_hand() -> None:
    cams = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]], [[0.0, 4.0]]], [[[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])
    assert torch.equal(frame_mass(cams), torch.tensor([[0.25, 0.25, 0.5], [0.0, 0.0, 0.0]]))


def test_cudnn_flag_restored_and_hooks_removed() -> None:
    model = cnn_lstm(False)
    before = torch.backends.cudnn.enabled
    with pytest.raises(RuntimeError), rnn_without_cudnn(model):
        model.lstm(torch.randn(1, 2, 3))  # wrong feature size: the forward raises inside the scope
    assert torch.backends.cudnn.enabled == before
    assert not model.lstm._forward_pre_hooks and not model.lstm._forward_hooks
    seen: list[int] = []  # every explanation method runs under model_state, which scopes the hooks to its block
    with model_state(model):
        seen.append(len(model.lstm._forward_pre_hooks))
    assert seen == [1] and not model.lstm._forward_pre_hooks and torch.backends.cudnn.enabled == before


def test_unfolded_layer_or_images_raise_usage_error() -> None:
    torch.manual_seed(0)
    with pytest.raises(UsageError, match="folded"):
        E.run("lstm_gradcam", Small3DCNN(3, width=2).eval(), torch.randn(1, 3, 8, 16, 16))
    with pytest.raises(UsageError, match="clips"):
        E.run("lstm_gradcam", cnn_lstm(False), torch.randn(1, 3, S, S))
