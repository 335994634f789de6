"""What an explanation is *of*: a class index per sample, or a scalar function of the model output.

The same :class:`Target` serves explainers (the score to differentiate) and metrics (the score to track while the
input is perturbed), so it lives below both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

TargetFn = Callable[[Tensor], Tensor]
TargetLike = int | TargetFn
Targets = Sequence[TargetLike] | Tensor | TargetFn | None


class Target:
    """What each sample's explanation is *of*: a class index or a scalar function of the model output.

    ``Target.of(targets, batch)`` accepts
    - ``None``: the class predicted on the clean input (resolved lazily from the first forward);
    - a sequence / 1-D tensor with one entry per sample, each an ``int`` class or a callable
      ``f(output[i:i+1]) -> Tensor`` of one scalar (regression-like targets);
    - one callable ``f(output) -> Tensor(B,)`` applied to the whole batch.
    A length that differs from the batch raises ``ValueError``.
    """

    def __init__(self, classes: Tensor | None, fns: list[TargetFn | None] | None,
                 batch_fn: TargetFn | None) -> None:
        self._classes = classes
        self._fns = fns
        self._batch_fn = batch_fn

    @classmethod
    def of(cls, targets: Targets, batch: int) -> Target:
        if isinstance(targets, Target):
            return targets
        if targets is None:
            return cls(None, None, None)
        if callable(targets) and not isinstance(targets, Tensor):
            return cls(None, None, targets)
        if isinstance(targets, Tensor):
            if targets.ndim != 1 or targets.dtype.is_floating_point:
                raise ValueError("targets tensor must be 1-D integer class indices")
            items: list[TargetLike] = [int(t) for t in targets.tolist()]
        else:
            items = list(targets)
        if len(items) != batch:
            raise ValueError(f"got {len(items)} targets for a batch of {batch} samples")
        if all(isinstance(t, int) or (hasattr(t, "__index__") and not callable(t)) for t in items):
            return cls(torch.tensor([int(t) for t in items], dtype=torch.long), None, None)
        fns: list[TargetFn | None] = []
        classes = []
        for t in items:
            if callable(t):
                fns.append(t)
                classes.append(-1)
            else:
                fns.append(None)
                classes.append(int(t))
        return cls(torch.tensor(classes, dtype=torch.long), fns, None)

    @property
    def is_class(self) -> bool:
        """True when every sample targets a class index (possibly the predicted one)."""
        return self._batch_fn is None and self._fns is None

    @property
    def resolved(self) -> bool:
        """False only for a predicted-class target whose classes no forward has fixed yet."""
        return not (self.is_class and self._classes is None)

    def tile(self, k: int) -> Target:
        """This target for the batch tiled ``k`` times along dim 0 (row ``j·B + i`` is sample ``i``).

        A predicted-class target must be :attr:`resolved` first (on the clean input), else the tiled batch's
        first forward would fix the classes from perturbed copies.
        """
        if not self.resolved:
            raise ValueError("resolve the predicted classes on the clean input before tiling the target")
        batch_fn = self._batch_fn
        if batch_fn is not None:
            return Target(None, None, lambda out: torch.cat([batch_fn(o).reshape(-1) for o in out.chunk(k)]))
        assert self._classes is not None
        return Target(self._classes.repeat(k), None if self._fns is None else self._fns * k, None)

    def classes(self, output: Tensor) -> Tensor:
        """Class indices (B,) on ``output``'s device; the predicted class where none was given."""
        if not self.is_class:
            raise TypeError("this target is a function of the output, not a class index")
        if self._classes is None:
            self._classes = output.detach().argmax(dim=1).cpu()
        return self._classes.to(output.device)

    def select(self, output: Tensor, *, softmax: bool = False) -> Tensor:
        """The explained scalar per sample, shape (B,): ``y^c`` (or ``softmax(y)_c``), or the target function."""
        if self._batch_fn is not None:
            out = self._batch_fn(output)
            return out.reshape(output.shape[0])
        scores = output.softmax(dim=1) if softmax else output
        if self._fns is None:
            return scores.gather(1, self.classes(output)[:, None]).squeeze(1)
        assert self._classes is not None
        picked = []
        for i, fn in enumerate(self._fns):
            picked.append(fn(output[i : i + 1]).reshape(()) if fn is not None else scores[i, self._classes[i]])
        return torch.stack(picked)


def stable_seed(seed: int, index: int) -> int:
    """Per-sample seed for seeded methods and targets: independent of batching and sharding."""
    return (int(seed) * 1_000_003 + int(index)) % (2**31 - 1)


def random_target(seed: int, index: int, pred: int, num_classes: int) -> int:
    """A uniformly random class other than ``pred`` (thesis §3.6.4, Table 3.5), seeded by the run seed and the
    sample index (so the same for any batching or sharding)."""
    gen = torch.Generator().manual_seed(stable_seed(seed + 7919, index))
    k = int(torch.randint(num_classes - 1, (1,), generator=gen))
    return k + int(k >= pred)
