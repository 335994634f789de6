"""A data-parallel training loop over a keyed map-style dataset: one process, or one rank of a DDP group.

The loop is what a ROAR / KAR retraining runs: the same architecture trained from scratch on the degraded
training set, then its test accuracy measured (Hooker et al. 2019, *A Benchmark for Interpretability Methods in
Deep Neural Networks*, google-research/google-research interpretability_benchmark; Hartley, *An Investigation into
Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021, §3.5.2). Unlike the
in-memory trainer (:func:`xcore.models.train.fit`), the weights it produces do not depend on how many processes
share the work (up to float summation order).

- The dataset is indexed by a KEY ``(epoch, index)`` and returns ``(x: Tensor (C, H, W) float, y: int)``; it seeds
  its own augmentation with ``(seed, epoch, index)``, so a sample's input does not depend on which worker or rank
  loads it.
- :class:`GlobalBatchSampler` cuts one seeded permutation per epoch into GLOBAL batches of ``recipe.batch_size``
  and hands each rank a contiguous slice of every global batch.
- Each rank's loss is ``sum(cross_entropy per sample) * world / len(global batch)`` (:func:`rank_loss`). DDP
  averages the ranks' gradients, so the update is the gradient of the mean loss over the global batch: the same
  as one process on the whole batch, for any split (also an empty slice of a short last batch).

A sample whose label is :data:`IGNORE` (-1: a sample the dataset could not produce) adds nothing to the loss,
the training accuracy or the test accuracy. A loss that is not finite raises ``FloatingPointError``.

Nothing here draws from the global RNGs (the sampler and the DataLoader get their own generators); the model's
initialisation is the caller's business (e.g. inside :func:`xcore.models.train.reproducible`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data import default_collate as _default_collate

from xcore.errors import UsageError

Key = tuple[int, int]
IGNORE = -1  # the label of a sample to leave out (cross_entropy's ignore_index)
Progress = Callable[[dict[str, Any]], None]
# seed and epoch -> the permutation generator's seed: seed * SEED_STRIDE + epoch (mod 2**63), so seeds s and s + 1
# share no epoch's permutation for the first million epochs.
SEED_STRIDE = 1_000_003
PCT_START = 0.15  # the one-cycle warm-up share, as in xcore.models.train.fit


@dataclass(frozen=True)
class Recipe:
    """How to train: ``epochs``, the GLOBAL ``batch_size`` (summed over ranks), the peak ``lr``, ``weight_decay``,
    the ``optimizer`` ("adamw", or "sgd" with ``momentum``), the ``schedule`` ("onecycle": OneCycleLR with
    max_lr=lr over every step, pct_start 0.15, as :func:`xcore.models.train.fit`; "constant": lr throughout) and
    the DataLoader's ``loader_workers`` (0: load in the training process)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    schedule: Literal["onecycle", "constant"] = "onecycle"
    loader_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError(f"epochs and batch_size must be at least 1, not {self.epochs} and {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or self.momentum < 0:
            raise UsageError(f"need lr > 0, weight_decay >= 0, momentum >= 0; got {self.lr}, {self.weight_decay}, "
                             f"{self.momentum}")
        if self.optimizer not in ("adamw", "sgd"):
            raise UsageError(f"optimizer must be 'adamw' or 'sgd', not {self.optimizer!r}")
        if self.schedule not in ("onecycle", "constant"):
            raise UsageError(f"schedule must be 'onecycle' or 'constant', not {self.schedule!r}")
        if self.loader_workers < 0:
            raise UsageError(f"loader_workers must be at least 0, not {self.loader_workers}")

    @classmethod
    def from_meta(cls, meta_train: Mapping[str, Any], **overrides: Any) -> Recipe:
        """The recipe of a checkpoint: ``epochs``, ``batch_size``, ``lr`` and ``weight_decay`` from its
        ``metadata["train"]`` (as :func:`xcore.models.train.train_model` writes it), then ``overrides`` (any
        field). A missing key that no override supplies raises UsageError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UsageError(f"unknown recipe field(s) {unknown}; fields are {sorted(names)}")
        base = ("epochs", "batch_size", "lr", "weight_decay")
        missing = [k for k in base if k not in meta_train and k not in overrides]
        if missing:
            raise UsageError(f"the training metadata lacks {missing} (keys: {sorted(meta_train)})")
        kinds = {"epochs": int, "batch_size": int, "lr": float, "weight_decay": float}
        values: dict[str, Any] = {k: kinds[k](meta_train[k]) for k in base if k in meta_train}
        return cls(**{**values, **overrides})


def rank_slice(length: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous part of ``length`` items split over ``world`` ranks as ``np.array_split`` does:
    the first ``length % world`` ranks get one item more."""
    if not 0 <= rank < world:
        raise UsageError(f"rank {rank} outside a world of {world}")
    size, extra = divmod(length, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


class GlobalBatchSampler(Sampler[list[Key]]):
    """One epoch of global batches, this rank's slice of each, as keys ``(epoch, index)``.

    The order is ``torch.randperm(n)`` drawn from ``torch.Generator().manual_seed((seed * 1000003 + epoch) %
    2**63)``; it is cut into global batches of ``batch_size`` (the last one shorter, never dropped), and each is
    split over ``world`` ranks by :func:`rank_slice` (possibly empty for a short last batch). With ``world=1`` a
    batch is the whole global batch. Every rank draws the same permutation, so the union of the ranks' slices of
    a global batch, in rank order, is the single-rank batch.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int = 0, rank: int = 0, world: int = 1) -> None:
        if n < 1 or batch_size < 1 or world < 1:
            raise UsageError(f"need n, batch_size and world >= 1; got {n}, {batch_size}, {world}")
        rank_slice(0, rank, world)  # validates the rank
        self.n, self.batch_size, self.seed, self.epoch, self.rank, self.world = n, batch_size, seed, epoch, rank, world

    def permutation(self) -> list[int]:
        """The epoch's order of the ``n`` indices (the same on every rank)."""
        gen = torch.Generator().manual_seed((self.seed * SEED_STRIDE + self.epoch) % 2**63)
        return torch.randperm(self.n, generator=gen).tolist()

    def global_size(self, batch: int) -> int:
        """The length of global batch ``batch`` (``batch_size`` except for a short last one)."""
        return min(self.batch_size, self.n - batch * self.batch_size)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[Key]]:
        order = self.permutation()
        for lo in range(0, self.n, self.batch_size):
            batch = order[lo:lo + self.batch_size]
            yield [(self.epoch, i) for i in batch[rank_slice(len(batch), self.rank, self.world)]]


def rank_loss(logits: Tensor, y: Tensor, world: int, global_size: int) -> Tensor:
    """``sum_i cross_entropy(logits_i, y_i) * world / global_size``: averaged over ``world`` ranks (DDP's gradient
    reduction), the gradients are those of the mean cross-entropy over the global batch of ``global_size``."""
    return F.cross_entropy(logits, y, reduction="sum", ignore_index=IGNORE) * (world / global_size)


def _collate(batch: list[Any]) -> Any:
    """The default collation; None for a rank's empty slice of a short last batch."""
    return _default_collate(batch) if batch else None


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _optimizer(params: Any, recipe: Recipe, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    if recipe.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    sched = None
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total_steps,
                                                    pct_start=PCT_START)
    return opt, sched


def _loader(dataset: Dataset, batch_sampler: Any, workers: int, seed: int) -> DataLoader:
    # an own generator: the DataLoader draws its workers' base seed from it instead of the global RNG
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=_collate,
                      generator=torch.Generator().manual_seed(seed % 2**63))


