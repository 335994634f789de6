"""Ray Train: two CPU workers (DDP over gloo) give the weights of one process training on the whole global batch."""

from __future__ import annotations

import functools
import sys

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from xcore.models.train import reproducible
from xcore.models.train_loop import Recipe, fit_dataset

pytestmark = pytest.mark.slow


class KeyedNoise(Dataset):
    """``n`` images 3×8×8 whose mean colour decides the label (i % 3); a key (epoch, i) adds a flip and noise
    seeded by (seed, epoch, i), so every rank and worker loads the same input for a key."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(99)
        self.y = [i % 3 for i in range(n)]
        self.x = torch.randn(n, 3, 8, 8, generator=gen) * 0.5 + torch.eye(3)[self.y][:, :, None, None]
        self.seed = seed

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        epoch, i = key
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + i)
        x = self.x[i].flip(-1) if float(torch.rand(1, generator=gen)) < 0.5 else self.x[i]
        return x + 0.1 * torch.randn(x.shape, generator=gen), self.y[i]


def build(n: int, seed: int) -> tuple[nn.Module, Dataset]:
    """Conv + ReLU + global average pooling + linear (no BatchNorm: its statistics would be per rank on CPUs)."""
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 3))
    return model, KeyedNoise(n, seed)


def test_two_workers_match_one_process(ray_session, tmp_path):
    from ray import cloudpickle

    from tasks.ray_train import fit_with_ray_train

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module

    # 22 samples in global batches of 7: each splits 4/3 over the two workers, the last one (1 sample) 1/0
    recipe = Recipe(epochs=2, batch_size=7, lr=0.1, weight_decay=1e-3, optimizer="sgd", schedule="onecycle")
    seed, make = 5, functools.partial(build, 22, 5)
    with reproducible(seed):
        model, data = make()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        fit_dataset(model, data, recipe, seed=seed)
    expected = model.state_dict()

    weights = fit_with_ray_train(make, recipe, seed=seed, num_workers=2, storage_path=str(tmp_path / "ray"))
    assert sorted(weights) == sorted(expected)
    for name, value in expected.items():
        assert not torch.allclose(value, initial[name], atol=1e-3)  # it trained
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6)
