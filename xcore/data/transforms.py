"""Image preprocessing that also carries annotations: resize the shorter side, centre-crop, normalise.

Boxes ([xmin, ymin, xmax, ymax], inclusive pixels) and masks go through the same geometry as the pixels,
so the ``meta`` of a :class:`~xcore.data.base.Sample` is in the coordinates of its tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.data.image_modes import to_rgb

_EPS = 1e-6  # float slack so that exact scaled edges do not round outward


@dataclass(frozen=True)
class Geometry:
    """Where an original ``width``×``height`` image lands: scaled to ``scaled`` then cropped at ``left, top``."""

    width: int
    height: int
    scaled: tuple[int, int]
    left: int
    top: int
    size: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.scaled[0] / self.width, self.scaled[1] / self.height


class ImageTransform:
    """PIL image -> normalised float tensor (3, size, size), plus the matching box and mask mapping.

    The shorter side is resized to ``resize`` (``None``: keep a ``size``×``size`` image as it is, otherwise
    resize the shorter side to ``size``), then the centre ``size``×``size`` crop is taken (torchvision's
    rounding). Every PIL mode is made 8-bit RGB first by :func:`xcore.data.image_modes.to_rgb` (16-bit and float
    images scaled by their range, alpha dropped; a mode with no defined scaling raises SampleError).
    """

    def __init__(self, size: int, resize: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        if resize is not None and resize < size:
            raise ValueError(f"resize ({resize}) must be at least the crop size ({size})")
        self.size = size
        self.resize = resize
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, resize={self.resize}, mean={self.mean}, std={self.std})"

    def geometry(self, width: int, height: int) -> Geometry:
        """The resize and crop applied to an image of ``width``×``height``."""
        if self.resize is None and width == self.size and height == self.size:
            scaled = (width, height)
        else:
            short = self.resize if self.resize is not None else self.size
            if width <= height:
                scaled = (short, max(short, int(short * height / width)))
            else:
                scaled = (max(short, int(short * width / height)), short)
        left = round((scaled[0] - self.size) / 2.0)
        top = round((scaled[1] - self.size) / 2.0)
        return Geometry(width, height, scaled, left, top, self.size)

    def _crop(self, img: Image.Image, geo: Geometry, resample: Image.Resampling) -> Image.Image:
        if img.size != geo.scaled:
            img = img.resize(geo.scaled, resample)
        return img.crop((geo.left, geo.top, geo.left + self.size, geo.top + self.size))

    def prepare(self, img: Image.Image) -> Image.Image:
        """Decode (if lazy), convert to 8-bit RGB (:func:`to_rgb`), resize and crop; the step before normalisation."""
        img = to_rgb(img)
        return self._crop(img, self.geometry(*img.size), Image.Resampling.BILINEAR)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 (…, 3, H, W) or float in [0, 1] -> mean/std-normalised float32."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def to_uint8(self, img: Image.Image) -> Tensor:
        """(3, size, size) uint8 tensor of the prepared image."""
        arr = np.asarray(self.prepare(img), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def __call__(self, img: Image.Image) -> Tensor:
        return self.normalize(self.to_uint8(img))

    def map_boxes(self, boxes: Sequence[Sequence[float]], width: int, height: int) -> list[list[int]]:
        """Boxes in original inclusive pixels -> output pixels, clipped; boxes cropped away are dropped."""
        geo = self.geometry(width, height)
        sx, sy = geo.scale
        last = self.size - 1
        out: list[list[int]] = []
        for box in boxes:
            x0, y0, x1, y1 = (float(v) for v in box)
            x0, x1 = max(0.0, min(x0, width - 1.0)), max(0.0, min(x1, width - 1.0))
            y0, y1 = max(0.0, min(y0, height - 1.0)), max(0.0, min(y1, height - 1.0))
            # pixel k covers [k, k+1): map the covered span, then back to inclusive pixel indices
            nx0 = math.floor(x0 * sx + _EPS) - geo.left
            ny0 = math.floor(y0 * sy + _EPS) - geo.top
            nx1 = math.ceil((x1 + 1) * sx - _EPS) - 1 - geo.left
            ny1 = math.ceil((y1 + 1) * sy - _EPS) - 1 - geo.top
            if nx1 < 0 or ny1 < 0 or nx0 > last or ny0 > last or nx1 < nx0 or ny1 < ny0:
                continue
            out.append([max(nx0, 0), max(ny0, 0), min(nx1, last), min(ny1, last)])
        return out

    def map_mask(self, mask: np.ndarray) -> np.ndarray:
        """A (H, W) mask of the original image -> bool (size, size), nearest-neighbour."""
        m = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
        geo = self.geometry(*m.size)
        return np.asarray(self._crop(m, geo, Image.Resampling.NEAREST)) > 127
