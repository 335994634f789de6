"""Clip sampling: which 0-based frames of a video a clip takes (the centre clip, or clips every ``step`` frames).

A video shorter than one clip raises :class:`~xcore.errors.SampleError` "too short": no looping or padding, which
would change what is explained.
"""

from __future__ import annotations

from xcore.errors import SampleError


def _span(clip_len: int, stride: int) -> int:
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be positive, got {clip_len} and {stride}")
    return (clip_len - 1) * stride + 1


def _too_short(n_frames: int, span: int) -> SampleError:
    return SampleError("load", f"video too short: {n_frames} frames, the clip spans {span}")


def centre_indices(n_frames: int, clip_len: int, stride: int = 1) -> list[int]:
    """The ``clip_len`` indices, ``stride`` apart, of the clip centred in ``n_frames`` (start rounded down).

    A video shorter than the clip's span ``(clip_len - 1) * stride + 1`` raises :class:`SampleError` "too short"
    (no looping or padding: the spec is silent and padding would change what is explained).
    """
    span = _span(clip_len, stride)
    if n_frames < span:
        raise _too_short(n_frames, span)
    start = (n_frames - span) // 2
    return [start + k * stride for k in range(clip_len)]


def sliding_indices(n_frames: int, clip_len: int, step: int, stride: int = 1) -> list[list[int]]:
    """Clips starting at 0, ``step``, 2 ``step``... that fit entirely in the video; a tail shorter than a clip is
    dropped. A video shorter than one clip raises :class:`SampleError` "too short"."""
    span = _span(clip_len, stride)
    if step < 1:
        raise ValueError(f"step must be positive, got {step}")
    if n_frames < span:
        raise _too_short(n_frames, span)
    return [[s + k * stride for k in range(clip_len)] for s in range(0, n_frames - span + 1, step)]
