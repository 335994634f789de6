"""Discriminative spatial / temporal relevance (Hiley, Taylor, Preece, Hicks, Marshall, *Discriminating Spatial and
Temporal Relevance in Deep Taylor Decompositions for Explainable Activity Recognition*, §3.2, §4.4, §5): the
spatial map is the base map of hand-built freeze-frame clips for the clean clip's class, temporal = full − spatial,
max|·| normalisation, recorded freeze predictions, and ground truth on a moving-square clip."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import xcore.explain as E
from xcore.errors import UsageError
from xcore.explain.discriminative import freeze_clips
from xcore.models.video_nets import Small3DCNN

T, H = 8, 16


class MotionNet(nn.Module):
    """Hand-set 3-D net: Conv3d (2,1,1) -> ReLU -> GAP -> linear, input (B, 2, T, H, W) = (luminance, redness).

    Features per frame pair: ``relu(L_t − L_{t−1})``, ``relu(L_{t−1} − L_t)`` (|motion|) and the static term
    ``(R_{t−1} + R_t)/2 + (L_{t−1} + L_t)/40``. Class 0 ("moving") = 4·motion + 0.5·static, class 1 ("static") =
    static: a moving square makes the clip class 0, while any freeze-frame clip (no motion) is class 1.
    """

    xcore_input_bounds = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 3, (2, 1, 1), bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(3, 2, bias=False)
        w = torch.zeros(3, 2, 2, 1, 1)
        w[0, 0, :, 0, 0] = torch.tensor([-1.0, 1.0])
        w[1, 0, :, 0, 0] = torch.tensor([1.0, -1.0])
        w[2, 1, :, 0, 0] = 0.5
        w[2, 0, :, 0, 0] = 0.025
        with torch.no_grad():
            self.conv.weight.copy_(w)
            self.fc.weight.copy_(torch.tensor([[4.0, 4.0, 0.5], [0.0, 0.0, 1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def moving_square_clip() -> tuple[Tensor, Tensor, Tensor]:
    """A static red 6×6 square on a static textured background, and a grey 4×4 square moving 1 px per frame.

    Returns the clip (1, 2, T, H, H), the moving square's boxes (T, H, H) and the static square's (T, H, H).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 2, T, H, H)
    x[0, 0] = 0.3 * torch.rand(H, H, generator=g)
    static = torch.zeros(T, H, H, dtype=torch.bool)
    static[:, 1:7, 1:7] = True
    box = torch.zeros(T, H, H, dtype=torch.bool)
    for t in range(T):
        box[t, 10:14, 2 + t : 6 + t] = True
    x[0, 0][static] = 1.0
    x[0, 1][static] = 1.0
    x[0, 0][box] = 1.0
    return x, box, static


def frozen(x: Tensor, t: int) -> Tensor:
    """The freeze-frame clip of frame t, built by hand: frame t repeated T times."""
    return x[:, :, t : t + 1].repeat(1, 1, x.shape[2], 1, 1)


def small3d() -> nn.Module:
    torch.manual_seed(0)
    return Small3DCNN(5, width=2).eval()


def test_freeze_clips_layout() -> None:
    x = torch.randn(2, 3, 4, 5, 5)
    clips = freeze_clips(x, range(1, 3))
    assert clips.shape == (4, 3, 4, 5, 5)
    for j, t in enumerate(range(1, 3)):
        for b in range(2):
            assert torch.equal(clips[j * 2 + b], frozen(x, t)[b])


@pytest.mark.parametrize("base, params", [("lrp", {}), ("gradient", {}), ("gradcam", {"relu": False})])
@pytest.mark.parametrize("spatial_frame", ["first", "mean"])
def test_spatial_equals_base_on_hand_built_freeze_clips(base: str, params: dict, spatial_frame: str) -> None:
    net, x = small3d(), torch.randn(2, 3, T, H, H)
    with torch.no_grad():
        classes = net(x).argmax(1).tolist()  # the clean clip's prediction
    e = E.run("discriminative", net, x, parts=True, base=base, base_params=params, normalise="none",
              spatial_frame=spatial_frame, batch_size=5)
    assert list(e.maps) == ["temporal", "spatial", "full"]
    assert torch.allclose(e.maps["full"], E.run(base, net, x, classes, **params), rtol=1e-5, atol=1e-7)
    for t in range(T):
        m = E.run(base, net, frozen(x, t), classes, **params)  # (B, T, H, W) at the input grid
        want = m[:, 0] if spatial_frame == "first" else m.mean(dim=1)
        assert torch.allclose(e.maps["spatial"][:, t], want, rtol=1e-5, atol=1e-7)
    assert e.maps["spatial"].abs().sum() > 0
    assert torch.equal(e.maps["temporal"], e.maps["full"] - e.maps["spatial"])


