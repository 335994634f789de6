"""Clip presets: C3D (BGR minus the mean, no std; jfzhang95/pytorch-video-recognition ``inference.py`` crop),
Kinetics (pytorch/vision ``torchvision/transforms/_presets.py`` values), shorter-side resizing and box mapping."""

from __future__ import annotations

import numpy as np
import torch

from xcore.core.presets import C3D_MEAN_BGR, KINETICS_MEAN, KINETICS_STD
from xcore.data.video_transforms import VideoTransform, video_preset


def test_c3d_preset_is_bgr_minus_mean_without_std() -> None:
    clip = np.zeros((2, 240, 320, 3), np.uint8)
    clip[...] = (200, 100, 50)  # RGB
    x = video_preset("c3d")(clip)
    assert x.shape == (3, 2, 112, 112) and x.dtype == torch.float32
    # channel 0 = B - 90, 1 = G - 98, 2 = R - 102
    assert torch.equal(x[:, 0, 0, 0], torch.tensor([50 - 90.0, 100 - 98.0, 200 - 102.0]))
    assert bool((x == x[:, :1, :1, :1]).all())
    assert C3D_MEAN_BGR == (90.0, 98.0, 102.0)


def test_c3d_crop_takes_rows_8_to_119_and_columns_30_to_141() -> None:
    clip = np.zeros((1, 128, 171, 3), np.uint8)  # already 128x171: no resize
    clip[..., 0] = np.arange(171)[None, None, :]  # R = column
    clip[..., 1] = np.arange(128)[None, :, None]  # G = row
    x = video_preset("c3d")(clip)
    assert torch.equal(x[2, 0, 0], torch.arange(30, 142, dtype=torch.float32) - 102)
    assert torch.equal(x[1, 0, :, 0], torch.arange(8, 120, dtype=torch.float32) - 98)


def test_kinetics_preset_values() -> None:
    clip = np.zeros((3, 90, 120, 3), np.uint8)
    clip[...] = (255, 0, 51)
    x = video_preset("kinetics")(clip)
    assert x.shape == (3, 3, 112, 112)
    want = [(1.0 - KINETICS_MEAN[0]) / KINETICS_STD[0], -KINETICS_MEAN[1] / KINETICS_STD[1],
            (0.2 - KINETICS_MEAN[2]) / KINETICS_STD[2]]
    assert torch.allclose(x[:, 1, 50, 60], torch.tensor(want), atol=1e-5)
    assert KINETICS_MEAN == (0.43216, 0.394666, 0.37645) and KINETICS_STD == (0.22803, 0.22145, 0.216989)


def test_shorter_side_resize_and_box_mapping() -> None:
    t = VideoTransform(size=4, resize=4, mean=(0, 0, 0), std=(1, 1, 1), scale=1.0)
    clip = np.zeros((1, 8, 16, 3), np.uint8)
    clip[..., 2] = (np.arange(16) * 10).astype(np.uint8)[None, None, :]
    x = t(clip)  # 16x8 -> 8x4 (every other column, averaged), then columns 2..5
    assert x.shape == (3, 1, 4, 4)
    assert torch.equal(x[2, 0, 0], torch.tensor([45.0, 65.0, 85.0, 105.0]))
    k = video_preset("kinetics")  # 320x240 -> 171x128, crop at column 30, row 8
    assert k.map_boxes([[160, 120, 200, 160]], 320, 240) == [[55, 56, 77, 77]]
