"""Batching and out-of-memory policy, in one place for explainers, metrics and the shard worker.

- Forward-batch budgets per device (:func:`forward_batch_size`): measured on the 2-core CPU this project targets,
  forward batches of about 16 small images (3×112×112) are fastest and ≥ 64 run ~2.5× slower (activations fall
  out of cache), while a GPU wants large batches; the budget is counted in input elements per forward.
- :func:`chunked`: concatenate a forward over ``[0, n)`` in chunks, halving the chunk on OOM (metrics).
- :func:`spans`: passes over ``n`` perturbed copies of a batch, whole copies per pass (sampling explainers).
- :func:`robust_map`: a batch function over items so that one bad sample or an OOM never sinks the batch: OOM
  halves the shared :class:`BatchSize` and retries, down to one item (then :class:`SampleOOMError`); any other
  exception on several items falls back to one call per item (the shard worker).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

CPU_ELEMENTS = 16 * 3 * 112 * 112  # ≈ 16 small images per forward on a CPU (measured best of 4..58)
GPU_ELEMENTS = 512 * 3 * 112 * 112  # large batches win on an accelerator
MAX_BATCH = 4096


def forward_batch_size(device: torch.device | str, sample_numel: int, requested: int | None = None) -> int:
    """Inputs per forward for samples of ``sample_numel`` elements on ``device`` (``requested`` wins)."""
    if requested is not None:
        if requested < 1:
            raise ValueError("batch_size must be >= 1")
        return int(requested)
    device = torch.device(device)
    budget = GPU_ELEMENTS if device.type in {"cuda", "mps", "xpu"} else CPU_ELEMENTS
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # keep the input plus ~64 activation copies of it under a quarter of the free memory
        budget = min(budget, free // (4 * 4 * 64))
    return max(1, min(MAX_BATCH, budget // max(1, sample_numel)))


def accepts_channels_last(model: Callable[[Tensor], Tensor], probe: Tensor) -> bool:
    """Whether to feed ``model`` channels-last inputs: yes for images (4-D, ``channels_last``) and clips (5-D,
    ``channels_last_3d``), whose oneDNN convolutions and pooling run about twice as fast on a CPU (1.8× measured
    on small3d at 16×56²), unless the model rejects them (e.g. ``.view`` on its input). Only the memory layout
    changes, never the values."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    if probe.ndim not in formats:
        return False
    try:
        model(probe.contiguous(memory_format=formats[probe.ndim]))
    except RuntimeError:
        return False
    return True


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def chunked(n: int, size: int, run: Callable[[int, int], Tensor]) -> Tensor:
    """Concatenate ``run(start, stop)`` over ``[0, n)`` in chunks of ``size``, halving ``size`` on OOM."""
    outs: list[Tensor] = []
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            outs.append(run(start, stop))
        except Exception as err:
            if not is_oom(err) or size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)
            continue
        start = stop
    return torch.cat(outs) if outs else torch.empty(0)


def spans(n: int, batch: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges over ``n`` copies, ``max(1, batch_size // batch)`` copies per pass."""
    per = max(1, int(batch_size) // batch)
    for start in range(0, n, per):
        yield start, min(n, start + per)


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
