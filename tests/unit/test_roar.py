"""ROAR / KAR degradation: hand-computed selections (ties, truncation, both rankings), the KAR–ROAR complement,
Hooker et al.'s value saliency, the random and oracle baselines and the curve areas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xcore.metrics.imputation import noisy_linear
from xcore.metrics.roar import curve_auc, degrade, iid_selection, oracle_map, reference_saliency, select


def flat_set(selected: torch.Tensor) -> set[int]:
    return set(torch.flatten(selected).nonzero().flatten().tolist())


def tie_map() -> torch.Tensor:
    """8×8: 5 at flat 63, ties of 3 at flat 3, 18, 41, −2 at flat 0, zeros elsewhere."""
    m = torch.zeros(8, 8)
    m[7, 7] = 5
    m[0, 3] = m[2, 2] = m[5, 1] = 3
    m[0, 0] = -2
    return m


def channel_map() -> torch.Tensor:
    """(1, 2, 2, 2): squares ch0 [[1, 9], [0, 4]], ch1 [[9, 0], [1, 4]]. In (H, W, C) flat order the squares are
    [1, 9, 9, 0, 0, 1, 4, 4] at indices 0..7 (index = (r·W + c)·C + ch)."""
    return torch.tensor([[[[1.0, -3.0], [0.0, 2.0]], [[3.0, 0.0], [-1.0, -2.0]]]])


def test_pixel_ranking_is_the_raw_signed_map_with_ties_to_the_lower_index() -> None:
    maps = tie_map()[None]
    # k = int(0.1 · 64) = 6: the 5, the three 3s in flat order, then the first zeros (flat 1, 2; flat 0 is −2)
    assert flat_set(select(maps, 0.1)) == {63, 3, 18, 41, 1, 2}
    assert flat_set(select(maps, 3 / 64)) == {63, 3, 18}
    assert flat_set(select(maps, 2 / 64)) == {63, 3}  # the tie at 3 is cut at the lower index
    assert flat_set(select(maps, 63 / 64)) == set(range(1, 64))  # the negative pixel comes last
    assert select(maps, 0.1).shape == (1, 8, 8)


def test_k_is_the_truncated_float_product() -> None:
    maps = torch.randn(2, 10, 10, generator=torch.Generator().manual_seed(0))
    assert select(maps, 0.29).sum(dim=(1, 2)).tolist() == [28, 28]  # 0.29 · 100 = 28.999999999999996
    assert select(maps, 0.57).sum(dim=(1, 2)).tolist() == [56, 56]
    values = torch.randn(1, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    assert select(values, 0.29, ranking="value").sum().item() == int(0.29 * 60) == 17


def test_value_ranking_flattens_in_hwc_order() -> None:
    maps = channel_map()

    def units(fraction: float) -> set[tuple[int, int, int]]:  # selected (ch, r, c)
        return {tuple(i) for i in select(maps, fraction, ranking="value")[0].nonzero().tolist()}

    # the two 9s tie: (r0, c0, ch1) is HWC index 1, (r0, c1, ch0) is index 2 (in CHW order it would be the other)
    assert units(1 / 8) == {(1, 0, 0)}
    assert units(2 / 8) == {(1, 0, 0), (0, 0, 1)}
    assert units(4 / 8) == {(1, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)}  # + both 4s (m = ±2 tie)
    assert units(5 / 8) == units(4 / 8) | {(0, 0, 0)}  # the 1s tie: HWC 0 before HWC 5
    assert units(1.0) == {(ch, r, c) for ch in range(2) for r in range(2) for c in range(2)}


def test_reference_saliency_numbers() -> None:
    s = reference_saliency(channel_map())
    squares = torch.tensor([[[[1.0, 9.0], [0.0, 4.0]], [[9.0, 0.0], [1.0, 4.0]]]])
    torch.testing.assert_close(s, squares / 9 + 1e-5, rtol=0, atol=1e-7)
    # per-sample scaling; a constant sample divides by 1e-5 and lands on 1e-5
    two = torch.stack([torch.tensor([[2.0, -4.0]]), torch.full((1, 2), 3.0)])
    torch.testing.assert_close(reference_saliency(two), torch.tensor([[[1e-5, 1 + 1e-5]], [[1e-5, 1e-5]]]))


def test_degrade_keeps_zero_and_replaces_everything_at_one() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    maps = torch.randn(2, 8, 8, generator=gen)
    original = x.clone()
    for ranking in ("pixel", "value"):
        r0 = degrade(x, maps, 0.0, ranking=ranking)
        assert torch.equal(r0, x) and r0.data_ptr() != x.data_ptr() and r0.dtype == torch.float64
        assert torch.equal(degrade(x, maps, 1.0, ranking=ranking), torch.zeros_like(x))
        assert torch.equal(degrade(x, maps, 0.0, mode="kar", ranking=ranking), torch.zeros_like(x))
        assert torch.equal(degrade(x, maps, 1.0, mode="kar", ranking=ranking), x)
    assert torch.equal(x, original)


def test_pixel_degradation_replaces_every_channel_of_the_selected_locations() -> None:
    x = torch.arange(1, 1 + 3 * 64, dtype=torch.float32).reshape(1, 3, 8, 8)
    out = degrade(x, tie_map()[None], 0.1)
    zeroed = {i for i in range(64) if (out[0, :, i // 8, i % 8] == 0).all()}
    assert zeroed == {63, 3, 18, 41, 1, 2}
    kept = torch.ones(8, 8, dtype=torch.bool)
    for i in zeroed:
        kept[i // 8, i % 8] = False
    assert torch.equal(out[0][:, kept], x[0][:, kept])


def test_kar_is_the_complement_of_roar() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 10, 10, generator=gen)
    for ranking, maps in (("pixel", torch.randn(3, 10, 10, generator=gen)),
                          ("value", torch.randn(3, 3, 10, 10, generator=gen))):
        for t in (0.1, 0.29, 0.5, 0.9):
            roar = degrade(x, maps, t, ranking=ranking)
            kar = degrade(x, maps, t, mode="kar", ranking=ranking)
            assert torch.equal(roar + kar, x)  # each value is kept by exactly one of them, the other holds 0
            assert torch.equal((roar == 0) | (kar == 0), torch.ones_like(x, dtype=torch.bool))


def test_value_ranking_broadcasts_a_spatial_map_to_every_channel() -> None:
    x = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(4))
    m = torch.tensor([[[3.0, 1.0], [-3.0, 0.5]]])
    out = degrade(x, m, 3 / 8, ranking="value")  # squares 9, 9 at (0,0) and (1,0): HWC 0, 1, 4, 5; k = 3
    replaced = {tuple(i) for i in (out[0] != x[0]).nonzero().tolist()}
    assert replaced == {(0, 0, 0), (1, 0, 0), (0, 1, 0)}


def test_iid_selection_fraction_and_seed() -> None:
    s = iid_selection((4, 64, 64), 0.3, torch.Generator().manual_seed(5))
    assert s.dtype == torch.bool and s.shape == (4, 64, 64)
    assert abs(s.float().mean().item() - 0.3) < 0.02
    assert torch.equal(s, iid_selection((4, 64, 64), 0.3, torch.Generator().manual_seed(5)))
    assert not iid_selection((2, 5, 5), 0.0, None).any() and iid_selection((2, 5, 5), 1.0, None).all()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    kar = degrade(x, None, 0.3, mode="kar", selected=s)  # a precomputed selection replaces the ranking
    assert torch.equal(kar, x * s[:, None])


def test_noisy_linear_degradation_is_roads_imputation_per_sample() -> None:
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 9, 9, generator=gen)
    maps = torch.randn(2, 9, 9, generator=gen)
    out = degrade(x, maps, 0.4, imputation="noisy_linear", noise=[0.1, 0.2, 0.3],
                  generator=torch.Generator().manual_seed(9))
    chosen = select(maps, 0.4)
    ref_gen = torch.Generator().manual_seed(9)
    for b in range(2):
        ref = noisy_linear(x[b], chosen[b], noise=[0.1, 0.2, 0.3], generator=ref_gen)
        assert torch.equal(out[b], ref)
    assert torch.equal(out[:, :, ~chosen[0]][0], x[0][:, ~chosen[0]])
    # a ramp with interior holes comes back exactly without noise
    r = torch.arange(9.0)[:, None]
    ramp = (0.4 * r - 0.1 * torch.arange(9.0)[None] + 1).expand(1, 3, 9, 9)
    interior = torch.zeros(1, 9, 9)
    interior[0, 2:7, 2:7] = 1 + torch.arange(25.0).reshape(5, 5)
    refill = degrade(ramp, interior, 20 / 81, imputation="noisy_linear", noise=0)
    torch.testing.assert_close(refill, ramp, rtol=0, atol=1e-5)


def test_oracle_map_ranks_the_object_deepest_first_then_the_nearest_background() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    s = math.sqrt(2)
    expected = torch.tensor([[-s, -1, -1, -1, -s], [-1, 1, 1, 1, -1], [-1, 1, 2, 1, -1],
                             [-1, 1, 1, 1, -1], [-s, -1, -1, -1, -s]], dtype=torch.float32)
    om = oracle_map(mask)
    assert om.dtype == torch.float32
    torch.testing.assert_close(om, expected)
    torch.testing.assert_close(oracle_map(torch.from_numpy(mask)), expected)
    assert flat_set(select(om[None], 1 / 25)) == {12}  # the centre
    assert flat_set(select(om[None], 9 / 25)) == {i for i in range(25) if mask.flat[i]}  # the whole object
    assert flat_set(select(om[None], 21 / 25)) == set(range(25)) - {0, 4, 20, 24}  # then the edge-adjacent pixels
    with pytest.raises(ValueError, match="empty"):
        oracle_map(np.zeros((4, 4), bool))
    full = oracle_map(np.ones((3, 3), bool))  # no background: distance to outside the image
    torch.testing.assert_close(full, torch.tensor([[1.0, 1, 1], [1, 2, 1], [1, 1, 1]]))


def test_curve_auc_rules() -> None:
    assert curve_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert curve_auc([0, 0.5, 1], [1, 0.5, 0], rule="uniform") == pytest.approx(0.5)
    fractions, values = [0, 0.1, 0.5, 1], [1, 0.8, 0.4, 0]
    assert curve_auc(fractions, values) == pytest.approx(0.1 * 1.8 / 2 + 0.4 * 1.2 / 2 + 0.5 * 0.4 / 2)  # 0.43
    assert curve_auc(fractions, values, rule="uniform") == pytest.approx((2.2 - 0.5 - 0) / 3)
    assert curve_auc(torch.tensor([0.1, 0.3, 0.5]), torch.tensor([0.9, 0.7, 0.2])) == pytest.approx(0.25)
    for bad in (([0.0], [1.0]), ([0, 1], [1, 0, 0]), ([0.5, 0.1], [1, 0])):
        with pytest.raises(ValueError):
            curve_auc(*bad)
    with pytest.raises(ValueError, match="rule"):
        curve_auc([0, 1], [1, 0], rule="simpson")  # type: ignore[arg-type]


def test_bad_arguments_raise() -> None:
    x, maps = torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4)
    for t in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            degrade(x, maps, t)
    with pytest.raises(ValueError, match="mode"):
        degrade(x, maps, 0.5, mode="remove")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imputation"):
        degrade(x, maps, 0.5, imputation="blur")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maps"):
        degrade(x, torch.zeros(1, 3, 4, 4), 0.5)  # pixel ranking takes (B, H, W)
    with pytest.raises(ValueError, match="maps or selected"):
        degrade(x, None, 0.5)
    with pytest.raises(ValueError, match="selected"):
        degrade(x, None, 0.5, selected=torch.zeros(1, 4, 4))  # not bool
    with pytest.raises(ValueError, match="NaN"):
        select(torch.full((1, 4, 4), float("nan")), 0.5)
