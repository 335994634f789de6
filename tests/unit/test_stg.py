"""STG-Grad-CAM / STG-CAM / gradient heatmaps, node masking and deletion over joints × time: hand-computed values
on toy skeleton models, the CAM identity, and exact masking bookkeeping."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import xcore.explain as E
from xcore.metrics.deletion_insertion import deletion_insertion
from xcore.metrics.node_masking import node_masking


def fold(x: Tensor) -> Tensor:
    """(N, C, T, V, M) -> (N·M, C, T, V), persons into the batch as ST-GCN does."""
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)


class GraphConv(nn.Module):
    """``F_k[t, w] = θ_k Σ_v x[t, v] A[v, w]`` for one input channel."""

    def __init__(self, a: Tensor, theta: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("theta", theta)

    def forward(self, h: Tensor) -> Tensor:
        return torch.einsum("nctv,vw->nctw", h, self.a) * self.theta[None, :, None, None]


class ToyST(nn.Module):
    """block -> mean over (T, V) -> mean over persons -> linear head (ST-GCN's head structure)."""

    def __init__(self, block: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.block = block
        self.fc = head
        self.xcore_cam_layer = "block"

    def forward(self, x: Tensor) -> Tensor:
        f = self.block(fold(x))
        return self.fc(f.mean(dim=(2, 3)).reshape(x.shape[0], x.shape[-1], -1).mean(dim=1))


def three_node_model() -> ToyST:
    a = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    head = nn.Linear(2, 2, bias=False)
    head.weight.data = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    return ToyST(GraphConv(a, torch.tensor([1.0, -1.0])), head).eval()


def test_stg_gradcam_hand_computed_on_three_node_graph() -> None:
    """y_0 = mean(F_0) + 2 mean(F_1), F_k = θ_k x A: α = (1/6, 2/6), H = ReLU(α_0 F_0 + α_1 F_1) = ReLU(−xA/6).
    x = [[1, −2, 0.5], [0, 1, −1]] gives xA = [[−1, −0.5, −1.5], [1, 0, 0]]."""
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]]).reshape(1, 1, 2, 3, 1)
    got = E.run("stg_gradcam", three_node_model(), x, [0], resize=False)
    want = torch.tensor([[[1 / 6, 0.5 / 6, 1.5 / 6], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(got, want)
    cam = E.run("stg_cam", three_node_model(), x, [0], resize=False)  # ReLU(F_0 + 2 F_1) = ReLU(−xA)
    torch.testing.assert_close(cam, want * 6)


def test_stg_gradcam_equals_cam_over_z_with_two_persons() -> None:
    """GAP over (T', V), mean over M, linear head: STG-Grad-CAM = STG-CAM / (M·T'·V) exactly; an empty second
    person slot is ignored by the fold (max over non-empty slots)."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 6, (3, 1), padding=(1, 0)), nn.ReLU(), nn.Conv2d(6, 5, (3, 1), stride=(2, 1),
                                                                                      padding=(1, 0)))
    model = ToyST(block, nn.Linear(5, 4)).eval()
    x = torch.randn(3, 3, 8, 7, 2)
    x[1, ..., 1] = 0  # sample 1 has one person
    grad_cam = E.run("stg_gradcam", model, x, [0, 1, 3], resize=False)
    cam = E.run("stg_cam", model, x, [0, 1, 3], resize=False, head="fc")
    assert grad_cam.shape == (3, 4, 7)
    torch.testing.assert_close(grad_cam, cam / (2 * 4 * 7), rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # the single-person sample's map is that person's map
        f = block(fold(x[1:2]))[0]
        one = torch.einsum("k,ktv->tv", model.fc.weight[1], f).clamp(min=0)
    torch.testing.assert_close(cam[1], one, rtol=1e-5, atol=1e-6)
    # run() repeats each of the T' = 4 cells over 2 input frames
    full = E.run("stg_gradcam", model, x, [0, 1, 3])
    torch.testing.assert_close(full, grad_cam.repeat_interleave(2, dim=1))


def test_stg_gradient_is_norm_of_positive_gradient() -> None:
    """y = Σ w ⊙ x: ∂y/∂x = w, H(n, t) = ‖ReLU(w_{:, n, t})‖₂, max over the non-empty persons."""
    torch.manual_seed(1)
    w = torch.randn(3, 4, 5, 2)

    class Linear(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            s = (x * w).flatten(1).sum(1)
            return torch.stack([s, -s], dim=1)

    x = torch.randn(2, 3, 4, 5, 2)
    x[0, ..., 1] = 0
    got = E.run("stg_gradient", Linear(), x, [0, 0])
    per_person = w.clamp(min=0).pow(2).sum(0).sqrt()  # (T, V, M)
    torch.testing.assert_close(got[0], per_person[..., 0])
    torch.testing.assert_close(got[1], per_person.amax(-1))


class CellSum(nn.Module):
    """logit 0 = Σ x over cells (t, v) ∈ {(0, 0), (0, 1)} (all persons), logit 1 = 0.5."""

    def forward(self, x: Tensor) -> Tensor:
        s = x[:, :, 0, :2].flatten(1).sum(1)
        return torch.stack([s, torch.full_like(s, 0.5)], dim=1)


def test_node_masking_ranks_valid_cells_only() -> None:
    x = torch.ones(1, 1, 3, 4, 2)
    x[:, :, 2] = 0  # a padded frame: never ranked, never counted
    maps = torch.tensor([[[8.0, 7, 6, 5], [4, 3, 2, 1], [100, 100, 100, 100]]])
    res = node_masking(CellSum(), x, maps, fractions=(0.25, 0.5))
    # important 25 % = 2 of the 8 valid cells = (0, 0), (0, 1): logit 0 drops to 0 -> class 1
    assert res["important_preds"].tolist() == [[1.0, 1.0]]
    assert res["unimportant_preds"].tolist() == [[0.0, 0.0]]
    assert res["clean_pred"].tolist() == [0.0]
    per_slot = torch.stack([maps, maps - 50], dim=-1)  # a (B, T, V, M) map ranks by its max over slots
    assert node_masking(CellSum(), x, per_slot, fractions=(0.25, 0.5))["important_preds"].tolist() == [[1.0, 1.0]]
    joint = node_masking(CellSum(), x, maps, fractions=(0.25,), unit="joint")  # joint 0 (mean 6) masked
    assert joint["important_preds"].tolist() == [[0.0]]  # joint 1 still carries 2 > 0.5
    joint = node_masking(CellSum(), x, maps, fractions=(0.5,), unit="joint")
    assert joint["important_preds"].tolist() == [[1.0]]


def test_deletion_over_joints_and_frames_removes_every_person() -> None:
    """A (B, T, V) map on a (B, C, T, V, M) batch: each step zeroes one (t, v) cell in both person slots."""
    torch.manual_seed(2)
    x = torch.rand(1, 1, 2, 2, 2)

    class Sum(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            s = (x[..., 0] + 3 * x[..., 1]).flatten(1).sum(1)
            return torch.stack([s, torch.zeros_like(s)], dim=1)

    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    res = deletion_insertion(Sum(), x, maps, [0], steps=4)
    order = [(0, 1), (1, 0), (1, 1), (0, 0)]
    want = []
    cur = x.clone()
    for k in range(5):
        want.append(Sum()(cur).softmax(1)[0, 0].item())
        if k < 4:
            cur[:, :, order[k][0], order[k][1], :] = 0
    assert res["deletion_curve"][0].tolist() == pytest.approx(want, rel=1e-6)


def test_stg_gradcam_on_stgcn_last_block_equals_cam_identity() -> None:
    """ST-GCN: last block -> GAP over (T', V) -> mean over M (zero persons included) -> 1×1 conv head, so
    STG-Grad-CAM on the last block = STG-CAM (fcn weights) / (M·T'·V) exactly; the CAM matches extract_feature."""
    from xcore.models.stgcn import STGCN

    torch.manual_seed(3)
    model = STGCN(4, width=0.125).eval()
    x = torch.randn(2, 3, 16, 25, 2)
    x[0, ..., 1] = 0
    grad_cam = E.run("stg_gradcam", model, x, [1, 2], resize=False)
    cam = E.run("stg_cam", model, x, [1, 2], resize=False)
    assert grad_cam.shape == (2, 4, 25)
    torch.testing.assert_close(grad_cam, cam / (2 * 4 * 25), rtol=1e-4, atol=1e-8)
    with torch.no_grad():
        out, _ = model.extract_feature(x)  # (N, classes, T', V, M): the per-(t, v, m) class map minus the bias
    bias = model.fcn.bias[None, :, None, None, None]
    ref = (out - bias).clamp(min=0)
    torch.testing.assert_close(cam[0], ref[0, 1, :, :, 0], rtol=1e-4, atol=1e-6)  # one person: slot 0
    torch.testing.assert_close(cam[1], ref[1, 2].amax(-1), rtol=1e-4, atol=1e-6)  # two persons: the max
