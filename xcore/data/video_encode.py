"""Video encoding with PyAV, for test fixtures and the synthetic data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: Path | str, frames: np.ndarray, fps: int = 25, codec: str | None = None) -> Path:
    """Encode uint8 (T, H, W, 3) RGB ``frames`` with PyAV (fixtures, synthetic data); returns ``path``.

    Default codec: MPEG-4 part 2 for ``.avi``, otherwise near-lossless libx264 in yuv444p (any frame size, odd
    ones included), or MPEG-4 when libx264 is not built in.
    """
    import av

    path = Path(path)
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"expected non-empty uint8 frames (T, H, W, 3), got {arr.dtype} {arr.shape}")
    if codec is None:
        codec = "libx264" if path.suffix.lower() != ".avi" and "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = int(arr.shape[1]), int(arr.shape[2])
        if codec == "libx264":
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": "4", "preset": "veryfast"}
        else:
            stream.pix_fmt = "yuv420p"
            stream.options = {"qscale": "2"}
        for frame in arr:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path