def test_max_abs_normalisation_per_sample() -> None:
    net, x = small3d(), torch.randn(3, 3, T, H, H)
    raw = E.run("discriminative", net, x, parts=True, normalise="none")
    e = E.run("discriminative", net, x, parts=True)
    for part in ("full", "spatial"):
        peak = raw.maps[part].abs().flatten(1).amax(1)
        assert torch.allclose(e.maps[part], raw.maps[part] / peak[:, None, None, None])
        assert torch.allclose(e.maps[part].abs().flatten(1).amax(1), torch.ones(3))
    assert torch.equal(e.maps["temporal"], e.maps["full"] - e.maps["spatial"])
    assert not torch.allclose(e.maps["temporal"], raw.maps["full"] - raw.maps["spatial"])


def test_freeze_predictions_and_the_explained_class_is_the_clean_one() -> None:
    net = MotionNet().eval()
    x, _, _ = moving_square_clip()
    assert net(x).argmax(1).item() == 0  # motion: class 0
    e = E.run("discriminative", net, x, parts=True, base="gradient", normalise="none")
    with torch.no_grad():
        outs = torch.cat([net(frozen(x, t)) for t in range(T)])
    assert torch.equal(e.extras["freeze_preds"][0], outs.argmax(1).float())
    assert (e.extras["freeze_preds"] == 1).all()  # no motion in a freeze clip: class 1
    assert torch.allclose(e.extras["freeze_scores"][0], outs.softmax(1)[:, 0])  # prob. of the explained class 0
    for t in range(T):
        want = E.run("gradient", net, frozen(x, t), [0])[:, 0]
        assert torch.allclose(e.maps["spatial"][:, t], want)
        # the freeze clip's own class would give twice that (∂/∂x of 1·static vs 0.5·static)
        assert torch.allclose(E.run("gradient", net, frozen(x, t), [1])[:, 0], 2 * want)
        assert want.abs().sum() > 0


def test_batching_and_explicit_targets() -> None:
    net, x = small3d(), torch.randn(2, 3, T, H, H)
    a = E.run("discriminative", net, x, [1, 3], parts=True, batch_size=1)
    b = E.run("discriminative", net, x, [1, 3], parts=True, batch_size=64)
    for part in a.maps:
        assert torch.allclose(a.maps[part], b.maps[part], rtol=1e-5, atol=1e-6)
    assert torch.equal(a.extras["freeze_preds"], b.extras["freeze_preds"])
    assert torch.allclose(a.extras["freeze_scores"], b.extras["freeze_scores"])
    with torch.no_grad():
        probs = net(frozen(x, 2)).softmax(1)
    assert torch.allclose(a.extras["freeze_scores"][:, 2], probs[[0, 1], [1, 3]])


def test_primary_part_is_what_run_returns() -> None:
    net, x = small3d(), torch.randn(1, 3, T, H, H)
    e = E.run("discriminative", net, x, parts=True, primary="full")
    assert list(e.maps) == ["full", "temporal", "spatial"]
    assert torch.equal(E.run("discriminative", net, x, primary="full"), e.maps["full"])
    assert torch.equal(E.run("discriminative", net, x), e.maps["temporal"])  # default primary
    assert E.METHODS.get("discriminative").extras == ("freeze_preds", "freeze_scores")


@pytest.mark.parametrize("params", [{"base": "discriminative"}, {"normalise": "l2"}, {"spatial_frame": "last"},
                                    {"primary": "motion"}, {"batch_size": 0}])
def test_bad_parameters_raise_usage_error(params: dict) -> None:
    with pytest.raises(UsageError):
        E.run("discriminative", small3d(), torch.randn(1, 3, T, H, H), **params)


def test_images_are_refused() -> None:
    with pytest.raises(UsageError, match="clips"):
        E.run("discriminative", nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(1)), torch.randn(1, 3, 1, 1))


@pytest.mark.parametrize("base_params, own_box", [({}, False), ({"first": "alpha_beta"}, True)])
def test_ground_truth_moving_square(base_params: dict, own_box: bool) -> None:
    """Temporal positive mass on the moving square, spatial positive mass on the static content (§5).

    With the z^β first layer, an onset / offset also gives relevance to the neighbouring frame at the same pixels
    (a dark pixel with a negative weight), so the square's region there is its track: its boxes in frames
    t−1, t, t+1. With z⁺ everywhere (α1β0 first layer) the motion relevance sits in frame t's own box.
    """
    net = MotionNet().eval()
    x, box, static = moving_square_clip()
    track = box.clone()
    track[1:] |= box[:-1]
    track[:-1] |= box[1:]
    region = box if own_box else track
    e = E.run("discriminative", net, x, parts=True, base_params=base_params)
    temp, spat, full = (e.maps[p][0].clamp(min=0) for p in ("temporal", "spatial", "full"))
    assert temp[region].sum() / temp.sum() > 0.99
    assert full[region].sum() / full.sum() < 0.6  # the full map alone mixes in the static content
    assert spat[box].sum() / spat.sum() < 0.05
    assert spat[static].sum() / spat.sum() > 0.85
    assert (e.extras["freeze_preds"] == 1).all()
