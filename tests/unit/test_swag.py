"""SWAG (thesis §3.3–3.6): hand-computed pooling, gradient-following superpixels, the eq 3.5 weights, end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation
from skimage.segmentation import find_boundaries
from torch import nn

import xcore.explain as E
from xcore.errors import UsageError
from xcore.explain import superpixels as S
from xcore.explain.swag import POOLINGS, paint_superpixels, pool_superpixels, swag_segments

# ---------------------------------------------------------------------------------------------- (1) pooling


def test_pool_superpixels_matches_hand_computed_values_for_every_pooling() -> None:
    M = torch.tensor([[1.0, 2.0, 4.0], [3.0, -1.0, 0.5]])
    seg = torch.tensor([[0, 0, 1], [4, 0, 1]])  # R0 = {1, 2, -1}, R1 = {4, 0.5}, R4 = {3}; labels 2, 3 empty
    want = {  # per label 0..4
        "mean": [2 / 3, 2.25, 0, 0, 3],
        "sum": [2, 4.5, 0, 0, 3],
        "l1": [4, 4.5, 0, 0, 3],
        "l2": [math.sqrt(6), math.sqrt(16.25), 0, 0, 3],
        "min": [-1, 0.5, 0, 0, 3],
        "max": [2, 4, 0, 0, 3],
        "var": [14 / 9, 1.75**2, 0, 0, 0],  # population variance: ((1/3)² + (4/3)² + (5/3)²) / 3
        "std": [math.sqrt(14 / 9), 1.75, 0, 0, 0],
    }
    assert set(want) == set(POOLINGS)
    for pooling, values in want.items():
        got = pool_superpixels(M, seg, pooling)
        assert torch.allclose(got, torch.tensor(values, dtype=torch.float32), atol=1e-6), pooling
        painted = paint_superpixels(M, seg, pooling)
        assert torch.allclose(painted, torch.tensor(values, dtype=torch.float32)[seg], atol=1e-6), pooling
    with pytest.raises(UsageError):
        pool_superpixels(M, seg, "median")


# ------------------------------------------------------------------------------- (2) gradient-following superpixels


def _blob_scene(size: int = 112) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image of vertical colour stripes (no trace of the blob) and pixel scores M that show an elliptic blob."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - 50) / 30) ** 2 + ((xx - 60) / 22) ** 2 <= 1
    rgb = np.array([(0.8, 0.2, 0.2), (0.2, 0.7, 0.3), (0.2, 0.3, 0.8)])[(xx // 9) % 3]
    rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)
    M = blob + rng.uniform(0, 0.3, blob.shape)
    return rgb, M, blob


def _mask_iou(seg: np.ndarray, blob: np.ndarray) -> float:
    """IoU with the blob of the union of superpixels lying mostly (> 50 %) inside it."""
    sel = np.zeros_like(blob)
    for label in np.unique(seg):
        region = seg == label
        if blob[region].mean() > 0.5:
            sel |= region
    return float((sel & blob).sum() / (sel | blob).sum())


def _boundary_recall(seg: np.ndarray, blob: np.ndarray, tol: int = 1) -> float:
    """Fraction of blob-boundary pixels within ``tol`` px of a superpixel boundary."""
    gt = find_boundaries(blob, mode="inner")
    near = binary_dilation(find_boundaries(seg, mode="thick"), iterations=tol)
    return float((gt & near).sum() / gt.sum())


def test_gradient_superpixels_follow_a_blob_the_image_does_not_show() -> None:
    rgb, M, blob = _blob_scene()
    seg_i = S.slic_image(rgb, 300)
    seg_g = S.slic_gradient(M, 300)
    seg_ig = S.slic_image_gradient(rgb, M, 300)
    iou = {k: _mask_iou(s, blob) for k, s in (("I", seg_i), ("G", seg_g), ("I+G", seg_ig))}
    rec = {k: _boundary_recall(s, blob) for k, s in (("I", seg_i), ("G", seg_g), ("I+G", seg_ig))}
    # measured: IoU I .861, G .929, I+G .953; boundary recall I .818, G .973, I+G .993. With the gradient
    # weight mis-scaled (compactness 10 on skimage's [0, 1] rescale) G drops to IoU .873 / recall .851.
    assert iou["G"] >= 0.9 and iou["G"] >= iou["I"] + 0.04
    assert rec["G"] >= 0.93 and rec["G"] >= rec["I"] + 0.1
    assert rec["I+G"] >= rec["I"] + 0.1


# -------------------------------------------------------------------------------- (3) eq 3.5 weights w_c, w_g


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_gradient_aware_distance_weights_select_image_or_gradient() -> None:
    rgb, M, _ = _blob_scene(64)
    rng = np.random.default_rng(1)
    M2 = rng.uniform(0, 1, M.shape)  # another score map
    rgb2 = rng.uniform(0, 1, rgb.shape)  # another image
    n = 100
    plain_i, plain_g = S.slic_image(rgb, n, compactness=10), S.slic_gradient(M, n, compactness=10)
    # the weights divide their distances (eq 3.5): w_g → ∞ leaves the image only, w_c → ∞ the gradient only
    for w_g in (math.inf, 1e6):
        a = S.slic_image_gradient(rgb, M, n, w_c=10, w_g=w_g)
        assert _agree(a, S.slic_image_gradient(rgb, M2, n, w_c=10, w_g=w_g)) >= 0.99  # M does not matter
        assert _agree(a, plain_i) >= 0.99  # = SWAG_I with compactness w_c
    for w_c in (math.inf, 1e6):
        a = S.slic_image_gradient(rgb, M, n, w_c=w_c, w_g=10)
        assert _agree(a, S.slic_image_gradient(rgb2, M, n, w_c=w_c, w_g=10)) >= 0.99  # the image does not matter
        assert _agree(a, plain_g) >= 0.99  # = SWAG_G with compactness w_g
    # with both terms finite, changing either input changes the superpixels
    both = S.slic_image_gradient(rgb, M, n, w_c=20, w_g=9)
    assert _agree(both, S.slic_image_gradient(rgb, M2, n, w_c=20, w_g=9)) < 0.9
    assert _agree(both, S.slic_image_gradient(rgb2, M, n, w_c=20, w_g=9)) < 0.9
    with pytest.raises(UsageError):
        S.slic_image_gradient(rgb, M, n, w_c=0, w_g=9)


def test_denormalise_inverts_the_input_normalisation() -> None:
    rgb = np.random.default_rng(2).uniform(0, 1, (5, 6, 3))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = (torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert np.allclose(S.denormalise(x, mean, std), rgb, atol=1e-6)


# ---------------------------------------------------------------------------------------------- (4) end to end


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _hand_pool(m: np.ndarray, seg: np.ndarray, how: str) -> np.ndarray:
    out = np.zeros_like(m)
    for label in np.unique(seg):
        region = seg == label
        out[region] = {"mean": np.mean, "max": np.max, "std": np.std}[how](m[region])
    return out


@pytest.mark.parametrize("variant", ["image", "gradient", "both"])
def test_swag_end_to_end_is_guided_backprop_pooled_over_its_superpixels(variant: str) -> None:
    torch.manual_seed(0)
    net = TinyCNN()
    x = F.interpolate(torch.randn(2, 3, 5, 6), size=(40, 48), mode="bilinear")  # smooth colours: real superpixels
    targets = [0, 2]
    for pooling in ("mean", "max", "std"):
        got = E.run("swag", net, x, targets, superpixels=variant, n_segments=30, pooling=pooling)
        assert got.shape == (2, 40, 48)
        M = E.run("guided_backprop", net, x, targets, softmax=True)  # §3.6.3: from the softmax score
        segs = swag_segments(x, M, superpixels=variant, n_segments=30)
        for b in range(2):
            assert len(np.unique(segs[b].numpy())) > 5
            want = _hand_pool(M[b].double().numpy(), segs[b].numpy(), pooling)
            assert np.allclose(got[b].double().numpy(), want, rtol=1e-5, atol=1e-9 * M.abs().max().item())
    # the default target is the predicted class
    pred = net(x).argmax(1).tolist()
    assert torch.equal(E.run("swag", net, x, superpixels=variant, n_segments=30),
                       E.run("swag", net, x, pred, superpixels=variant, n_segments=30))


def test_swag_rejects_bad_inputs() -> None:
    net = TinyCNN()
    with pytest.raises(UsageError):
        E.run("swag", net, torch.randn(1, 3, 8, 8), superpixels="colour")
    with pytest.raises(UsageError):
        E.run("swag", net, torch.randn(1, 3, 8, 8), pooling="median")
    with pytest.raises(UsageError):
        E.run("swag", net, torch.randn(1, 3, 2, 8, 8))
