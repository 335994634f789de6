"""Timing of device work: a replaceable clock and a device synchronisation, so a timer includes queued kernels.

Efficiency is measured as the thesis does (§3.5.5, §5.4.5: mean wall-clock seconds per explanation) with the
project rule that the GPU is synchronised before the clock stops and a warm-up call is excluded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

clock: Callable[[], float] = time.perf_counter
"""The timer of ``explain_ms`` and ``<metric>_ms`` (a test replaces it with a fake clock)."""


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work, so that a timer read after it includes that work."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def elapsed_ms(start: float, device: str | torch.device, per: int = 1) -> float:
    """Milliseconds since ``start`` (a :data:`clock` reading) after the device finished, divided by ``per``."""
    synchronize(device)
    return (clock() - start) * 1000 / max(per, 1)
