"""Forward-batch budgets that adapt to the device, and a forward loop that halves the batch on OOM.

Measured on the 2-core CPU this project targets: forward batches of about 16 small images (3×112×112) are
fastest and ≥ 64 run ~2.5× slower (activations fall out of cache), while a GPU wants large batches. The budget
is therefore counted in input elements per forward and set per device type; callers may override it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

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
