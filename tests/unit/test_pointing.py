"""Pointing game (thesis §5.4.4.1, eq 5.7; TorchRay conventions): the strict 15 px tolerance on integer offsets,
the first-argmax tie rule, bilinear resizing to the original size against a hand (numpy) bilinear, TorchRay's
Gaussian smoothing against scipy, class-mean vs pooled accuracy by hand, and the centre baseline's point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import xcore.metrics as M
from xcore.errors import SampleError, UsageError
from xcore.explain.baselines_distance import centre
from xcore.metrics.pointing import (
    SMOOTHED,
    centre_point,
    default_smooth,
    gaussian_kernel,
    gaussian_smooth,
    pointing_accuracy,
    pointing_game,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def play(maps: torch.Tensor, masks: list, device: str = "cpu", **kw: object) -> dict[str, torch.Tensor]:
    """The metric on ``maps`` (B, h, w) with a dummy 3-channel input of the maps' size on ``device``."""
    x = torch.zeros(maps.shape[0], 3, *maps.shape[1:], device=device)
    return pointing_game(None, x, maps.to(device), masks=masks, **kw)


def delta(h: int, w: int, x: int, y: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[y, x] = 1.0
    return m


def bilinear_np(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Hand bilinear resize, ``align_corners=False``: source coordinate ``(i + ½)·n/N − ½`` clamped at 0 (as
    PyTorch), neighbours ``⌊s⌋`` and ``min(⌊s⌋ + 1, n − 1)``, weights ``1 − λ`` and ``λ``; float64."""

    def axis(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0.0)
        i0 = np.floor(s).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), s - i0

    r0, r1, ly = axis(a.shape[0], out_h)
    c0, c1, lx = axis(a.shape[1], out_w)
    top = a[r0][:, c0] * (1 - lx) + a[r0][:, c1] * lx
    bottom = a[r1][:, c0] * (1 - lx) + a[r1][:, c1] * lx
    return top * (1 - ly)[:, None] + bottom * ly[:, None]


# --- tolerance: strict < tolerance², on integer offsets ------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_strict_fifteen_pixel_tolerance_on_integer_offsets(device: str) -> None:
    """One GT pixel at (x, y) = (20, 20). 224 is not a sum of two squares (224 = 2⁵·7), so the nearest integer
    offsets below 15² are 221 = 10² + 11² = 14² + 5²; 225 = 9² + 12² = 15² + 0² is exactly 15 px: a miss."""
    H, W = 50, 60
    mask = np.zeros((H, W), dtype=bool)
    mask[20, 20] = True
    offsets = [(10, 11), (14, 5), (9, 12), (15, 0), (-11, -10), (0, -15)]
    maps = torch.stack([delta(H, W, 20 + dx, 20 + dy) for dx, dy in offsets])
    out = play(maps, [mask] * len(offsets), device)
    assert out["pointing_hit"].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert out["point_x"].tolist() == [20.0 + dx for dx, _ in offsets]
    assert out["point_y"].tolist() == [20.0 + dy for _, dy in offsets]
    assert out["pointing_hit"].dtype == out["point_x"].dtype == torch.float64
    # the tolerance flips them: 15.01² = 225.3 > 225 (hits), 14.8² = 219.04 < 221 (misses)
    assert play(maps, [mask] * 6, device, tolerance=15.01)["pointing_hit"].tolist() == [1.0] * 6
    assert play(maps, [mask] * 6, device, tolerance=14.8)["pointing_hit"].tolist() == [0.0] * 6


def test_hit_is_the_exact_nearest_gt_pixel_at_any_distance() -> None:
    """Random masks and points against scipy's exact EDT: the nearest GT pixel's integer squared distance."""
    rng = np.random.default_rng(0)
    H, W, B = 37, 53, 40
    masks = [rng.random((H, W)) < rng.choice([0.002, 0.01, 0.05]) for _ in range(B)]
    masks[0][:] = False
    masks[0][36, 52] = True  # far corner: the point below is ~60 px away
    pts = rng.integers(0, [W, H], size=(B, 2))
    pts[0] = (0, 0)
    maps = torch.stack([delta(H, W, int(x), int(y)) for x, y in pts])
    for tol in (3.0, 7.5, 15.0, 62.0):
        ref = []
        for m, (x, y) in zip(masks, pts, strict=True):
            if not m.any():
                ref.append(0.0)
                continue
            _, (iy, ix) = ndi.distance_transform_edt(~m, return_indices=True)
            d2 = int((iy[y, x] - y) ** 2 + (ix[y, x] - x) ** 2)
            ref.append(float(d2 < tol * tol))
        assert play(maps, masks, tolerance=tol)["pointing_hit"].tolist() == ref
    # (0, 0) to (52, 36): d² = 52² + 36² = 4000; √4000 = 63.25 → a hit only for the tolerance above it
    assert play(maps[:1], masks[:1], tolerance=63.3)["pointing_hit"].item() == 1.0
    assert play(maps[:1], masks[:1], tolerance=63.2)["pointing_hit"].item() == 0.0


def test_empty_mask_is_a_miss_and_nearest_of_several_pixels_counts() -> None:
    H, W = 30, 40
    empty = np.zeros((H, W), dtype=bool)
    two = np.zeros((H, W), dtype=bool)
    two[0, 0] = two[10, 30] = True  # the point (30, 20) is 10 px from (30, 10): a hit, far from (0, 0)
    maps = torch.stack([delta(H, W, 30, 20)] * 2)
    assert play(maps, [empty, two])["pointing_hit"].tolist() == [0.0, 1.0]
    assert play(maps, [empty, torch.from_numpy(two)], tolerance=10.0)["pointing_hit"].tolist() == [0.0, 0.0]


# --- the point: first argmax in row-major order -------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_ties_go_to_the_first_maximum_in_row_major_order(device: str) -> None:
    H, W = 6, 9
    a = torch.zeros(H, W)
    a[4, 1] = a[2, 5] = 3.0  # flat 37 vs 23 → row 2 wins although its column is larger
    b = torch.zeros(H, W)
    b[3, 7] = b[3, 2] = 3.0  # same row: the smaller column
    c = torch.full((H, W), -2.5)  # constant: pixel (0, 0)
    d = torch.arange(H * W, dtype=torch.float32).reshape(H, W).flip(0)  # max 53 at row 0, col 8
    mask = np.ones((H, W), dtype=bool)
    out = play(torch.stack([a, b, c, d]), [mask] * 4, device)
    assert out["point_x"].tolist() == [5.0, 2.0, 0.0, 8.0]
    assert out["point_y"].tolist() == [2.0, 3.0, 0.0, 0.0]


# --- resizing to the original size ----------------------------------------------------------------------------------

def test_seven_by_seven_map_resized_to_original_sizes_matches_hand_bilinear() -> None:
    """7×7 maps, one batch with originals 70×50, 33×41, 70×50 (two resize groups); each point is the argmax of the
    hand bilinear resize, and a one-pixel mask on that point (or 20 px off it) hits (or misses)."""
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(3, 7, 7, generator=g)
    sizes = [(70, 50), (33, 41), (70, 50)]
    hand = [bilinear_np(maps[i].double().numpy(), *s) for i, s in enumerate(sizes)]
    for i, (h, w) in enumerate(sizes):  # the hand resize is F.interpolate's
        ref = torch.nn.functional.interpolate(maps[i][None, None], size=(h, w), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(hand[i], ref[0, 0].double().numpy(), rtol=1e-5, atol=1e-6)
    pts = [np.unravel_index(int(np.argmax(a)), a.shape) for a in hand]  # (row, col), first maximum
    masks = []
    for i, (h, w) in enumerate(sizes):
        m = np.zeros((h, w), dtype=bool)
        r, c = pts[i]
        m[r, c] = i != 1
        m[r, (c + 20) % w] = i == 1  # 20 columns (or w − 20 ≥ 20) away: a miss
        masks.append(m)
    out = play(maps, masks)
    assert out["point_y"].tolist() == [float(p[0]) for p in pts]
    assert out["point_x"].tolist() == [float(p[1]) for p in pts]
    assert out["pointing_hit"].tolist() == [1.0, 0.0, 1.0]


def test_centre_baseline_points_within_one_pixel_of_centre_point() -> None:
    """The ``centre`` method's map at network size (224² as the thesis, and odd grids), resized to an original
    size: its first argmax is within 1 px of ``centre_point`` = (W₀ // 2, H₀ // 2)."""
    assert centre_point(375, 500) == (250, 187) and centre_point(70, 51) == (25, 35)
    for net in [(224, 224), (31, 33), (223, 225)]:
        cmap = centre(None, torch.zeros(1, 3, *net), None)
        for H0, W0 in [(70, 50), (375, 500), (333, 501), (51, 51), (480, 640), (640, 427)]:
            out = play(cmap, [np.zeros((H0, W0), dtype=bool)])
            cx, cy = centre_point(H0, W0)
            assert abs(out["point_x"].item() - cx) <= 1 and abs(out["point_y"].item() - cy) <= 1, (net, H0, W0)


def test_coarse_even_grid_centre_points_into_a_plateau() -> None:
    """A 32² grid has four tied maxima (rows/cols 15, 16); upsampled ×15.6 to 375×500 they span the output pixels
    whose source coordinate ``(i + ½)·32/N − ½`` lies in [15, 16]: rows 182…192, columns 242…257 — the point is
    in that plateau, up to 8 px from ``centre_point`` (250, 187)."""
    out = play(centre(None, torch.zeros(1, 3, 32, 32), None), [np.zeros((375, 500), dtype=bool)])
    assert 242 <= out["point_x"].item() <= 257 and 182 <= out["point_y"].item() <= 192


# --- TorchRay's Gaussian smoothing ----------------------------------------------------------------------------------

def test_kernel_is_torchray_imsmooth_with_ceil_four_sigma_radius() -> None:
    for sigma in (0.5, 1.3, 2.0, 10.0):
        f = gaussian_kernel(sigma).double().numpy()
        W = math.ceil(4 * sigma)
        assert f.shape == (2 * W + 1,)
        ref = np.exp(-0.5 * np.arange(-W, W + 1) ** 2 / sigma**2)
        np.testing.assert_allclose(f, ref / ref.sum(), rtol=1e-5, atol=1e-8)


def test_smoothing_a_delta_equals_scipy_gaussian_with_sigma_smooth_times_max_side() -> None:
    """smooth = 0.02 on a 41×100 original: σ = 0.02 · 100 = 2, radius ⌈8⌉ = 8 = scipy's int(4σ + ½)."""
    H, W, s = 41, 100, 0.02
    sigma = s * max(H, W)
    d = np.zeros((H, W))
    d[20, 37] = 1.0  # interior: ≥ 8 px from every edge, so the padding does not matter
    got = gaussian_smooth(torch.from_numpy(d)[None], sigma)[0].double().numpy()
    for mode in ("constant", "nearest"):
        np.testing.assert_allclose(got, ndi.gaussian_filter(d, sigma, mode=mode, truncate=4.0), rtol=1e-5,
                                   atol=1e-7)
    assert got.sum() == pytest.approx(1.0, abs=1e-6)


def test_smoothing_pads_by_replicating_edges_like_torchray() -> None:
    """TorchRay's ``saliency`` calls imsmooth with ``padding_mode='replicate'`` = scipy ``mode='nearest'``; at
    σ = 1.3 its radius ⌈5.2⌉ = 6 is one more than scipy's default, so scipy gets ``radius=6``."""
    rng = np.random.default_rng(1)
    a = rng.random((12, 17))
    for sigma, radius in ((2.0, 8), (1.3, 6)):
        got = gaussian_smooth(torch.from_numpy(a)[None], sigma)[0].double().numpy()
        np.testing.assert_allclose(got, ndi.gaussian_filter(a, sigma, mode="nearest", radius=radius), rtol=1e-5,
                                   atol=1e-6)
        assert not np.allclose(got, ndi.gaussian_filter(a, sigma, mode="constant", radius=radius), atol=1e-3)


def test_smoothing_moves_the_point_from_a_spike_to_a_broad_bump() -> None:
    """A spike of 10 at (15, 20) and a Gaussian bump of height 1 (σ_b = 6) at (70, 20) on a 41×100 original.
    Unsmoothed the spike wins; at σ = 0.02·max(41, 100) = 2 the spike falls to ≈ 10/(2π·4) ≈ 0.40 and the bump
    stays ≈ 36/40 = 0.9, so the point moves to the bump — σ from the short side (0.82) would keep the spike."""
    H, W = 41, 100
    yy, xx = np.mgrid[:H, :W]
    a = np.exp(-((xx - 70) ** 2 + (yy - 20) ** 2) / (2 * 36.0))
    a[20, 15] = 10.0
    mask = np.zeros((H, W), dtype=bool)
    mask[20, 70] = True
    maps = torch.from_numpy(a).float()[None]
    raw = play(maps, [mask])
    assert (raw["point_x"].item(), raw["point_y"].item(), raw["pointing_hit"].item()) == (15.0, 20.0, 0.0)
    smoothed = play(maps, [mask], smooth=0.02)
    assert (smoothed["point_x"].item(), smoothed["point_y"].item(), smoothed["pointing_hit"].item()) == (70, 20, 1)
    ref = ndi.gaussian_filter(a, 2.0, mode="nearest", truncate=4.0)
    assert np.unravel_index(np.argmax(ref), ref.shape) == (20, 70)
    short = ndi.gaussian_filter(a, 0.02 * H, mode="nearest", radius=math.ceil(4 * 0.02 * H))
    assert np.unravel_index(np.argmax(short), short.shape) == (20, 15)


# --- data-set accuracy, defaults, protocol --------------------------------------------------------------------------

def test_class_mean_and_pooled_accuracy_by_hand() -> None:
    """Class 0: 3 of 4 hits (75%), class 1: 1 of 2 (50%), class 2: no trials. Pooled 4/6 = 66.67%; class mean over
    the present classes (75 + 50)/2 = 62.5%, over 3 classes (TorchRay, empty class = 0) 125/3 = 41.67%."""
    hits = np.array([1, 1, 1, 0, 1, 0, np.nan])
    classes = np.array([0, 0, 0, 0, 1, 1, 2])  # the NaN trial (not evaluated) is dropped
    got = pointing_accuracy(hits, classes, num_classes=3)
    assert got == pytest.approx({"mean_class": 125 / 3, "pooled": 400 / 6, "n": 6})
    assert pointing_accuracy(hits, classes) == pytest.approx({"mean_class": 62.5, "pooled": 400 / 6, "n": 6})
    assert pointing_accuracy(np.array([1.0, 0.0]), np.array([90, 7])) == pytest.approx(
        {"mean_class": 50.0, "pooled": 50.0, "n": 2})
    with pytest.raises(UsageError):
        pointing_accuracy([0.5], [0])
    with pytest.raises(UsageError):
        pointing_accuracy([1.0], [3], num_classes=3)


def test_default_smooth_is_torchrays_for_gradient_type_maps_only() -> None:
    assert default_smooth("gradient") == 0.02 and default_smooth("guided_backprop") == 0.02
    assert default_smooth("gradcam") == 0.0 and default_smooth("jitter_cam") == 0.0
    assert {"gradient", "guided_backprop", "input_x_gradient", "smoothgrad", "deconvnet"} == SMOOTHED


def test_registry_run_equals_a_direct_call_and_bad_input_raises() -> None:
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(3, 7, 7, generator=g)
    x = torch.zeros(3, 3, 28, 28)
    masks = [np.zeros((40, 30), dtype=bool), np.ones((20, 25), dtype=bool), np.zeros((40, 30), dtype=bool)]
    masks[0][5:15, 3:9] = True
    metric = M.METRICS.get("pointing_game")
    assert metric.needs == ("masks",) and metric.per_sample_keys == ("pointing_hit", "point_x", "point_y")
    assert M.validate("pointing_game") == {"tolerance": 15.0, "smooth": 0.0}
    for kw in ({}, {"smooth": 0.02, "tolerance": 5.0}):
        via_run = M.run("pointing_game", None, x, maps, masks=masks, **kw)
        direct = pointing_game(None, x, maps, masks=masks, **kw)
        assert via_run.keys() == direct.keys()
        for k in direct:
            assert torch.equal(via_run[k], direct[k])
    assert via_run["pointing_hit"][1].item() == 1.0 and via_run["pointing_hit"][2].item() == 0.0  # full / empty
    bad = maps.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(None, x, bad, masks=masks)
    with pytest.raises(UsageError):
        pointing_game(None, x, maps, masks=masks[:2])
    with pytest.raises(UsageError):
        pointing_game(None, x, maps, masks=masks, tolerance=-1.0)
    with pytest.raises(SampleError):
        pointing_game(None, x, maps, masks=[*masks[:2], np.zeros((2, 3, 4), dtype=bool)])
