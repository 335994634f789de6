"""The keyed data-parallel training loop: batch partition over ranks, the per-rank loss identity, one update by
hand, bit-for-bit reproducibility, evaluation counts and the recipe from checkpoint metadata."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from xcore.errors import UsageError
from xcore.models.train_loop import (
    GlobalBatchSampler,
    Recipe,
    evaluate_dataset,
    fit_dataset,
    rank_loss,
    rank_slice,
)


class KeyedShapes(Dataset):
    """``n`` fixed 3×6×6 images, label ``i % 3``; a key (epoch, i) adds a flip and noise seeded by (seed, epoch, i)."""

    def __init__(self, n: int, seed: int = 7) -> None:
        self.x = torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(1234))
        self.y = [i % 3 for i in range(n)]
        self.seed = seed
        self.keys: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        epoch, i = key
        self.keys.append(key)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + i)
        x = self.x[i].flip(-1) if float(torch.rand(1, generator=gen)) < 0.5 else self.x[i]
        return x + 0.1 * torch.randn(x.shape, generator=gen), self.y[i]


def tiny_net(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 3))


def test_rank_slice_is_array_split():
    for length in range(0, 12):
        for world in (1, 2, 3, 5):
            expected = np.array_split(np.arange(length), world)
            got = [list(range(length))[rank_slice(length, r, world)] for r in range(world)]
            assert got == [e.tolist() for e in expected]
    with pytest.raises(UsageError):
        rank_slice(4, 2, 2)


def test_global_batches_split_over_ranks():
    single = list(GlobalBatchSampler(22, 7, seed=3, epoch=1))
    perm = torch.randperm(22, generator=torch.Generator().manual_seed(3 * 1_000_003 + 1)).tolist()
    assert single == [[(1, i) for i in perm[lo:lo + 7]] for lo in (0, 7, 14, 21)]  # the short last batch is kept
    assert len(GlobalBatchSampler(22, 7, seed=3, epoch=1)) == 4
    parts = [list(GlobalBatchSampler(22, 7, seed=3, epoch=1, rank=r, world=3)) for r in range(3)]
    assert all(len(p) == 4 for p in parts)
    for b, batch in enumerate(single):
        assert parts[0][b] + parts[1][b] + parts[2][b] == batch  # the union, in rank order, is the global batch
    assert [[len(p[b]) for p in parts] for b in range(4)] == [[3, 2, 2], [3, 2, 2], [3, 2, 2], [1, 0, 0]]
    assert list(GlobalBatchSampler(22, 7, seed=3, epoch=2)) != single  # a new order every epoch
    assert list(GlobalBatchSampler(22, 7, seed=4, epoch=1)) != single
    sampler = GlobalBatchSampler(22, 7, seed=3, epoch=1, rank=2, world=3)
    assert [sampler.global_size(b) for b in range(4)] == [7, 7, 7, 1]


@pytest.mark.parametrize("split", [(3, 2, 2), (7, 0, 0), (5, 0, 2), (1, 1, 1, 1, 1, 1, 1)])
def test_rank_losses_average_to_the_mean_loss_gradient(split):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=gen, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    model = nn.Linear(5, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 5, generator=gen))
        model.bias.copy_(torch.randn(3, generator=gen))
    mean_grad = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    world, lo, summed = len(split), 0, [torch.zeros_like(p) for p in model.parameters()]
    for size in split:  # each "rank" on its slice, then DDP's average over ranks
        loss = rank_loss(model(x[lo:lo + size]), y[lo:lo + size], world, 7)
        for acc, g in zip(summed, torch.autograd.grad(loss, list(model.parameters())), strict=True):
            acc += g / world
        lo += size
    for got, want in zip(summed, mean_grad, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_one_sgd_step_is_the_mean_loss_gradient_step():
    data, model = KeyedShapes(10), tiny_net(0)
    before = [p.detach().clone() for p in model.parameters()]
    xs = torch.stack([data[(0, i)][0] for i in range(10)])
    ys = torch.tensor(data.y)
    loss = F.cross_entropy(model(xs), ys)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    recipe = Recipe(epochs=1, batch_size=16, lr=0.5, weight_decay=0.1, optimizer="sgd", momentum=0.0,
                    schedule="constant")
    summary = fit_dataset(model, data, recipe, seed=5)
    for p, p0, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * (g + 0.1 * p0), rtol=1e-5, atol=1e-6)
    assert summary["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)  # the loss before the update
    assert summary["steps"] == 1 and summary["world"] == 1 and summary["epoch"] == 1


def test_fit_dataset_is_reproducible_and_leaves_the_global_rng_alone():
    recipe = Recipe(epochs=2, batch_size=4, lr=0.05, weight_decay=5e-4)  # AdamW + one-cycle, a short last batch
    weights, calls = [], []
    for seed in (11, 11, 12):
        data, model = KeyedShapes(10), tiny_net(0)
        state = torch.get_rng_state()
        summary = fit_dataset(model, data, recipe, seed=seed, progress=calls.append)
        assert torch.equal(torch.get_rng_state(), state)
        assert summary["steps"] == 6
        assert sorted(set(data.keys)) == [(e, i) for e in (0, 1) for i in range(10)]
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed: bit for bit
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])  # the seed changes the order
    assert [c["epoch"] for c in calls] == [1, 2] * 3 and all(c["epochs"] == 2 for c in calls)
    assert all(np.isfinite(c["loss"]) and 0 <= c["train_accuracy"] <= 1 for c in calls)


def test_loader_workers_do_not_change_the_weights():
    recipe = Recipe(epochs=1, batch_size=4, lr=0.05, weight_decay=5e-4)
    models = [tiny_net(0), tiny_net(0)]
    for model, workers in zip(models, (0, 2), strict=True):
        fit_dataset(model, KeyedShapes(10), dataclasses.replace(recipe, loader_workers=workers), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(),
                                                  strict=True))


class ArgmaxProbe(nn.Module):
    """Predicts the class stored in the input's first value (one-hot logits)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.one_hot(x.flatten(1)[:, 0].round().long(), 3).float()


