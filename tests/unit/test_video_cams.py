"""3-D CAMs (Gupta & Ahmed §2.1; thesis §2.3.1, §4.5.2, Jitter-CAM §5.3): Saliency Tubes vs Grad-CAM identities,
hand-computed per-slice Grad-CAM pooling and XGrad-CAM on a T'×H'×W' activation, and Jitter-CAM jittered along time
(J / C accumulated over three axes)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xcore.explain as E
from xcore.errors import UsageError
from xcore.explain.jitter_cam import accumulate, enlarge, offsets
from xcore.models.video_nets import Small3DCNN

# ---------------------------------------------------------------- toys with a known activation and gradient


class LinearHead(nn.Module):
    """The input *is* the CAM activation (``act``, (B, K, *S)); ``y = W · vec(A) + b``, so ``∂y^c/∂A = W_c``."""

    xcore_cam_layer = "act"

    def __init__(self, weight: torch.Tensor, gap: bool = False) -> None:
        super().__init__()
        self.act, self.gap = nn.Identity(), gap
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(torch.arange(weight.shape[0], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(x)
        return self.fc(a.flatten(2).mean(2) if self.gap else a.flatten(1))


# K = 2 channels on T' = 2, H' = 1, W' = 2 (index [k, t, 0, w])
A_TOY = torch.tensor([[[[1.0, 0.0]], [[2.0, 1.0]]], [[[0.5, 1.0]], [[1.0, 3.0]]]])
G_TOY = torch.tensor([[[[1.0, 3.0]], [[-2.0, 0.0]]], [[[2.0, 2.0]], [[4.0, -2.0]]]])  # ∂y^1/∂A


def _toy() -> tuple[LinearHead, torch.Tensor]:
    w = torch.stack([torch.zeros(8), G_TOY.flatten(), -G_TOY.flatten()])  # class 1 has gradient G_TOY
    return LinearHead(w).eval(), A_TOY[None]


def test_gradcam_per_slice_pooling_by_hand() -> None:
    net, a = _toy()
    # α_{k,t} = mean over H'×W' of g: α_00 = 2, α_01 = -1, α_10 = 2, α_11 = 1
    # map_0 = 2·[1, 0] + 2·[.5, 1] = [3, 2];  map_1 = -1·[2, 1] + 1·[1, 3] = [-1, 2]
    raw = E.run("gradcam", net, a, [1], pooling="time", relu=False, resize=False)
    assert torch.equal(raw, torch.tensor([[[[3.0, 2.0]], [[-1.0, 2.0]]]]))
    assert torch.equal(E.run("gradcam", net, a, [1], pooling="time", resize=False), raw.clamp(min=0))
    # global pooling (default): α_0 = mean(1, 3, -2, 0) = .5, α_1 = mean(2, 2, 4, -2) = 1.5 — a different map
    glob = E.run("gradcam", net, a, [1], relu=False, resize=False)
    assert torch.equal(glob, torch.tensor([[[[1.25, 1.5]], [[2.5, 5.0]]]]))
    # class 2 has gradient -G: the per-slice map flips sign
    assert torch.equal(E.run("gradcam", net, a, [2], pooling="time", relu=False, resize=False), -raw)
    with pytest.raises(UsageError, match="pooling='time'"):
        E.run("gradcam", LinearHead(torch.ones(2, 4)), torch.ones(1, 2, 1, 2), pooling="time")


def test_xgradcam_on_a_video_activation_by_hand() -> None:
    net, a = _toy()
    # α_k = Σ_tij (A/ΣA)·g over T'×H'×W': ΣA_0 = 4 -> (1 + 0 - 4 + 0)/4 = -3/4; ΣA_1 = 5.5 -> (1 + 2 + 4 - 6)/5.5 = 2/11
    alpha = torch.tensor([-0.75, 2 / 11])
    want = (alpha[:, None, None, None] * A_TOY).sum(0)
    got = E.run("xgradcam", net, a, [1], relu=False, resize=False, eps=0.0)
    assert torch.allclose(got[0], want, atol=1e-7)
    assert torch.allclose(E.run("xgradcam", net, a, [1], resize=False), want.clamp(min=0)[None], atol=1e-6)
    assert want.min() < 0 < want.max()


# ---------------------------------------------------------------- Saliency Tubes


def test_saliency_tube_hand_values_3d_and_2d() -> None:
    w = torch.tensor([[1.0, 1.0], [2.0, -3.0], [0.0, 1.0]])
    net = LinearHead(w, gap=True).eval()
    # A^0 = [[1, 2], [3, 4]], A^1 = [[0, -1], [2, 1]] over (t, w); class 1: 2·A^0 - 3·A^1 = [[2, 7], [0, 5]]
    a0, a1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, -1.0], [2.0, 1.0]])
    clip = torch.stack([a0, a1])[None, :, :, None, :]  # (1, K=2, T=2, H=1, W=2)
    got = E.run("saliency_tubes", net, clip, [1], resize=False)
    assert torch.equal(got, torch.tensor([[[[2.0, 7.0]], [[0.0, 5.0]]]]))
    assert torch.equal(E.run("saliency_tubes", net, clip, [0], resize=False)[0, :, 0], a0 + a1)
    # default target: predicted class; logits = W·mean(A) + b = (3, 4.5, 2.5) -> class 1
    assert torch.equal(E.run("saliency_tubes", net, clip, resize=False), got)
    # 2-D activation: plain CAM
    img = torch.stack([a0, a1])[None]  # (1, 2, H=2, W=2)
    assert torch.equal(E.run("saliency_tubes", net, img, [1], resize=False), torch.tensor([[[2.0, 7.0], [0.0, 5.0]]]))


def _small3d(seed: int = 0) -> Small3DCNN:
    torch.manual_seed(seed)
    net = Small3DCNN(5, width=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):  # random BN statistics and affine: activations of both signs pre-ReLU
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    return net.eval()


def test_saliency_tube_equals_gradcam_times_z_on_small3d() -> None:
    net = _small3d()
    x = torch.randn(2, 3, 16, 48, 48)
    t = [3, 1]
    tube = E.run("saliency_tubes", net, x, t, resize=False)
    assert tube.shape == (2, 4, 3, 3)
    Z = 4 * 3 * 3
    assert tube.min() < 0 < tube.max()  # signed: no ReLU
    grad_cam_raw = E.run("gradcam", net, x, t, relu=False, resize=False)
    assert torch.allclose(tube, grad_cam_raw * Z, rtol=1e-5, atol=1e-6)
    assert torch.allclose(tube.clamp(min=0) / Z, E.run("gradcam", net, x, t, resize=False), rtol=1e-5, atol=1e-7)
    # CAM identity: the mean of the tube plus the bias is the class logit (GAP + one linear layer)
    logits = net(x).detach()
    assert torch.allclose(tube.flatten(1).mean(1) + net.classifier.bias.detach()[t], logits[[0, 1], t], atol=1e-5)
    # the explicit fc name gives the same map; the full-resolution map is the trilinear upsampling
    assert torch.equal(E.run("saliency_tubes", net, x, t, fc="classifier", resize=False), tube)
    full = E.run("saliency_tubes", net, x, t)
    assert torch.equal(full, F.interpolate(tube[:, None], size=(16, 48, 48), mode="trilinear")[:, 0])


def test_saliency_tube_rejects_heads_it_cannot_explain() -> None:
    class TwoFC(nn.Module):  # C3D-like: the last linear layer does not sit on the CAM layer's channels
        xcore_cam_layer = "act"

        def __init__(self) -> None:
            super().__init__()
            self.act, self.fc1, self.fc2 = nn.Identity(), nn.Linear(2, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(self.act(x).flatten(2).mean(2))))

    x = torch.randn(1, 2, 2, 3, 3)
    with pytest.raises(UsageError, match=r"GAP \+ one linear layer"):
        E.run("saliency_tubes", TwoFC(), x)
    with pytest.raises(UsageError, match=r"not an nn\.Linear"):
        E.run("saliency_tubes", TwoFC(), x, fc="act")
    with pytest.raises(UsageError, match="callable targets"):
        E.run("saliency_tubes", _small3d(), torch.randn(1, 3, 8, 32, 32), lambda o: o[:, 0])
    with pytest.raises(UsageError, match=r"no nn\.Linear"):
        E.run("saliency_tubes", nn.Sequential(nn.Conv3d(3, 2, 1), nn.Flatten(2)), x[:, :1].repeat(1, 3, 1, 1, 1))


# ---------------------------------------------------------------- temporal Jitter-CAM


class StrideNet3d(nn.Module):
    """1×1×1 identity conv at stride 2 (+ a fixed positional map) → ``act`` → GAP → linear (no bias).

    ``A = x[::2, ::2, ::2] + pos``, so Grad-CAM for class c is ``ReLU(w_c / Z · A)`` with Z = T'H'W'.
    """

    xcore_cam_layer = "act"

    def __init__(self, pos: torch.Tensor, w: tuple[float, float] = (1.0, 3.0)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1, stride=2, bias=False)
        self.act = nn.Identity()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor(w)[:, None])
        self.register_buffer("pos", pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x) + self.pos).flatten(1).mean(1, keepdim=True))


def test_accumulate_by_hand_in_3d() -> None:
    # 8 constant 2×2×2 patch maps with values 2^q: J's value spells which patches cover each cell
    cams = (2.0 ** torch.arange(8.0))[:, None, None, None, None].expand(8, 1, 2, 2, 2)
    J, C = accumulate(cams, (1, 1, 1))  # patch q at cell (q // 4, (q // 2) % 2, q % 2)
    c1 = torch.tensor([1.0, 2.0, 1.0])
    assert torch.equal(C, c1[:, None, None] * c1[None, :, None] * c1[None, None, :])
    assert J[0, 0, 0, 0] == 1 and J[0, 2, 2, 2] == 128 and J[0, 1, 1, 1] == 255
    assert J[0, 0, 1, 2] == 2 + 8  # t-cell 0: patch t 0; h-cell 1: h 0 or 1; w-cell 2: w 1 -> q = 1, 3
    assert J[0, 2, 0, 1] == 16 + 32  # q = 4, 5
    # d_t = 2 along time only: the time axis counts 1, 2, 2, 1 (like space in 2-D)
    J, C = accumulate(torch.ones(3, 1, 2, 1, 1), (2, 0, 0))
    assert torch.equal(C[:, 0, 0], torch.tensor([1.0, 2.0, 2.0, 1.0])) and torch.equal(J[0], C)


def test_temporal_jitter_closed_form_with_non_integer_time_stride() -> None:
    torch.manual_seed(0)
    pos = torch.arange(12.0).reshape(3, 2, 2) / 4
    net, x = StrideNet3d(pos), torch.rand(2, 1, 5, 4, 4)  # map m = (3, 2, 2): k_t = 5/3, k_h = k_w = 2
    got = E.run("jitter_cam", net, x, [0, 1], resize=False, temporal=True, d_t=2, d=1)
    assert got.shape == (2, 5, 3, 3)
    ot, oh = offsets(5, 3, 2), offsets(4, 2, 1)
    assert ot == [0, 2, 3] and oh == [0, 2]
    big = F.interpolate(x, size=(8, 6, 6), mode="trilinear", align_corners=False)[:, 0]  # T' = 5 + 3
    J, C, wc = torch.zeros(2, 5, 3, 3), torch.zeros(5, 3, 3), torch.tensor([1.0, 3.0])[:, None, None, None]
    for (i, a), (j, b), (k, c) in itertools.product(enumerate(ot), enumerate(oh), enumerate(oh)):
        A = big[:, a : a + 5 : 2, b : b + 4 : 2, c : c + 4 : 2] + pos  # the patch's activation
        J[:, i : i + 3, j : j + 2, k : k + 2] += wc / 12 * A
        C[i : i + 3, j : j + 2, k : k + 2] += 1
    assert torch.allclose(got, J / C, atol=1e-6)
    # time is really jittered: the spatial-only map keeps T' = 3 and differs from the temporal one's slices
    spatial = E.run("jitter_cam", net, x, [0, 1], resize=False, d=1)
    assert spatial.shape == (2, 3, 3, 3)
    # batching does not matter; the default d_t doubles T'
    one = E.run("jitter_cam", net, x, [0, 1], resize=False, temporal=True, d_t=2, d=1, batch_size=1)
    assert torch.allclose(one, got, atol=1e-6)
    assert E.run("jitter_cam", net, x, [0, 1], resize=False, temporal=True).shape == (2, 6, 4, 4)
    assert E.run("jitter_cam", net, x, [0, 1], temporal=True).shape == (2, 5, 4, 4)


def test_temporal_jitter_with_d_t_0_is_the_spatial_version() -> None:
    net = _small3d(1)
    x = torch.randn(2, 3, 8, 32, 32)  # features.3: 2×2×2
    for d in (0, 1, None):
        spatial = E.run("jitter_cam", net, x, [0, 4], resize=False, d=d)
        temporal = E.run("jitter_cam", net, x, [0, 4], resize=False, d=d, temporal=True, d_t=0)
        assert torch.equal(temporal, spatial) and spatial.abs().sum() > 0
    assert torch.equal(E.run("jitter_cam", net, x, resize=False, d=0, temporal=True, d_t=0),
                       E.run("gradcam", net, x, resize=False))


def test_enlarge_is_separable_and_skips_unchanged_axes() -> None:
    x = torch.randn(2, 3, 4, 5, 6)
    both = enlarge(x, (7, 8, 9))
    assert torch.allclose(both, enlarge(enlarge(x, (7, 5, 6)), (7, 8, 9)), atol=1e-6)
    per_frame = F.interpolate(x.transpose(1, 2).reshape(-1, 3, 5, 6), size=(8, 9), mode="bilinear")
    assert torch.equal(enlarge(x, (4, 8, 9)), per_frame.reshape(2, 4, 3, 8, 9).transpose(1, 2))
    assert enlarge(x, (4, 5, 6)) is x


def test_temporal_jitter_usage_errors() -> None:
    net, v = _small3d(), torch.randn(1, 3, 8, 32, 32)
    with pytest.raises(UsageError, match="temporal jitter needs clips"):
        E.run("jitter_cam", LinearHead(torch.ones(2, 2), gap=True), torch.randn(1, 2, 4, 4), layer="act", temporal=True)
    with pytest.raises(UsageError, match="d_t"):
        E.run("jitter_cam", net, v, temporal=True, d_t=-1)


@pytest.mark.parametrize("name", ["gradcam", "gradcam_pp", "xgradcam"])
def test_per_slice_pooling_is_the_2d_cam_of_each_time_slice(name: str) -> None:
    """``pooling="time"`` on (B, K, T', H', W') = the 2-D method's weights on each slice (B, K, H', W') alone."""
    from xcore.explain.gradcam import pool_weights
    from xcore.explain.gradcam_pp import gradcam_pp_weights
    from xcore.explain.xgradcam import xgradcam_weights

    weights = {"gradcam": lambda a, g, p: pool_weights(g, p),
               "gradcam_pp": lambda a, g, p: gradcam_pp_weights(a, g, pooling=p),
               "xgradcam": lambda a, g, p: xgradcam_weights(a, g, pooling=p)}[name]
    gen = torch.Generator().manual_seed(3)
    act = torch.rand(2, 4, 3, 5, 5, generator=gen)
    grad = torch.randn(2, 4, 3, 5, 5, generator=gen)
    per_slice = weights(act, grad, "time")
    assert per_slice.shape == (2, 4, 3, 1, 1)
    for t in range(3):
        alone = weights(act[:, :, t], grad[:, :, t], "global")  # (B, K, 1, 1)
        assert torch.allclose(per_slice[:, :, t], alone, atol=1e-6)
    assert not torch.allclose(per_slice, weights(act, grad, "global").expand_as(per_slice))
    with pytest.raises(UsageError):
        weights(act[:, :, 0], grad[:, :, 0], "time")


def test_block_temporal_mapping_repeats_each_slice_over_its_frames() -> None:
    """The seed's overlay (10 frames, T' = 2): frames 1-5 show slice 1, frames 6-10 slice 2 (1-based)."""
    from xcore.explain.gradcam import block_frames

    cam = torch.arange(2 * 2 * 1 * 1, dtype=torch.float32).reshape(2, 2, 1, 1)
    assert block_frames(cam, 10)[0, :, 0, 0].tolist() == [0.0] * 5 + [1.0] * 5
    assert block_frames(torch.arange(3.0).reshape(1, 3, 1, 1), 8)[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    torch.manual_seed(0)
    model = Small3DCNN(3, width=2).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    native = E.run("gradcam", model, x, [1], resize=False)  # (1, 4, 2, 2)
    block = E.run("gradcam", model, x, [1], temporal="block")  # (1, 16, 32, 32)
    for f in range(16):  # every frame is the bilinear upsampling of its slice
        up = F.interpolate(native[:, f // 4][:, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
        assert torch.allclose(block[0, f], up, atol=1e-6)
