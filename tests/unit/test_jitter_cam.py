"""Jitter-CAM (thesis §5.3, eqs 5.1–5.3): d = 0 identity, hand-computed J and C, the fixed target class,
batching invariance, rounding of a non-integer stride, and video (jitter in space only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xcore.explain as E
from xcore.errors import UsageError
from xcore.explain.jitter_cam import accumulate, offsets
from xcore.models import build_model


class StrideNet(nn.Module):
    """1×1 identity conv at stride 2 (+ a fixed positional map) → ``act`` (the CAM layer) → GAP → linear.

    ``A = x[::2, ::2] + pos``, so Grad-CAM for class c is ``ReLU(w_c / (m_h m_w) · A)`` in closed form.
    """

    xcore_cam_layer = "act"

    def __init__(self, pos: torch.Tensor, w: tuple[float, float] = (1.0, 3.0), b: tuple[float, float] = (0.0, 0.0)):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, stride=2, bias=False)
        self.act = nn.Identity()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor(w)[:, None])
            self.fc.bias.copy_(torch.tensor(b))
        self.register_buffer("pos", pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x) + self.pos).mean(dim=(2, 3)))


def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", 6, width=4, blocks=3).eval()  # 32² input -> 8×8 CAM


# ---------------------------------------------------------------- (1) d = 0 is the base CAM


@pytest.mark.parametrize("base", ["gradcam", "xgradcam", "gradcam_pp"])
def test_d0_equals_base_cam_exactly(base: str) -> None:
    net, x = _small_cnn(), torch.randn(3, 3, 32, 32)
    want = E.run(base, net, x, [0, 5, 2], resize=False)
    got = E.run("jitter_cam", net, x, [0, 5, 2], resize=False, base=base, d=0)
    assert got.shape == want.shape == (3, 8, 8)
    assert torch.equal(got, want) and want.abs().sum() > 0
    assert torch.equal(E.run("jitter_cam", net, x, base=base, d=0), E.run(base, net, x))  # and after run()'s resize


# ---------------------------------------------------------------- (2) J and C by hand


def test_accumulate_by_hand() -> None:
    cams = torch.tensor([1.0, 10.0, 100.0, 1000.0])[:, None, None, None].expand(4, 1, 2, 2)  # constant 2×2 maps
    J, C = accumulate(cams, (1, 1))  # patch q at cell (q // 2, q % 2)
    assert torch.equal(C, torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    assert torch.equal(J[0], torch.tensor([[1.0, 11, 10], [101, 1111, 1010], [100, 1100, 1000]]))
    J, C = accumulate(torch.arange(6.0)[:, None, None, None].expand(6, 1, 1, 2), (1, 2))  # non-square d = (1, 2)
    assert torch.equal(C, torch.tensor([[1.0, 2, 2, 1], [1, 2, 2, 1]]))
    assert torch.equal(J[0], torch.tensor([[0.0, 1, 3, 2], [3, 7, 9, 5]]))
    with pytest.raises(ValueError, match="patch maps"):
        accumulate(cams[:3], (1, 1))


def test_offsets_rounding_for_non_integer_stride() -> None:
    assert offsets(224, 7, 5) == [0, 32, 64, 96, 128, 160]  # ResNet: k = 32, p' = 384
    assert offsets(299, 8, 8)[:4] == [0, 37, 75, 112] and offsets(299, 8, 8)[-1] == 299  # k = 37.375, half-up
    assert offsets(5, 3, 2) == [0, 2, 3]  # k = 5/3: 1.67 -> 2, 3.33 -> 3


def test_closed_form_values_integer_stride_d2() -> None:
    torch.manual_seed(0)
    pos = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    net, x = StrideNet(pos), torch.rand(1, 1, 4, 4)  # m = 2, k = 2; d = 2 -> p' = 8, 9 patches, J 4×4
    got = E.run("jitter_cam", net, x, [0], resize=False, d=2)
    big = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    # patch (a, b) has CAM (1/4)(big[2(a+u), 2(b+v)] + pos[u, v]): every term of cell (r, s) shares big[2r, 2s]
    C = torch.tensor([[1.0, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    row = torch.tensor([[1.0, 0], [1, 1], [1, 1], [0, 1]])  # which u (pos row) reaches J row r
    pos_sum = row @ pos @ row.T  # Σ pos[u, v] over the patches covering (r, s)
    want = 0.25 * (big[::2, ::2] + pos_sum / C)
    assert torch.allclose(got[0], want, atol=1e-6)
    assert pos_sum[0, 0] == 0 and pos_sum[1, 1] == 7 and pos_sum[3, 3] == 4 and pos_sum[0, 3] == 1


def test_closed_form_values_non_integer_stride() -> None:
    torch.manual_seed(1)
    pos = torch.arange(9.0).reshape(3, 3)
    net, x = StrideNet(pos), torch.rand(2, 1, 5, 5)  # m = 3, k = 5/3; d = 2 -> offsets 0, 2, 3, p' = 8
    got = E.run("jitter_cam", net, x, [0, 1], resize=False, d=2)
    big = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    J, C, o = torch.zeros(2, 5, 5), torch.zeros(5, 5), [0, 2, 3]
    for a in range(3):
        for b in range(3):
            A = big[:, o[a] : o[a] + 5 : 2, o[b] : o[b] + 5 : 2] + pos
            J[:, a : a + 3, b : b + 3] += torch.tensor([1.0, 3.0])[:, None, None] / 9 * A
            C[a : a + 3, b : b + 3] += 1
    assert torch.allclose(got, J / C, atol=1e-6)


# ---------------------------------------------------------------- (3) the class of the original image


def test_target_is_the_original_images_class_even_where_a_patch_predicts_another() -> None:
    x = torch.full((1, 1, 4, 4), 5.0)
    x[..., ::2, ::2] = 0.0  # the clean 1×1 stride-2 conv sees zeros: y = (0, -1) -> class 0
    net = StrideNet(torch.zeros(2, 2), w=(1.0, 3.0), b=(0.0, -1.0))
    assert net(x).argmax(1).item() == 0
    big = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    patch_cls = [net(big[..., a : a + 4, b : b + 4]).argmax(1).item() for a in (0, 2, 4) for b in (0, 2, 4)]
    assert 1 in patch_cls  # some patches predict class 1 (whose CAM is 3× larger)
    got = E.run("jitter_cam", net, x, resize=False, d=2)
    want = 0.25 * big[0, 0, ::2, ::2]  # class 0 everywhere: w_0 / m² · A, A = big[2r, 2s] for every covering patch
    assert want.abs().sum() > 0
    assert torch.allclose(got[0], want, atol=1e-6)
    as1 = E.run("jitter_cam", net, x, [1], resize=False, d=2)
    assert torch.allclose(as1, 3 * got, atol=1e-6)
    # callable targets pass through: per-sample and whole-batch
    assert torch.allclose(E.run("jitter_cam", net, x, [lambda o: o[0, 1]], resize=False, d=2), as1, atol=1e-6)
    assert torch.allclose(E.run("jitter_cam", net, x, lambda o: o[:, 1], resize=False, d=2), as1, atol=1e-6)


# ---------------------------------------------------------------- (4) batching


def test_batched_equals_batch_size_1() -> None:
    net, x = _small_cnn(1), torch.randn(3, 3, 32, 32)
    one = E.run("jitter_cam", net, x, resize=False, batch_size=1)  # default d = m = 8: 81 patches, 16×16 map
    assert one.shape == (3, 16, 16) and one.abs().sum() > 0
    for bs in (7, 32, 1000):
        assert torch.allclose(E.run("jitter_cam", net, x, resize=False, batch_size=bs), one, atol=1e-6, rtol=1e-5)
    # each sample's map does not depend on the other samples of the batch
    assert torch.allclose(E.run("jitter_cam", net, x[1:2], resize=False), one[1:2], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- shapes, video, errors


def test_resize_non_square_and_video() -> None:
    net = _small_cnn(2)
    x = torch.randn(2, 3, 32, 48)  # 8×12 map; d = (2, 3)
    assert E.run("jitter_cam", net, x, resize=False, d=(2, 3)).shape == (2, 10, 15)
    assert E.run("jitter_cam", net, x, d=1).shape == (2, 32, 48)

    class Net3d(nn.Module):
        xcore_cam_layer = "act"

        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act, self.fc = nn.Conv3d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Linear(4, 3)

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.conv(v)).flatten(2).mean(2))

    torch.manual_seed(3)
    net3, v = Net3d().eval(), torch.randn(2, 3, 4, 8, 8)  # map T'×H'×W' = 2×4×4
    assert torch.equal(E.run("jitter_cam", net3, v, resize=False, d=0), E.run("gradcam", net3, v, resize=False))
    assert E.run("jitter_cam", net3, v, resize=False).shape == (2, 2, 8, 8)  # time untouched
    assert E.run("jitter_cam", net3, v).shape == (2, 4, 8, 8)


def test_usage_errors() -> None:
    net, x = _small_cnn(), torch.randn(1, 3, 32, 32)
    with pytest.raises(UsageError, match="CAM method"):
        E.run("jitter_cam", net, x, base="gradient")
    with pytest.raises(UsageError, match="d must be"):
        E.run("jitter_cam", net, x, d=-1)
    with pytest.raises(UsageError, match="batch_size"):
        E.run("jitter_cam", net, x, batch_size=0)
