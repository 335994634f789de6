"""ROAD noisy linear imputation: the sparse system against a hand-built dense one, exact refills of linear ramps,
the weighted neighbour mean, the border rule, per-channel masks and the noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xcore.metrics.imputation import linear_system, neighbour_weights, noisy_linear


def ramp(channels: int, height: int, width: int) -> torch.Tensor:
    """Channel ch = a_ch·r + b_ch·c + d_ch with distinct coefficients per channel."""
    r = torch.arange(height, dtype=torch.float64)[:, None]
    c = torch.arange(width, dtype=torch.float64)[None, :]
    return torch.stack([(0.3 + ch) * r - (0.7 * ch - 0.2) * c + (ch - 1.5) for ch in range(channels)]).float()


def dense_reference(x: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROAD system written out pixel by pixel (an independent construction of A and b)."""
    C, H, W = x.shape
    unknowns = [(r, c) for r in range(H) for c in range(W) if removed[r, c]]
    number = {p: i for i, p in enumerate(unknowns)}
    A = np.zeros((len(unknowns), len(unknowns)))
    b = np.zeros((len(unknowns), C))
    for i, (r, c) in enumerate(unknowns):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if (dr, dc) == (0, 0) or not (0 <= r + dr < H and 0 <= c + dc < W):
                    continue
                w = 1 / 6 if dr == 0 or dc == 0 else 1 / 12
                A[i, i] -= w
                if removed[r + dr, c + dc]:
                    A[i, number[(r + dr, c + dc)]] += w
                else:
                    b[i] -= w * x[:, r + dr, c + dc]
    return A, b


def test_neighbour_weights_are_roads() -> None:
    assert dict(neighbour_weights) == {(0, 1): 1 / 6, (0, -1): 1 / 6, (1, 0): 1 / 6, (-1, 0): 1 / 6,
                                       (1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12}
    assert math.isclose(sum(neighbour_weights.values()), 1.0)


def test_sparse_system_equals_the_dense_one_and_its_solution() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 16, 16))
    removed = rng.random((16, 16)) < 0.45
    removed[0, 0] = removed[15, 15] = removed[0, 9] = True  # corners and an edge among the unknowns
    A, b = linear_system(x, removed)
    A_ref, b_ref = dense_reference(x, removed)
    assert A.format == "csc" and A.shape == A_ref.shape == (removed.sum(), removed.sum())
    np.testing.assert_allclose(A.toarray(), A_ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(b, b_ref, rtol=0, atol=1e-14)
    # the values of x under the mask are never read
    x2 = x.copy()
    x2[:, removed] = 99.0
    np.testing.assert_array_equal(linear_system(torch.from_numpy(x2), torch.from_numpy(removed))[1], b)

    out = noisy_linear(torch.from_numpy(x), torch.from_numpy(removed), noise=0.0)
    expected = np.linalg.solve(A_ref, b_ref)  # (N, C), unknowns in flat order
    np.testing.assert_allclose(out.numpy()[:, removed].T, expected, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(out.numpy()[:, ~removed], x[:, ~removed])


def test_one_interior_hole_is_the_weighted_neighbour_mean() -> None:
    x = torch.arange(1, 50, dtype=torch.float32).reshape(1, 7, 7) ** 1.5
    removed = torch.zeros(7, 7, dtype=torch.bool)
    removed[3, 4] = True
    out = noisy_linear(x, removed, noise=0)
    n = x[0, 2:5, 3:6].double()
    mean = (n[0, 1] + n[2, 1] + n[1, 0] + n[1, 2]) / 6 + (n[0, 0] + n[0, 2] + n[2, 0] + n[2, 2]) / 12
    assert abs(out[0, 3, 4].item() - mean.item()) < 1e-4
    assert torch.equal(out[~removed[None]], x[~removed[None]])


def test_a_corner_hole_averages_its_three_in_image_neighbours() -> None:
    x = torch.tensor([[[9.0, 2.0, 5.0], [4.0, 8.0, 1.0], [7.0, 3.0, 6.0]]])
    removed = torch.zeros(3, 3, dtype=torch.bool)
    removed[0, 0] = True
    out = noisy_linear(x, removed, noise=0)
    assert abs(out[0, 0, 0].item() - (2 / 6 + 4 / 6 + 8 / 12) / (5 / 12)) < 1e-6  # = 4.0


def test_linear_ramp_is_refilled_exactly_inside_the_image() -> None:
    x = ramp(3, 12, 14)
    removed = torch.zeros(12, 14, dtype=torch.bool)
    removed[2:7, 3:9] = True  # a block
    removed[8:11, 10] = True  # a thin line
    removed[5, 12] = True  # a single pixel
    out = noisy_linear(x, removed, noise=0.0)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-4)
    assert out.dtype == x.dtype


def test_ramp_along_a_border_is_refilled_exactly_at_that_border() -> None:
    """At the border only in-image neighbours count: a ramp constant across the border is a solution."""
    H, W = 8, 10
    c = torch.arange(W, dtype=torch.float32)
    along_rows = (0.5 * c - 2.0).expand(H, W)[None]  # varies along the top / bottom edges only
    removed = torch.zeros(H, W, dtype=torch.bool)
    removed[0:2, 2:6] = True  # touches the top edge
    removed[6:8, 5:9] = True  # touches the bottom edge
    torch.testing.assert_close(noisy_linear(along_rows, removed, noise=0), along_rows, rtol=0, atol=1e-4)
    r = torch.arange(H, dtype=torch.float32)[:, None]
    along_cols = (1.5 * r + 0.25).expand(H, W)[None]
    removed = torch.zeros(H, W, dtype=torch.bool)
    removed[2:6, 0:3] = True  # touches the left edge
    removed[1:7, 8:10] = True  # touches the right edge
    torch.testing.assert_close(noisy_linear(along_cols, removed, noise=0), along_cols, rtol=0, atol=1e-4)


def test_per_channel_masks_solve_each_channel_on_its_own() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 9, generator=gen)
    masks = torch.zeros(3, 9, 9, dtype=torch.bool)
    masks[0, 2:5, 2:5] = True
    masks[1, 4:8, 1:3] = True
    masks[2] = masks[0]  # shares channel 0's factorisation
    out = noisy_linear(x, masks, noise=0)
    for ch in range(3):
        alone = noisy_linear(x[ch : ch + 1], masks[ch], noise=0)
        torch.testing.assert_close(out[ch : ch + 1], alone, rtol=0, atol=1e-6)
    # an (H, W) mask is the same as that mask in every channel
    torch.testing.assert_close(noisy_linear(x, masks[0], noise=0), noisy_linear(x, masks[0].expand(3, 9, 9), noise=0))


