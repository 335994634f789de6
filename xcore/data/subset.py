"""An evenly spaced subset of a dataset: what a short run (the ten-minute demo, a smoke test) evaluates.

``Spread(dataset, n)`` keeps the samples ``floor(k·N/n)`` for k = 0..n−1 of a dataset of N samples, so every part of
the split (in the synthetic sets: every class, which readers list in turn or in blocks) is represented, and
the same n always selects the same samples.
"""

from __future__ import annotations

from typing import Any

from xcore.data.base import Dataset, Sample


def spread_indices(total: int, n: int) -> list[int]:
    """``n`` evenly spaced indices of ``range(total)`` (all of them when ``n >= total``)."""
    if n >= total:
        return list(range(total))
    return [k * total // n for k in range(n)]


class Spread:
    """The :class:`~xcore.data.base.Dataset` of ``n`` evenly spaced samples of ``dataset`` (position k reads sample
    :func:`spread_indices` [k]); every other attribute is the wrapped reader's."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        if n < 1:
            raise ValueError(f"a subset needs at least one sample, not {n}")
        self.inner = dataset
        self.indices = spread_indices(len(dataset), n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"Spread({self.inner!r}, n={len(self)})"

    def sample_id(self, index: int) -> str:
        return self.inner.sample_id(self.indices[index])

    def label(self, index: int) -> int:
        return self.inner.label(self.indices[index])

    def load(self, index: int) -> Sample:
        return self.inner.load(self.indices[index])
