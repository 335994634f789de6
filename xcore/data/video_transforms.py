"""Clip preprocessing presets: :class:`VideoTransform` resizes (bilinear, no antialias, rounded back to uint8 like
torchvision's uint8 path), centre-crops, scales and normalises uint8 (T, H, W, 3) RGB frames and returns
(C, T, H, W) float32; presets ``kinetics`` (pytorch/vision ``torchvision/transforms/_presets.py``
``VideoClassification``), ``c3d`` (jfzhang95/pytorch-video-recognition ``dataloaders/dataset.py``,
``inference.py``) and ``small`` (the demo's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xcore.core.presets import KINETICS_MEAN, KINETICS_STD, PRESETS, preset
from xcore.data.transforms import Geometry, ImageTransform


class VideoTransform(ImageTransform):
    """uint8 (T, H, W, 3) RGB frames -> float32 (C, T, H, W): resize, centre crop, channel order, scale, normalise.

    ``resize`` is an int (shorter side, aspect kept) or ``(height, width)`` (exact, as torchvision's video presets).
    Resizing is bilinear without antialias and rounded back to uint8. The crop offsets follow torchvision
    (``round((H - size) / 2)``): 128x171 -> 112 takes rows 8-119 and columns 30-141, as C3D's ``inference.py``
    does. ``bgr`` reverses the channels *before* normalising, so ``mean``/``std`` are in the output order;
    ``scale`` multiplies the uint8 values first (1/255 for torchvision, 1.0 for C3D). Boxes map through
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
        Hiley et al., *Discriminating Spatial and Temporal Relevance in Deep Taylor Decompositions for
        Explainable Activity Recognition*, §4.3: the input bounds l, h of the first layer)."""
        return ([(0.0 - m) / s for m, s in zip(self.mean, self.std, strict=True)],
                [(255.0 * self.scale - m) / s for m, s in zip(self.mean, self.std, strict=True)])

    def __call__(self, frames: np.ndarray) -> Tensor:  # type: ignore[override]
        x = self.resize_crop(frames).permute(1, 0, 2, 3)  # (3, T, size, size)
        if self.bgr:
            x = x.flip(0)
        return self.normalize(x).contiguous()


def video_preset(name: str) -> VideoTransform:
    """The clip transform of the named preset (:data:`xcore.core.presets.PRESETS`): "kinetics", "c3d" or "small"."""
    if name not in PRESETS or name == "imagenet":
        raise ValueError(f"unknown video preset {name!r}; use one of kinetics, c3d, small")
    p = preset(name)
    return VideoTransform(p.size, p.resize, p.mean, p.std, p.scale, bgr=p.bgr)
