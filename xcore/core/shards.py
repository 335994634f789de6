"""Shards: contiguous slices of a dataset's sample indices, the unit a job is planned, computed and committed in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """A contiguous slice ``[start, stop)`` of the dataset's sample indices."""

    shard_id: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return f"shard-{self.shard_id:06d}"


def plan_shards(n: int, shard_size: int) -> list[Shard]:
    """Split ``n`` samples into shards of ``shard_size`` (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return [Shard(i, s, min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]
