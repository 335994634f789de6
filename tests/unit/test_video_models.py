"""Video models (jfzhang95/pytorch-video-recognition ``network/C3D_model.py``, pytorch/vision
``torchvision/models/video``; Gupta & Ahmed §2.2): C3D names, CNN-LSTM heads, CAM identity, torchvision builders."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import xcore.explain as xe
from xcore.models import build_model
from xcore.models.video_nets import (
    C3D,
    CNNLSTM,
    Small3DCNN,
    build_c3d,
    build_cnn_lstm,
    build_cnn_lstm_attention,
    build_mc3_18,
    build_r2plus1d_18,
    build_r3d_18,
    build_small3d,
)

# jfzhang95/pytorch-video-recognition network/C3D_model.py: parameter names and shapes
C3D_REFERENCE = {
    "conv1": (64, 3), "conv2": (128, 64), "conv3a": (256, 128), "conv3b": (256, 256), "conv4a": (512, 256),
    "conv4b": (512, 512), "conv5a": (512, 512), "conv5b": (512, 512),
}


def hook_outputs(model: nn.Module, names: list[str]) -> tuple[dict[str, Any], list[Any]]:
    store: dict[str, Any] = {}
    handles = []
    for name in names:
        def save(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            store[name] = out
        handles.append(model.get_submodule(name).register_forward_hook(save))
    return store, handles


def run_hooked(model: nn.Module, x: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    """``model(x)`` without grad, with the outputs of the named submodules; the hooks are removed after."""
    store, handles = hook_outputs(model, names)
    try:
        with torch.no_grad():
            return model(x), store
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_c3d_reference_keys_shapes_and_head() -> None:
    model = build_c3d(7).eval()
    assert isinstance(model, C3D) and model.xcore_cam_layer == "conv5b"
    expected: dict[str, tuple[int, ...]] = {}
    for name, (cout, cin) in C3D_REFERENCE.items():
        expected[f"{name}.weight"] = (cout, cin, 3, 3, 3)
        expected[f"{name}.bias"] = (cout,)
    expected.update({"fc6.weight": (4096, 8192), "fc6.bias": (4096,), "fc7.weight": (4096, 4096),
                     "fc7.bias": (4096,), "fc8.weight": (7, 4096), "fc8.bias": (7,)})
    state = model.state_dict()
    assert list(state) == list(expected)  # same keys, same order as the reference
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert model.pool5.padding == (0, 1, 1) and model.pool1.kernel_size == (1, 2, 2)
    # a reference state dict loads strictly
    model.load_state_dict({k: torch.zeros(s) for k, s in expected.items()}, strict=True)
    model.load_state_dict(state, strict=True)

    x = torch.randn(1, 3, 16, 112, 112)
    store, handles = hook_outputs(model, ["conv5b", "pool5"])
    with torch.no_grad():
        out = model(x)
        again = model(x)
    for h in handles:
        h.remove()
    assert out.shape == (1, 7)
    assert store["conv5b"].shape == (1, 512, 2, 7, 7)
    assert store["pool5"].shape == (1, 512, 1, 4, 4)
    torch.testing.assert_close(out, again)  # eval: dropout off
    with torch.no_grad():
        flat = store["pool5"].reshape(-1, 8192)  # the reference's x.view(-1, 8192)
        head = model.fc8(torch.relu(model.fc7(torch.relu(model.fc6(flat)))))
    torch.testing.assert_close(out, head)


def test_c3d_rejects_other_clip_sizes() -> None:
    model = C3D(3, dropout=0.0).eval()
    assert model.dropout.p == 0.0
    with torch.no_grad(), pytest.raises(ValueError, match="16×112×112"):
        model(torch.randn(1, 3, 16, 56, 56))
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        model(torch.randn(3, 16, 112, 112))


def small_lstm(attention: bool) -> CNNLSTM:
    build = build_cnn_lstm_attention if attention else build_cnn_lstm
    model = build(5, hidden=16)
    assert isinstance(model, CNNLSTM) and model.xcore_cam_layer == "cnn.layer4"
    return model.eval()


def test_cnn_lstm_attention_is_weighted_sum_of_lstm_outputs() -> None:
    model = small_lstm(attention=True)
    x = torch.randn(2, 3, 5, 32, 32)
    out, store = run_hooked(model, x, ["lstm"])
    hs = store["lstm"][0]  # (B, T, hidden)
    a = model.last_attention
    assert a is not None and a.shape == (2, 5)
    assert (a > 0).all()
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2))
    with torch.no_grad():
        scores = hs @ model.attn.weight[0] + model.attn.bias[0]
        torch.testing.assert_close(a, torch.softmax(scores, dim=1))
        context = torch.stack([sum(a[b, t] * hs[b, t] for t in range(5)) for b in range(2)])
        torch.testing.assert_close(out, context @ model.fc.weight.T + model.fc.bias)
    assert out.shape == (2, 5)


def test_cnn_lstm_without_attention_uses_last_step() -> None:
    model = small_lstm(attention=False)
    assert model.attn is None
    x = torch.randn(2, 3, 4, 32, 32)
    out, store = run_hooked(model, x, ["lstm"])
    hs, (h_n, _) = store["lstm"]
    torch.testing.assert_close(hs[:, -1], h_n[0])
    with torch.no_grad():
        torch.testing.assert_close(out, model.fc(hs[:, -1]))
    assert model.last_attention is None
    # the last step really matters: a different first frame changes the output
    y = x.clone()
    y[:, :, 0] = torch.randn_like(y[:, :, 0])
    with torch.no_grad():
        assert not torch.allclose(model(y), out)


def test_cnn_lstm_frames_are_independent() -> None:
    model = small_lstm(attention=True)
    x = torch.randn(2, 3, 4, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        feats = model.frame_features(x)
        permuted = model.frame_features(x[:, :, perm])
        single = model.cnn(x[1, :, 3].unsqueeze(0))
    assert feats.shape == (2, 4, 512)
    torch.testing.assert_close(permuted, feats[:, perm])
    torch.testing.assert_close(single[0], feats[1, 3], rtol=1e-4, atol=1e-5)


def test_cnn_lstm_gradcam_is_per_frame() -> None:
    model = small_lstm(attention=True)
    x = torch.randn(2, 3, 3, 64, 64)
    cams = xe.run("gradcam", model, x, [1, 4], resize=False)
    assert cams.shape == (2 * 3, 2, 2)  # (B·T, h, w): frames folded into the batch
    assert (cams >= 0).all()
    # by hand: the gradient of clip b's score only reaches clip b's frames
    store, handles = hook_outputs(model, ["cnn.layer4"])
    out = model(x)
    for h in handles:
        h.remove()
    act = store["cnn.layer4"]
    (grad,) = torch.autograd.grad(out[0, 1] + out[1, 4], act)
    manual = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1).clamp(min=0)
    torch.testing.assert_close(cams, manual.detach(), rtol=1e-4, atol=1e-6)


def test_small3d_gradcam_equals_cam_over_z() -> None:
    model = build_small3d(4, width=4)
    assert isinstance(model, Small3DCNN) and model.xcore_cam_layer == "features.3"
    # non-trivial BatchNorm statistics, then eval
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 8, 32, 32) * 2 + 0.5)
    model.eval()
    x = torch.randn(2, 3, 8, 32, 32)
    targets = [1, 3]
    out, store = run_hooked(model, x, ["features.3"])
    act: Tensor = store["features.3"]
    assert act.shape == (2, 32, 2, 2, 2) and out.shape == (2, 4)
    z = act.shape[2] * act.shape[3] * act.shape[4]
    w = model.classifier.weight[targets]  # (B, K)
    cam = torch.einsum("bk,bkthw->bthw", w, act)
    expected = cam.clamp(min=0) / z
    got = xe.run("gradcam", model, x, targets, resize=False)
    assert got.shape == (2, 2, 2, 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert (expected > 0).any() and (cam < 0).any()  # the ReLU matters in this example


def test_small3d_shape_at_16x112() -> None:
    model = Small3DCNN(3).eval()
    store, handles = hook_outputs(model, ["features.3"])
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 112, 112))
    for h in handles:
        h.remove()
    assert out.shape == (1, 3) and store["features.3"].shape == (1, 128, 4, 7, 7)


@pytest.mark.parametrize(("build", "t_out"), [(build_r3d_18, 1), (build_mc3_18, 8), (build_r2plus1d_18, 1)])
def test_torchvision_video_builders(build: Any, t_out: int) -> None:
    model = build(6).eval()
    assert model.xcore_cam_layer == "layer4"
    x = torch.randn(2, 3, 8, 32, 32)
    out, store = run_hooked(model, x, ["layer4"])
    assert out.shape == (2, 6)
    assert store["layer4"].shape == (2, 512, t_out, 2, 2)
    # GAP + fc head: the logits are fc of the pooled layer4 activation
    with torch.no_grad():
        torch.testing.assert_close(out, model.fc(store["layer4"].mean(dim=(2, 3, 4))), rtol=1e-4, atol=1e-5)
    assert model.fc.out_features == 6


def test_video_models_carry_their_presets_input_bounds_for_lrp():
    """z^β bounds = the preset's normalised uint8 range: Kinetics (0 − mean)/std … (1 − mean)/std, C3D −mean …
    255 − mean."""
    from xcore.explain.lrp import input_bounds

    lo, hi = build_model("r3d_18", 3).xcore_input_bounds
    assert lo == pytest.approx([-0.43216 / 0.22803, -0.394666 / 0.22145, -0.37645 / 0.216989])
    assert hi == pytest.approx([(1 - 0.43216) / 0.22803, (1 - 0.394666) / 0.22145, (1 - 0.37645) / 0.216989])
    lo, hi = build_model("c3d", 3).xcore_input_bounds
    assert lo == pytest.approx([-90.0, -98.0, -102.0]) and hi == pytest.approx([165.0, 157.0, 153.0])
    low, high = input_bounds(build_model("small3d", 3), torch.zeros(1, 3, 4, 8, 8), None, None)
    assert low.flatten().tolist() == pytest.approx([-0.43216 / 0.22803, -0.394666 / 0.22145, -0.37645 / 0.216989])
    assert tuple(high.shape) == (1, 3, 1, 1, 1)
