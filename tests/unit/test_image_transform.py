"""The image transform: boxes and masks through resize and centre crop, identity on square inputs, odd sizes and
PIL modes made RGB."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from xcore.data import ImageTransform


def test_box_and_mask_through_resize_and_centre_crop() -> None:
    t = ImageTransform(64, resize=80)  # 200x100 -> 160x80 (scale 0.8), crop left 48, top 8
    assert t.geometry(200, 100).scaled == (160, 80)
    boxes = [[60, 10, 119, 59], [0, 0, 49, 99], [150, 50, 199, 99], [100, 20, 159, 29]]
    assert t.map_boxes(boxes, 200, 100) == [[0, 0, 47, 39], [32, 8, 63, 15]]
    mask = np.zeros((100, 200), bool)
    mask[10:60, 60:120] = True
    out = t.map_mask(mask)
    assert out.shape == (64, 64) and out.dtype == bool
    ys, xs = np.nonzero(out)
    assert [xs.min(), ys.min(), xs.max(), ys.max()] == [0, 0, 47, 39]
    assert out.sum() == 48 * 40


def test_identity_when_already_square() -> None:
    t = ImageTransform(16)
    arr = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    x = t(Image.fromarray(arr))
    mean, std = torch.tensor(t.mean).view(3, 1, 1), torch.tensor(t.std).view(3, 1, 1)
    expected = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)
    assert t.map_boxes([[3, 4, 5, 6]], 16, 16) == [[3, 4, 5, 6]]


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA"])
def test_odd_sizes_and_modes_become_rgb(mode: str) -> None:
    img = Image.new("RGB", (37, 53), (200, 100, 50)).convert(mode)
    x = ImageTransform(32)(img)
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()
    if mode in ("L", "LA"):
        assert torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)
