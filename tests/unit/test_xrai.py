"""XRAI (xcore/explain/xrai.py) against PAIR-code ``saliency.core.XRAI``, plus a toy ranking check."""

from __future__ import annotations

from typing import Any

import numpy as np
import saliency.core as sc
import torch
from torch import nn

import xcore.explain as E
from xcore.core.presets import IMAGENET_MEAN, IMAGENET_STD
from xcore.core.targets import Target
from xcore.explain.superpixels import denormalise
from xcore.explain.xrai import felzenszwalb_masks, xrai_attribution, xrai_from_attribution, xrai_greedy

MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD, dtype=torch.float64).reshape(1, 3, 1, 1)


def _pixels(size: int = 64, seed: int = 1) -> np.ndarray:
    """An (H, W, 3) patchwork of 4×4 colour blocks plus a little noise, inside [0, 1]."""
    rng = np.random.default_rng(seed)
    img = np.kron(rng.uniform(0.1, 0.9, (4, 4, 3)), np.ones((size // 4, size // 4, 1)))
    return np.clip(img + 0.03 * rng.standard_normal(img.shape), 0.0, 1.0)


def _normalised(img: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(img).permute(2, 0, 1)[None] - MEAN) / STD


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, 4)).double().eval()


def test_greedy_equals_pair_for_the_same_attribution() -> None:
    """Same image and (H, W, C) attribution ⇒ PAIR's ``GetMask(base_attribution=...)`` map, to rounding."""
    img = _pixels(64, seed=3)
    attr = np.random.default_rng(4).standard_normal(img.shape)
    ref = sc.XRAI().GetMask(img, None, base_attribution=attr)
    np.testing.assert_allclose(xrai_from_attribution(img, attr), ref, rtol=0, atol=1e-9)


def test_xrai_equals_pair_end_to_end() -> None:
    """PAIR computes IG itself (pixel-space model, min/max baselines, 20 steps) ⇒ same attribution and map as
    ``run("xrai")``; given our attribution, PAIR's map equals ours to rounding."""
    model, img = _cnn(), _pixels(64)
    x = _normalised(img)
    target = 2

    def call_model(batch: np.ndarray, call_model_args: Any = None, expected_keys: Any = None) -> dict[str, Any]:
        u = torch.from_numpy(np.asarray(batch, dtype=np.float64)).permute(0, 3, 1, 2).requires_grad_(True)
        model((u - MEAN) / STD)[:, target].sum().backward()
        return {sc.INPUT_OUTPUT_GRADIENTS: u.grad.permute(0, 2, 3, 1).numpy()}

    params = sc.XRAIParameters(steps=20, return_ig_attributions=True)
    out = sc.XRAI().GetMaskWithDetails(img, call_model, batch_size=20, extra_parameters=params)
    ours_attr = xrai_attribution(model, x, Target.of([target], 1), steps=20)[0].permute(1, 2, 0).numpy()
    # PAIR accumulates the path gradients in float32: agreement to float32 rounding
    np.testing.assert_allclose(ours_attr, np.mean(out.ig_attribution, axis=0), rtol=1e-5, atol=1e-10)
    ours = E.run("xrai", model, x, [target], steps=20, batch_size=20)
    assert ours.shape == (1, 64, 64) and ours.dtype == torch.float64
    same_attr = sc.XRAI().GetMask(img, None, base_attribution=ours_attr)
    np.testing.assert_allclose(ours[0].numpy(), same_attr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours[0].numpy(), out.attribution_mask, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(denormalise(x[0]), img, atol=1e-12)


def test_region_with_the_driving_pixels_is_ranked_first() -> None:
    """A linear model reading one bright colour block only: XRAI's first region is that block (plus at most the
    5-px dilation ring around it), and it carries the map's maximum."""
    img = _pixels(64, seed=7)
    block = np.zeros((64, 64), dtype=bool)
    block[16:32, 32:48] = True
    img[block] = 0.95
    x = _normalised(img)
    weight = torch.from_numpy(block).double()

    class Block(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.stack([(t * weight).flatten(1).sum(1), torch.zeros(t.shape[0], dtype=t.dtype)], 1)

    model = Block()
    sal = E.run("xrai", model, x, [0], steps=10)[0].numpy()
    attr = xrai_attribution(model, x, Target.of([0], 1), steps=10)[0].amax(0).numpy()
    _, ranks = xrai_greedy(attr, felzenszwalb_masks(denormalise(x[0])))
    near = np.zeros_like(block)
    near[11:37, 27:53] = True
    first = ranks == 1
    assert first[block].mean() >= 0.5 and not (first & ~near).any()
    assert np.allclose(sal[first], sal.max()) and sal[~near].max() < sal.max()