def fit_dataset(model: nn.Module, dataset: Dataset, recipe: Recipe, *, seed: int, device: str = "cpu",
                progress: Progress | None = None) -> dict[str, Any]:
    """Train ``model`` in place on the keyed ``dataset`` with ``recipe``; returns the last epoch's summary.

    Under an initialised ``torch.distributed`` group of world size w > 1 the model is wrapped in DDP (CUDA:
    ``device_ids=[device index]``; CPU/gloo: none) and this rank trains on its slice of every global batch with
    :func:`rank_loss`; otherwise the whole batch. ``device`` is where the model and batches go. ``seed`` fixes
    the batch order (:class:`GlobalBatchSampler`); the dataset's own seed decides its augmentation.
    ``progress`` (rank 0 only) gets ``epoch``, ``epochs``, ``loss``, ``train_accuracy`` and ``seconds`` after
    each epoch. Returns those of the last epoch plus ``steps`` and ``world``; loss and accuracy are over all
    ranks' samples (one all-reduce per epoch), computed on the batches as trained (before each update).
    """
    started = time.perf_counter()
    rank, world = _world()
    n = len(dataset)  # type: ignore[arg-type]
    model.to(device)
    net: nn.Module = model
    if world > 1:
        dev = torch.device(device)
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    steps_per_epoch = -(-n // recipe.batch_size)
    opt, sched = _optimizer(net.parameters(), recipe, recipe.epochs * steps_per_epoch)
    template: tuple[Tensor, Tensor] | None = None  # an empty batch of the right shape for an empty slice
    summary: dict[str, Any] = {}
    for epoch in range(recipe.epochs):
        net.train()
        sampler = GlobalBatchSampler(n, recipe.batch_size, seed=seed, epoch=epoch, rank=rank, world=world)
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, samples
        for b, batch in enumerate(_loader(dataset, sampler, recipe.loader_workers, seed * SEED_STRIDE + epoch)):
            if batch is None:
                if template is None:
                    x0, y0 = _default_collate([dataset[(epoch, 0)]])
                    template = x0[:0], y0[:0]
                batch = template
            x, y = batch[0].to(device), batch[1].to(device)
            if template is None:
                template = batch[0][:0], batch[1][:0]
            logits = net(x)
            loss = rank_loss(logits, y, world, sampler.global_size(b))
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"training loss is not finite in epoch {epoch + 1}, batch {b + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            with torch.no_grad():
                totals += torch.stack([F.cross_entropy(logits, y, reduction="sum", ignore_index=IGNORE).double(),
                                       (logits.argmax(1) == y).sum().double(), (y != IGNORE).sum().double()])
        if world > 1:
            torch.distributed.all_reduce(totals)
        loss_sum, correct, count = totals.tolist()
        summary = {"epoch": epoch + 1, "epochs": recipe.epochs, "loss": loss_sum / max(count, 1),
                   "train_accuracy": correct / max(count, 1), "samples": int(count),
                   "seconds": time.perf_counter() - started}
        if progress is not None and rank == 0:
            progress(dict(summary))
    return {**summary, "steps": recipe.epochs * steps_per_epoch, "world": world}


@torch.no_grad()
def evaluate_dataset(model: nn.Module, dataset: Dataset, *, batch_size: int, device: str = "cpu",
                     workers: int = 0) -> tuple[int, int]:
    """``(correct, count)`` of ``model`` in eval mode over the keys ``(0, i)``, i = 0 .. len(dataset) - 1, in
    order, ``batch_size`` at a time, loaded by ``workers`` DataLoader workers; the top-1 prediction counts; samples
    labelled :data:`IGNORE` are not counted."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    n = len(dataset)  # type: ignore[arg-type]
    batches = [[(0, i) for i in range(lo, min(lo + batch_size, n))] for lo in range(0, n, batch_size)]
    model.to(device).eval()
    correct = count = 0
    for x, y in _loader(dataset, batches, workers, 0):
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        count += int((y != IGNORE).sum())
    return correct, count