def test_nothing_removed_is_a_copy_and_everything_removed_is_zero_plus_noise() -> None:
    x = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    same = noisy_linear(x, torch.zeros(5, 5, dtype=torch.bool), noise=0.5)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    assert torch.equal(noisy_linear(x, torch.ones(5, 5, dtype=torch.bool), noise=0), torch.zeros_like(x))
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[1] = True  # channel 1 has no known value: 0; channel 0 untouched
    out = noisy_linear(x, masks, noise=0)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], torch.zeros(5, 5))


def test_noise_std_per_channel_and_seeded() -> None:
    x = torch.full((2, 64, 64), 0.7)  # constant image: the linear solution is 0.7 exactly, the rest is noise
    removed = torch.zeros(64, 64, dtype=torch.bool)
    removed[4:60, 4:60] = True
    out = noisy_linear(x, removed, noise=[0.05, 0.2], generator=torch.Generator().manual_seed(7))
    residual = (out - x)[:, removed]
    assert abs(residual[0].std().item() / 0.05 - 1) < 0.05 and abs(residual[1].std().item() / 0.2 - 1) < 0.05
    assert abs(residual[0].mean().item()) < 0.01 and abs(residual[1].mean().item()) < 0.02
    assert torch.equal(out[:, ~removed], x[:, ~removed])
    again = noisy_linear(x, removed, noise=[0.05, 0.2], generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, again)
    other = noisy_linear(x, removed, noise=[0.05, 0.2], generator=torch.Generator().manual_seed(8))
    assert not torch.equal(out, other)
    # with every pixel removed the same noise sits on 0
    zero = noisy_linear(x, torch.ones(64, 64, dtype=torch.bool), noise=0.1, generator=torch.Generator().manual_seed(7))
    assert abs(zero.std().item() / 0.1 - 1) < 0.05


def test_bad_inputs_raise() -> None:
    x = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="noise"):
        noisy_linear(x, torch.ones(4, 4, dtype=torch.bool), noise=-0.1)
    with pytest.raises(ValueError, match="noise"):
        noisy_linear(x, torch.ones(4, 4, dtype=torch.bool), noise=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="mask"):
        noisy_linear(x, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="C, H, W"):
        noisy_linear(torch.zeros(4, 4), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        linear_system(x, np.ones((3, 4), bool))
