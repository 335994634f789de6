"""SWAG-V (thesis §4.3–4.4): 3-D supervoxels (shared across static frames, split where the clip
changes in time), the eq 3.5 weights in 3-D, hand-computed supervoxel pooling, and the end-to-end map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xcore.explain as E
from xcore.core.presets import KINETICS_MEAN, KINETICS_STD
from xcore.errors import UsageError
from xcore.explain import superpixels as S
from xcore.explain.swag import paint_superpixels, swag_segments


def _labels(seg: np.ndarray) -> set[int]:
    return set(np.unique(seg).tolist())


# ---------------------------------------------------------------------------------------------- (1) 3-D supervoxels


def test_static_clip_gives_supervoxels_shared_across_all_frames() -> None:
    yy, xx = np.mgrid[:32, :32]
    frame = np.array([(0.8, 0.2, 0.2), (0.2, 0.7, 0.3), (0.2, 0.3, 0.8)])[(xx // 8) % 3]
    clip = np.repeat(frame[None], 6, axis=0)  # (T, H, W, 3), no motion
    scores = np.repeat(((yy - 16) ** 2 + (xx - 12) ** 2 < 60)[None].astype(float), 6, axis=0)
    for seg in (S.slic_image(clip, 12), S.slic_gradient(scores, 12), S.slic_image_gradient(clip, scores, 12)):
        assert seg.shape == (6, 32, 32) and len(_labels(seg)) > 4
        for t in range(1, 6):  # every voxel's label is the same in every frame: one supervoxel per region
            assert np.array_equal(seg[t], seg[0])
    # per-frame 2-D SLIC would give 6 label sets; the 3-D one has as many labels as one frame
    assert len(_labels(S.slic_image(clip, 12))) == len(_labels(S.slic_image(clip[0], 12)))


@pytest.mark.parametrize("cut", [5, 11])
def test_clip_that_changes_in_time_is_split_in_time(cut: int) -> None:
    rng = np.random.default_rng(cut)
    clip = np.zeros((16, 16, 16, 3))
    clip[:cut], clip[cut:] = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9)  # red frames, then blue frames
    clip = np.clip(clip + rng.normal(0, 0.02, clip.shape), 0, 1)
    scores = np.zeros((16, 16, 16))
    scores[:cut] = 1.0
    scores += rng.uniform(0, 0.1, scores.shape)
    for seg in (S.slic_image(clip, 8), S.slic_gradient(scores, 8), S.slic_image_gradient(clip, scores, 8)):
        before, after = _labels(seg[:cut]), _labels(seg[cut:])
        assert before and after and not before & after  # no supervoxel crosses the change
    # control: with the same noise but no change, some supervoxel spans the cut (the seed grid alone does not split)
    flat = np.clip(0.5 + rng.normal(0, 0.02, clip.shape), 0, 1)
    seg = S.slic_image(flat, 8)
    assert _labels(seg[:cut]) & _labels(seg[cut:])


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def _smooth_clip(seed: int, shape: tuple[int, ...] = (8, 24, 24), channels: int = 3) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=shape, mode="trilinear")[0].permute(1, 2, 3, 0).double().numpy()


def test_gradient_aware_weights_select_image_or_gradient_in_3d() -> None:
    clip, clip2 = _smooth_clip(0), _smooth_clip(1)
    M, M2 = _smooth_clip(2, channels=1)[..., 0], _smooth_clip(3, channels=1)[..., 0]
    n = 30
    plain_i, plain_g = S.slic_image(clip, n, compactness=20), S.slic_gradient(M, n, compactness=9)
    assert len(_labels(plain_i)) > 5 and len(_labels(plain_g)) > 5
    a = S.slic_image_gradient(clip, M, n, w_c=20, w_g=math.inf)  # w_g → ∞: the image only = SWAG-V_I with w_c
    assert _agree(a, plain_i) >= 0.99 and _agree(a, S.slic_image_gradient(clip, M2, n, w_c=20, w_g=math.inf)) == 1
    a = S.slic_image_gradient(clip, M, n, w_c=math.inf, w_g=9)  # w_c → ∞: the gradient only = SWAG-V_G with w_g
    assert _agree(a, plain_g) >= 0.99 and _agree(a, S.slic_image_gradient(clip2, M, n, w_c=math.inf, w_g=9)) == 1
    both = S.slic_image_gradient(clip, M, n, w_c=20, w_g=9)
    assert _agree(both, S.slic_image_gradient(clip, M2, n, w_c=20, w_g=9)) < 0.9
    assert _agree(both, S.slic_image_gradient(clip2, M, n, w_c=20, w_g=9)) < 0.9


def test_denormalise_a_clip() -> None:
    rgb = np.random.default_rng(4).uniform(0, 1, (2, 5, 6, 3))  # (T, H, W, 3)
    mean, std = torch.tensor(KINETICS_MEAN), torch.tensor(KINETICS_STD)
    x = (torch.from_numpy(rgb).permute(3, 0, 1, 2) - mean[:, None, None, None]) / std[:, None, None, None]
    assert np.allclose(S.denormalise(x, KINETICS_MEAN, KINETICS_STD), rgb, atol=1e-6)
    grey = S.denormalise(x[:1], (0.5,), (0.25,))
    assert grey.shape == (2, 5, 6, 3) and np.array_equal(grey[..., 0], grey[..., 2])


# ---------------------------------------------------------------------------------------------- (2) pooling


def test_supervoxels_are_painted_with_the_mean_of_m() -> None:
    M = torch.tensor([[[1.0, 2.0], [4.0, 0.5]], [[3.0, -1.0], [6.0, 2.0]]])  # (T, H, W) = (2, 2, 2)
    seg = torch.tensor([[[0, 0], [1, 2]], [[0, 1], [1, 2]]])  # R0 = {1, 2, 3}, R1 = {4, -1, 6}, R2 = {.5, 2}
    want = torch.tensor([[[2.0, 2.0], [3.0, 1.25]], [[2.0, 3.0], [3.0, 1.25]]])
    assert torch.equal(paint_superpixels(M, seg), want)


# ---------------------------------------------------------------------------------------------- (3) end to end


class Tiny3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv3d(4, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("variant", ["image", "gradient", "both"])
def test_swag_v_is_guided_backprop_pooled_over_its_supervoxels(variant: str) -> None:
    torch.manual_seed(0)
    net = Tiny3D()
    x = F.interpolate(torch.randn(2, 3, 3, 4, 4), size=(6, 20, 20), mode="trilinear")  # smooth: real supervoxels
    targets = [2, 0]
    got = E.run("swag_v", net, x, targets, superpixels=variant, n_segments=20)
    assert got.shape == (2, 6, 20, 20)
    M = E.run("guided_backprop", net, x, targets, softmax=True)  # §3.6.3: from the softmax score, per voxel
    segs = swag_segments(x, M, superpixels=variant, n_segments=20, mean=KINETICS_MEAN, std=KINETICS_STD)
    assert segs.shape == (2, 6, 20, 20)
    for b in range(2):
        assert len(_labels(segs[b].numpy())) > 3
        assert torch.equal(got[b], paint_superpixels(M[b], segs[b]))
        for label in sorted(_labels(segs[b].numpy()))[:3]:  # and by hand: each supervoxel holds its mean of M
            region = segs[b] == label
            assert torch.allclose(got[b][region], M[b][region].mean().expand(int(region.sum())), rtol=1e-6)
    # the default target is the predicted class
    pred = net(x).argmax(1).tolist()
    assert torch.equal(E.run("swag_v", net, x, superpixels=variant, n_segments=20),
                       E.run("swag_v", net, x, pred, superpixels=variant, n_segments=20))


def test_swag_v_defaults_and_errors() -> None:
    p = E.validate("swag_v")
    assert (p["n_segments"], p["w_c"], p["w_g"], p["compactness"]) == (120, 20.0, 9.0, 10.0)
    assert (p["superpixels"], p["pooling"], p["softmax"]) == ("both", "mean", True)
    net = Tiny3D()
    with pytest.raises(UsageError, match="clips"):
        E.run("swag_v", net, torch.randn(1, 3, 8, 8))
    with pytest.raises(UsageError, match="pooling"):
        E.run("swag_v", net, torch.randn(1, 3, 2, 8, 8), pooling="median")
    with pytest.raises(UsageError, match="superpixels"):
        E.run("swag_v", net, torch.randn(1, 3, 2, 8, 8), superpixels="colour")


@pytest.mark.parametrize("preset", ["kinetics", "c3d", "small"])
def test_preset_rgb_inverts_each_video_preset_to_rgb_pixels(preset: str) -> None:
    """``denormalise(x, *preset_rgb(p))`` gives back raw/255 in RGB order, also for C3D's BGR 0..255 input."""
    from xcore.data.video_transforms import video_preset
    from xcore.explain.swag_v import preset_rgb

    raw = np.random.default_rng(0).integers(0, 256, size=(4, 64, 90, 3), dtype=np.uint8)
    t = video_preset(preset)
    x = t.normalize(torch.from_numpy(raw).permute(3, 0, 1, 2).flip(0) if t.bgr
                    else torch.from_numpy(raw).permute(3, 0, 1, 2))
    mean, std, bgr = preset_rgb(preset)
    assert bgr == (preset == "c3d")
    assert np.allclose(S.denormalise(x, mean, std, bgr), raw / 255.0, atol=1e-5)


def test_swag_v_takes_the_colour_normalisation_from_the_models_preset() -> None:
    """A C3D-preset model's clip is de-normalised with C3D's BGR mean (not Kinetics') for the image supervoxels."""
    from xcore.data.video_transforms import video_preset
    from xcore.explain.swag_v import preset_rgb

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    model.xcore_preset = "c3d"
    raw = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    raw[:, :, 8:] = (200, 30, 30)  # a red right half: the image supervoxels split there
    x = video_preset("c3d").normalize(torch.from_numpy(raw).permute(3, 0, 1, 2).flip(0))[None]
    got = E.run("swag_v", model, x, [0], superpixels="image", n_segments=4, softmax=False)
    mean, std, _ = preset_rgb("c3d")
    segs = swag_segments(x, None, superpixels="image", n_segments=4, mean=mean, std=std, bgr=True)[0]
    M = E.run("guided_backprop", model, x, [0])[0]
    assert torch.allclose(got[0], paint_superpixels(M, segs), atol=1e-6)
    assert (segs[..., :8].unique()[:, None] != segs[..., 8:].unique()[None]).all()  # no supervoxel crosses the edge
