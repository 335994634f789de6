"""Run a batch function over items so that one bad sample or an out-of-memory error never sinks the batch.

``robust_map(fn, items, size)`` calls ``fn`` on chunks of at most ``size.value`` items:
- out of memory (CUDA OOM or a RuntimeError saying so): free the cache, halve ``size`` (it stays halved for
  the caller's later batches) and retry the chunk, down to one item; an item that still runs out of memory
  gets an :class:`SampleOOMError` failure;
- any other exception on a chunk of several items: fall back to one call per item, so the failure is
  attributed to the sample(s) that cause it.
The result has one entry per item: ``fn``'s value, or the exception that item ended with.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from xcore.metrics.batching import is_oom

T = TypeVar("T")


class SampleOOMError(RuntimeError):
    """An item that ran out of memory even in a batch of one (``error_type`` ``oom``)."""


@dataclass
class BatchSize:
    """A mutable batch size shared by the calls of one worker."""

    value: int

    def halve(self, current: int) -> int:
        self.value = max(1, min(self.value, current) // 2)
        return self.value


def free_memory() -> None:
    """Release cached accelerator memory after an OOM."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def robust_map(fn: Callable[[list[T]], Sequence[Any]], items: Sequence[T], size: BatchSize,
               on_oom: Callable[[], None] = free_memory) -> list[Any]:
    """``fn`` over ``items`` in chunks (module docstring); never raises for a failing item."""
    out: list[Any] = [None] * len(items)
    i = 0
    while i < len(items):
        chunk = list(items[i : i + size.value])
        try:
            res = fn(chunk)
            if len(res) != len(chunk):
                raise RuntimeError(f"batch function returned {len(res)} results for {len(chunk)} items")
            out[i : i + len(chunk)] = res
        except Exception as err:
            if is_oom(err):
                on_oom()
                if len(chunk) > 1:
                    size.halve(len(chunk))
                    continue  # retry the same position with the smaller size
                out[i] = SampleOOMError(f"out of memory with a batch of one: {err}")
            elif len(chunk) > 1:
                for k, item in enumerate(chunk):
                    out[i + k] = _single(fn, item, on_oom)
            else:
                out[i] = err
        i += len(chunk)
    return out


def _single(fn: Callable[[list[T]], Sequence[Any]], item: T, on_oom: Callable[[], None]) -> Any:
    try:
        return fn([item])[0]
    except Exception as err:
        if is_oom(err):
            on_oom()
            return SampleOOMError(f"out of memory with a batch of one: {err}")
        return err
