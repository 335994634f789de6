"""Clip preprocessing presets (formats.md 10.1-10.2): :class:`VideoTransform` resizes (bilinear, no antialias,
rounded back to uint8 like torchvision's uint8 path), centre-crops, scales and normalises uint8 (T, H, W, 3) RGB
frames and returns (C, T, H, W) float32; presets ``kinetics`` (torchvision), ``c3d`` and ``small`` (the demo's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xcore.data.transforms import Geometry, ImageTransform

KINETICS_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
C3D_MEAN_BGR: tuple[float, float, float] = (90.0, 98.0, 102.0)
"""jfzhang95/pytorch-video-recognition subtracts this from OpenCV (BGR) frames in 0..255 (formats.md 10.2)."""


class VideoTransform(ImageTransform):
    """uint8 (T, H, W, 3) RGB frames -> float32 (C, T, H, W): resize, centre crop, channel order, scale, normalise.

    ``resize`` is an int (shorter side, aspect kept) or ``(height, width)`` (exact, as torchvision's video presets,
    formats.md 10.1). Resizing is bilinear without antialias and rounded back to uint8. The crop offsets follow
    torchvision (``round((H - size) / 2)``): 128x171 -> 112 takes rows 8-119 and columns 30-141, as C3D does
    (formats.md 10.2). ``bgr`` reverses the channels *before* normalising, so ``mean``/``std`` are in the output
    order; ``scale`` multiplies the uint8 values first (1/255 for torchvision, 1.0 for C3D). Boxes map through
    the same geometry (:meth:`map_boxes`, inherited).
    """

    def __init__(self, size: int = 112, resize: int | tuple[int, int] | None = (128, 171),
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD,
                 scale: float = 1.0 / 255.0, bgr: bool = False) -> None:
        if isinstance(resize, Sequence):
            if len(resize) != 2 or min(resize) < size:
                raise ValueError(f"resize {resize} must be (height, width), both at least the crop size {size}")
            self.resize_hw: tuple[int, int] | None = (int(resize[0]), int(resize[1]))
            super().__init__(size, None, mean, std)
        else:
            self.resize_hw = None
            super().__init__(size, resize, mean, std)
        self.scale = float(scale)
        self.bgr = bool(bgr)

    def __repr__(self) -> str:
        resize = self.resize_hw if self.resize_hw is not None else self.resize
        return (f"VideoTransform(size={self.size}, resize={resize}, mean={self.mean}, std={self.std}, "
                f"scale={self.scale:g}, bgr={self.bgr})")

    def geometry(self, width: int, height: int) -> Geometry:
        """The resize and crop applied to frames of ``width``×``height``."""
        if self.resize_hw is None:
            return super().geometry(width, height)
        h, w = self.resize_hw
        return Geometry(width, height, (w, h), round((w - self.size) / 2.0), round((h - self.size) / 2.0), self.size)

    def resize_crop(self, frames: np.ndarray) -> Tensor:
        """uint8 (T, H, W, 3) -> uint8 (T, 3, size, size), still RGB."""
        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected frames of shape (T, H, W, 3), got {arr.shape}")
        geo = self.geometry(arr.shape[2], arr.shape[1])
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
        if (arr.shape[2], arr.shape[1]) != geo.scaled:
            x = F.interpolate(x.float(), size=(geo.scaled[1], geo.scaled[0]), mode="bilinear", align_corners=False,
                              antialias=False).round_().clamp_(0, 255).to(torch.uint8)
        return x[:, :, geo.top:geo.top + self.size, geo.left:geo.left + self.size].contiguous()

    def normalize(self, x: Tensor) -> Tensor:
        """(3, …) channel-first values in the output channel order -> ``(x * scale - mean) / std``, float32."""
        x = x.float() * self.scale
        shape = (3,) + (1,) * (x.dim() - 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def input_bounds(self) -> tuple[list[float], list[float]]:
        """Per-channel (low, high) of the model's input space: uint8 0 and 255 normalised (LRP's z^β bounds,
        methods.md §8: "use the true min/max of the model's input space")."""
        return ([(0.0 - m) / s for m, s in zip(self.mean, self.std, strict=True)],
                [(255.0 * self.scale - m) / s for m, s in zip(self.mean, self.std, strict=True)])

    def __call__(self, frames: np.ndarray) -> Tensor:  # type: ignore[override]
        x = self.resize_crop(frames).permute(1, 0, 2, 3)  # (3, T, size, size)
        if self.bgr:
            x = x.flip(0)
        return self.normalize(x).contiguous()


def kinetics_transform() -> VideoTransform:
    """torchvision ``VideoClassification`` preset of r3d_18 / mc3_18 / r2plus1d_18 (formats.md 10.1)."""
    return VideoTransform(112, (128, 171), KINETICS_MEAN, KINETICS_STD, 1.0 / 255.0, bgr=False)


def c3d_transform() -> VideoTransform:
    """C3D (jfzhang95): BGR, 0..255, minus (90, 98, 102), no std, 128x171 -> 112 (formats.md 10.2)."""
    return VideoTransform(112, (128, 171), C3D_MEAN_BGR, (1.0, 1.0, 1.0), 1.0, bgr=True)


def small_transform() -> VideoTransform:
    """The "kinetics" preset at half size for CPU training: 64x85 -> centre crop 56, Kinetics mean / std (keeps
    the same part of the frame as 128x171 -> 112)."""
    return VideoTransform(56, (64, 85), KINETICS_MEAN, KINETICS_STD, 1.0 / 255.0, bgr=False)


PRESETS = {"kinetics": kinetics_transform, "c3d": c3d_transform, "small": small_transform}


def video_preset(name: str) -> VideoTransform:
    """The named preprocessing preset: "kinetics", "c3d" or "small"."""
    if name not in PRESETS:
        raise ValueError(f"unknown video preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]()
