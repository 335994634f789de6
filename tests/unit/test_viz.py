"""Normalisation is a separate step: exact values for each rule, constant maps to zero."""

from __future__ import annotations

import torch

from xcore.viz import normalise, save_overlay


def test_minmax_abs_max_and_constant_maps() -> None:
    m = torch.tensor([[[-2.0, 0.0], [2.0, 6.0]], [[3.0, 3.0], [3.0, 3.0]]])
    assert torch.equal(normalise(m)[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(normalise(m)[1], torch.zeros(2, 2))
    assert torch.allclose(normalise(m, "abs_max")[0], torch.tensor([[-1 / 3, 0.0], [1 / 3, 1.0]]))


def test_percentile_clips_outliers() -> None:
    m = torch.arange(101, dtype=torch.float32)[None]
    out = normalise(m, "percentile", percentile=50)
    assert out[0, 25].item() == 0.5 and out[0, 100].item() == 1.0 and out[0, 50].item() == 1.0


def test_overlay_writes_a_png(tmp_path) -> None:
    p = save_overlay(tmp_path / "a.png", torch.rand(8, 8, 3).numpy(), torch.rand(8, 8), title="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
