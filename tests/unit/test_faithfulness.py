"""Average Drop / Increase in Confidence (thesis §5.4.2, eqs 5.4–5.6) against hand values on a two-image toy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xcore.explain as E
from xcore.errors import UsageError
from xcore.metrics import METRICS
from xcore.metrics.faithfulness import average_drop_increase, faithfulness


class SumNet(nn.Module):
    """Two logits: ``(Σ x, 0)``, so ``p_0 = sigmoid(Σ x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


X = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]], [[[0.5, 0.5], [-2.0, 1.0]]]], dtype=torch.float64)
MAPS = torch.tensor([[[0.0, 2.0], [4.0, 1.0]], [[5.0, 5.0], [5.0, 1.0]]], dtype=torch.float64)


def test_confidences_equal_hand_values_for_both_multiplications() -> None:
    out = faithfulness(SumNet(), X, MAPS, [0, 0])
    # L = minmax(map): sample 0 -> [0, .5, 1, .25] (Σ L·x = 0 + 1 + 3 - .25 = 3.75); sample 1 -> [1, 1, 1, 0] (-1)
    assert out["confidence"].tolist() == pytest.approx([sig(5.0), sig(0.0)], abs=1e-6)  # float32 softmax
    assert out["masked_confidence"].tolist() == pytest.approx([sig(3.75), sig(-1.0)], abs=1e-6)  # float32 softmax
    raw = faithfulness(SumNet(), X, MAPS, [0, 0], multiply="raw", mean=[0.5], std=[2.0])
    # image = 2x + .5; E = (L·image − .5)/2: sample 0 Σ = (0 + .5·4.5 + 6.5 + .25·(−1.5) − 2)/2 = 3.1875
    assert raw["masked_confidence"][0].item() == pytest.approx(sig(3.1875), abs=1e-6)  # float32 softmax
    with pytest.raises(UsageError):
        faithfulness(SumNet(), X, MAPS, multiply="bogus")


def test_average_drop_and_increase_in_confidence_by_hand() -> None:
    y = torch.tensor([0.8, 0.5, 0.4, 0.9])
    o = torch.tensor([0.4, 0.6, 0.4, 0.95])
    got = average_drop_increase(y, o)
    assert got["AD"] == pytest.approx(100 * (0.4 / 0.8) / 4)  # only the first sample drops
    assert got["IIC"] == pytest.approx(50.0)  # strict: the equal third sample is no increase
    assert got["n_increase"] == 2 and got["mean_increase"] == pytest.approx((0.1 + 0.05) / 2, abs=1e-7)


def test_the_constant_baseline_keeps_almost_all_of_the_input() -> None:
    """0.9 everywhere after min–max except one 1 and one 0 (§5.4.2): the masked input is 0.9·x but two pixels."""
    x = torch.randn(3, 3, 8, 8)
    maps = E.run("constant", nn.Identity(), x, seeds=[1, 2, 3])
    flat = maps.flatten(1)
    assert ((flat == 0.9).sum(1) == 62).all() and (flat.amax(1) == 1).all() and (flat.amin(1) == 0).all()
    assert METRICS.get("faithfulness").per_sample_keys == ("confidence", "masked_confidence")
