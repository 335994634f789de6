"""Video analyses: the share of positive relevance inside per-frame boxes, by hand."""

from __future__ import annotations

import math

import numpy as np

from xcore.analysis.video import box_mask, mass_in_boxes


def test_box_mask_is_inclusive_per_frame_and_clipped():
    mask = box_mask([[[1, 0, 2, 1]], [], [[3, 2, 9, 9]]], (3, 4, 5))
    assert mask[0].sum() == 4 and mask[0, 0:2, 1:3].all()  # columns 1..2, rows 0..1 inclusive
    assert not mask[1].any()  # a frame without a box
    assert mask[2].sum() == 4 and mask[2, 2:4, 3:5].all()  # clipped at the frame's edge


def test_mass_in_boxes_counts_positive_mass_only():
    heat = np.zeros((2, 4, 4))
    heat[0, 1, 1] = 3.0  # inside frame 0's box
    heat[0, 3, 3] = 1.0  # outside
    heat[1, 0, 0] = 4.0  # frame 1 has no box: only in the denominator
    heat[0, 2, 2] = -10.0  # negative relevance is ignored, inside or not
    boxes = [[[0, 0, 2, 2]], []]
    assert mass_in_boxes(heat, boxes) == 3.0 / 8.0
    assert math.isnan(mass_in_boxes(-np.ones((2, 4, 4)), boxes))
    # a uniform map scores exactly the share of box voxels (the chance level)
    assert mass_in_boxes(np.ones((2, 4, 4)), boxes) == box_mask(boxes, (2, 4, 4)).mean() == 9 / 32
