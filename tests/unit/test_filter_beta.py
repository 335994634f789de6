"""Grad-AMap → distributions → β end to end on a GAP + linear head (Hartley 2021, §6.2.1 eq 6.6, §6.2.5 eq 6.8):
``Σ_k α_k = (y^c − b_c)/Z`` exactly, so β = Σ_k α_k / K − const_c is an increasing affine function of the class logit
and the within-class Spearman(β, logit) is 1 on *any* data — here random inputs to a random network, with the
distributions taken from a disjoint "reference" batch through the real DuckDB reduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from xcore.filters import score
from xcore.filters.stats import filter_stats
from xcore.filters.surprise import ClassStats, beta_report, surprise


def gap_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).double()


def write_scores(path: Path, scores: torch.Tensor, labels: torch.Tensor) -> Path:
    table = pa.table({"label": pa.array(labels.tolist(), pa.int64()),
                      "scores": pa.array(scores.float().tolist(), pa.list_(pa.float32())),
                      "status": pa.array(["ok"] * len(labels))})
    pq.write_table(table, path)
    return path


def test_beta_is_affine_in_the_logit_so_its_within_class_spearman_is_one(tmp_path: Path) -> None:
    model = gap_net()
    g = torch.Generator().manual_seed(0)
    ref_x, ref_y = torch.randn(80, 3, 9, 9, generator=g, dtype=torch.float64), torch.arange(80) % 4
    x, y = torch.randn(60, 3, 9, 9, generator=g, dtype=torch.float64), torch.arange(60) % 4
    stats = ClassStats.from_table(filter_stats([write_scores(tmp_path / "ref.parquet",
                                                             score("gradamap", model, ref_x, ref_y, layer="3"),
                                                             ref_y)]), 4)
    alpha = score("gradamap", model, x, y, layer="3").double()
    with torch.no_grad():
        logit = model(x).gather(1, y[:, None]).squeeze(1)
    z = 9 * 9
    bias = model[-1].bias.detach()[y]
    # eq 6.6 on a GAP + linear head (scores are float32: tolerance of their rounding)
    assert torch.allclose(alpha.sum(1) * z, (logit - bias).detach(), rtol=0, atol=1e-6)
    res = surprise(alpha.numpy(), y.numpy(), stats)
    # eq 6.8: β = mean_n(α_n − μ_cn) = (y^c − b_c)/(Z K) − mean_n μ_cn
    expected = (logit - bias).numpy() / (z * 6) - stats.mean[y.numpy()].mean(1)
    assert np.allclose(res["beta"], expected, rtol=0, atol=1e-6)  # μ from float32-stored scores
    prob = torch.softmax(model(x), 1).gather(1, y[:, None]).squeeze(1).detach().numpy()
    rep = beta_report(res["beta"], y.numpy(), y.numpy(), logit.numpy(), prob)
    assert rep["spearman_logit"] == pytest.approx(1.0, abs=1e-12) and rep["classes_logit"] == 4
