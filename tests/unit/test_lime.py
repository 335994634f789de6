"""LIME (xcore/explain/lime.py) against the ``lime`` package, plus a toy sanity check."""

from __future__ import annotations

import lime.lime_image as lime_image
import numpy as np
import pytest
import torch
from lime.wrappers.scikit_image import SegmentationAlgorithm
from torch import nn

import xcore.explain as E
from xcore.explain.superpixels import denormalise


def _cnn() -> nn.Module:
    """A tiny seeded CNN whose head is scaled up so that its probabilities react to hidden segments."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)).eval()
    with torch.no_grad():
        net[-1].weight.mul_(30.0)
    return net


def _image(size: int = 64) -> torch.Tensor:
    """A normalised 4×4 patchwork of colours plus noise: quickshift's defaults find 15–16 regions on it."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(1, 3, 4, 4, generator=g) * 4 - 2
    blocks = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")
    return blocks + 0.1 * torch.randn(1, 3, size, size, generator=g)


@pytest.mark.parametrize("hide", ["mean", 0.0])
def test_lime_equals_the_lime_package_with_quickshift(hide: str | float) -> None:
    """Same quickshift segments, samples, hiding and surrogate as ``LimeImageExplainer`` ⇒ same coefficients.

    lime gets the model-space image as (H, W, C) float64, a ``segmentation_fn`` running the same quickshift on the
    de-normalised image with the seed lime itself draws first (``random_seed=None``), ``hide_color=None`` (mean) or 0,
    and all features. The only differences are float rounding: lime's segment means (np.mean vs index_add), its
    column order in the final Ridge (highest_weights reorders), model batch sizes and our float32 map, hence
    ``rtol=1e-5`` (coefficients are ~1e-3..1e-2 here).
    """
    model, x, c, seed = _cnn(), _image(), 3, 7
    ours = E.run("lime", model, x, [c], seed=seed, hide=hide, batch_size=50)[0].numpy()

    qs_seed = np.random.RandomState(seed).randint(0, high=1000)  # lime's own first draw
    segs = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2,
                                 random_seed=qs_seed)(denormalise(x[0]))
    img = x[0].permute(1, 2, 0).double().numpy()

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(batch).float().permute(0, 3, 1, 2)
            return model(t).softmax(dim=1).double().numpy()

    explainer = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=seed)
    exp = explainer.explain_instance(img, classifier_fn, labels=(c,), top_labels=None,
                                     hide_color=None if hide == "mean" else hide, num_features=100000,
                                     num_samples=1000, batch_size=10, segmentation_fn=lambda _img: segs)
    coef = np.zeros(int(segs.max()) + 1)
    for f, w in exp.local_exp[c]:
        coef[f] = w
    assert len(np.unique(segs)) > 6  # so lime's 'auto' takes 'highest_weights' (all features kept)
    # float32 model outputs batched differently (ours 50, lime 10) move the ridge coefficients by ~1e-5 of their
    # scale: the tolerance is relative to that scale, far below what a wrong kernel or weighting would change
    np.testing.assert_allclose(ours, coef[segs], atol=1e-4 * np.abs(coef).max(), rtol=1e-4)
    assert np.abs(coef).max() > 1e-3  # a non-trivial explanation


def test_lime_defaults_equal_lime_explain_instance_end_to_end() -> None:
    """With an identity normalisation lime's own default quickshift sees our image: the whole pipeline matches."""
    model, c, seed = _cnn(), 1, 3
    x = (_image() / 4 + 0.5).clamp(0, 1)  # already in [0, 1]: de-normalising with mean 0 / std 1 is the identity
    ours = E.run("lime", model, x, [c], seed=seed, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))[0].numpy()

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch).float().permute(0, 3, 1, 2)).softmax(dim=1).double().numpy()

    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        x[0].permute(1, 2, 0).double().numpy(), classifier_fn, labels=(c,), top_labels=None)
    coef = np.zeros(int(exp.segments.max()) + 1)
    for f, w in exp.local_exp[c]:
        coef[f] = w
    assert len(np.unique(exp.segments)) > 6 and np.abs(coef).max() > 1e-2
    np.testing.assert_allclose(ours, coef[exp.segments], atol=1e-4 * np.abs(coef).max(), rtol=1e-4)


class _QuadrantModel(nn.Module):
    """Class 1's logit = 8 × the mean of channel 0 over the top-left quadrant; class 0's logit = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // 2, x.shape[3] // 2
        s = 8 * x[:, 0, :h, :w].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(s), s], dim=1)


@pytest.mark.parametrize(("segmenter", "params"), [("quickshift", {}), ("image", {"n_segments": 4})])
def test_the_driving_superpixel_gets_the_largest_coefficient(segmenter: str, params: dict) -> None:
    """Four flat colour quadrants; only the top-left one drives class 1, so its segment must score highest
    (``n_segments`` is SLIC's: quickshift takes none)."""
    x = torch.zeros(1, 3, 32, 32)
    colours = torch.tensor([[1.0, 0.2, -0.5], [-0.8, 1.0, 0.3], [0.4, -1.0, 1.0], [-0.3, 0.5, -1.2]])
    for q, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        x[0, :, 16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)] = colours[q][:, None, None]
    m = E.run("lime", _QuadrantModel(), x, [1], segmenter=segmenter, hide=0.0, n_samples=300, **params)[0]
    top_left = torch.zeros(32, 32, dtype=torch.bool)
    top_left[:16, :16] = True
    assert m[top_left].min() > 0.05
    assert m[top_left].min() > m[~top_left].abs().max() + 0.05


@pytest.mark.parametrize("segmenter", ["gradient", "both"])
def test_gradient_segmenters_paint_a_constant_per_superpixel(segmenter: str) -> None:
    """LIME_G / LIME_{I+G}: SWAG superpixels; the map is piecewise constant with at most ~n_segments values."""
    m = E.run("lime", _cnn(), _image(), None, segmenter=segmenter, n_samples=100, n_segments=20)
    assert m.shape == (1, 64, 64)
    assert 1 < len(torch.unique(m)) <= 40
    assert torch.isfinite(m).all()


def test_lime_rejects_bad_arguments() -> None:
    from xcore.errors import UsageError

    with pytest.raises(UsageError):
        E.run("lime", _cnn(), _image(), None, segmenter="felzenszwalb")
    with pytest.raises(UsageError):
        E.run("lime", _cnn(), _image(), None, hide="zero", n_samples=10)


def test_a_batch_equals_its_images_explained_one_by_one() -> None:
    """Each image has its own segments and a fresh ``RandomState(seed)``: batching changes nothing."""
    model = _cnn()
    x = torch.cat([_image(), _image().flip(-1)])
    both = E.run("lime", model, x, [1, 2], n_samples=200, batch_size=64)
    for b, c in enumerate([1, 2]):
        one = E.run("lime", model, x[b : b + 1], [c], n_samples=200, batch_size=7)[0]
        torch.testing.assert_close(both[b], one, atol=1e-7, rtol=1e-5)
