"""The UCF101-24 weak-localisation clip set (Hartley, *An Investigation into Explanations for Convolutional Neural
Networks*, PhD thesis, Cardiff University, 2021, §4.5.3; docs/formats/ucf101-24.md §4): which videos and which
16-frame clips of them are evaluated.
"""

from __future__ import annotations

import numpy as np

from xcore.data.clip_sampling import sliding_indices
from xcore.data.ucf24 import VideoBoxes

LOCALISATION_STEP = 8  # localisation clips start every 8 frames (thesis §4.5.3)


def localisation_video(video: VideoBoxes, clip_len: int = 16) -> bool:
    """The thesis's video rules (§4.5.3): a tube, at most one box on every frame (single actor) and at
    least ``clip_len`` (16) contiguous annotated frames."""
    frames = np.concatenate([t.frames for t in video.tubes] or [np.zeros(0, np.int64)])
    annotated = np.unique(frames)
    if len(annotated) < len(frames) or len(annotated) == 0:  # no tube, or two boxes on one frame
        return False
    breaks = np.flatnonzero(np.diff(annotated) != 1)
    runs = np.diff(np.concatenate([[-1], breaks, [len(annotated) - 1]]))
    return int(runs.max()) >= clip_len


def localisation_starts(video: VideoBoxes, clip_len: int = 16, step: int = LOCALISATION_STEP,
                        stride: int = 1) -> list[int]:
    """First frames of the thesis's weak-localisation clips of one UCF101-24 video (thesis §4.5.3).

    No clips for a video :func:`localisation_video` drops; otherwise clips start at frames 0, ``step``, 2 ``step``...
    of the video's ``n_frames`` (those that fit, :func:`~xcore.data.clip_sampling.sliding_indices`) and are kept only if
    every frame of the clip has a GT box.
    """
    if not localisation_video(video, clip_len) or video.n_frames < (clip_len - 1) * stride + 1:
        return []
    have = {int(f) for t in video.tubes for f in t.frames}
    return [clip[0] for clip in sliding_indices(video.n_frames, clip_len, step, stride) if have.issuperset(clip)]
