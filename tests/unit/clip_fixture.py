"""Fixture clips whose frames say which frame they are: frame ``i`` is a flat grey level ``LEVEL0 + STEP * i`` plus a
bright bar at column ``2 i``, so lossy codecs still let a test check which frame came back."""

from __future__ import annotations

import numpy as np

LEVEL0, STEP, N = 8, 10, 20


def frames(n: int = N, h: int = 32, w: int = 40) -> np.ndarray:
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i] = LEVEL0 + STEP * i
        out[i, :, 2 * i % w:2 * i % w + 2] = 255
    return out


def which_frame(clip: np.ndarray) -> list[int]:
    """Frame numbers recovered from the grey level (median, so the bar does not bias it)."""
    return [round((float(np.median(f)) - LEVEL0) / STEP) for f in clip]