class Recorded(Dataset):
    def __init__(self, preds: list[int], labels: list[int]) -> None:
        self.preds, self.labels, self.keys = preds, labels, []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        self.keys.append(key)
        return torch.full((1, 2, 2), float(self.preds[key[1]])), self.labels[key[1]]


def test_evaluate_dataset_counts_in_key_order():
    data = Recorded(preds=[0, 1, 2, 2, 1, 0, 1], labels=[0, 1, 1, 2, 0, 0, 1])  # 5 of 7 right
    model = ArgmaxProbe().train()
    assert evaluate_dataset(model, data, batch_size=3) == (5, 7)
    assert data.keys == [(0, i) for i in range(7)] and not model.training
    assert evaluate_dataset(model, Recorded([2], [2]), batch_size=8) == (1, 1)


def test_recipe_from_meta_and_validation():
    meta = {"epochs": 20, "batch_size": 32, "lr": 2e-3, "weight_decay": 5e-4, "seed": 0, "n_train": 100}
    assert Recipe.from_meta(meta) == Recipe(epochs=20, batch_size=32, lr=2e-3, weight_decay=5e-4)
    r = Recipe.from_meta(meta, epochs=3, optimizer="sgd", loader_workers=2)
    assert (r.epochs, r.batch_size, r.lr, r.optimizer, r.schedule, r.loader_workers) == (3, 32, 2e-3, "sgd",
                                                                                            "onecycle", 2)
    assert Recipe.from_meta({"epochs": 1, "batch_size": 2, "lr": 0.1}, weight_decay=0.0).weight_decay == 0.0
    with pytest.raises(UsageError, match="weight_decay"):
        Recipe.from_meta({"epochs": 1, "batch_size": 2, "lr": 0.1})
    with pytest.raises(UsageError, match="unknown"):
        Recipe.from_meta(meta, momentom=0.5)
    for bad in ({"optimizer": "adam"}, {"schedule": "cosine"}, {"epochs": 0}, {"lr": 0.0}, {"loader_workers": -1}):
        with pytest.raises(UsageError):
            Recipe.from_meta(meta, **bad)
