"""Parameters that do nothing are a UsageError naming them (xcore/core/params.py): every parameter a method's or
metric's chosen variant ignores raises when set to anything but its published default, before anything runs;
at its default (also spelled as a list, or an int for a float) it passes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import xcore.explain as E
from xcore.core.params import same_value
from xcore.core.presets import IMAGENET_MEAN
from xcore.errors import UsageError
from xcore.explain.swag import swag
from xcore.metrics.localisation import weak_localisation

_SLIC = ("n_segments", "compactness", "w_c", "w_g")
_QUICKSHIFT = ("kernel_size", "max_dist", "ratio")

# (method, the variant's parameters, the parameters that variant ignores): the public contract, written out
IGNORED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("swag", {"superpixels": "image"}, ("w_c", "w_g")),
    ("swag", {"superpixels": "gradient"}, ("w_c", "w_g", "mean", "std")),
    ("swag", {"superpixels": "both"}, ("compactness",)),
    ("swag_v", {"superpixels": "image"}, ("w_c", "w_g")),
    ("swag_v", {"superpixels": "gradient"}, ("w_c", "w_g", "mean", "std")),
    ("swag_v", {"superpixels": "both"}, ("compactness",)),
    ("lime", {"segmenter": "quickshift"}, _SLIC),
    ("lime", {"segmenter": "image"}, (*_QUICKSHIFT, "w_c", "w_g")),
    ("lime", {"segmenter": "gradient"}, (*_QUICKSHIFT, "w_c", "w_g", "mean", "std")),
    ("lime", {"segmenter": "both"}, (*_QUICKSHIFT, "compactness")),
    ("lrp", {"first": "alpha_beta"}, ("low", "high")),
    ("gradcam_pp", {"variant": "official"}, ("eps",)),
    ("jitter_cam", {"temporal": False}, ("d_t",)),
    ("smoothgrad", {"noise": torch.zeros(2, 3, 4, 4)}, ("samples", "seed")),
    ("rise", {"masks": torch.ones(2, 4, 4)}, ("n_masks", "cells", "seed")),
]
CASES = [(m, variant, p) for m, variant, names in IGNORED for p in names]


def _other(method: str, param: str, default: Any) -> Any:
    """A value of the parameter's declared type (``xcore.core.param_types``) that is not ``default``."""
    if default is None or isinstance(default, tuple):
        from xcore.core.param_types import declared_types

        annotation = declared_types(E.METHODS.get(method).fn)[param]
        return 1 if annotation == int | None else (0.5, 0.5, 0.5)
    return default + 1


@pytest.mark.parametrize(("method", "variant", "param"), CASES,
                         ids=[f"{m}-{next(iter(v.values())) if m not in ('smoothgrad', 'rise') else 'given'}-{p}"
                              for m, v, p in CASES])
def test_a_parameter_the_variant_ignores_raises_naming_it(method: str, variant: dict, param: str) -> None:
    default = E.METHODS.get(method).defaults[param]
    with pytest.raises(UsageError, match=rf"\b{param}=.* has no effect with "):
        E.validate(method, params={**variant, param: _other(method, param, default)})
    E.validate(method, params={**variant, param: default})  # the default itself is no setting


def test_defaults_spelled_differently_are_still_defaults() -> None:
    E.validate("lime", params={"segmenter": "gradient", "mean": list(IMAGENET_MEAN), "w_c": 20, "w_g": 9})
    E.validate("swag", params={"superpixels": "image", "w_c": 20, "compactness": 12})  # compactness is used
    E.validate("swag", params={"superpixels": "both", "w_c": 5.0, "w_g": 3.0})  # the weights are used
    assert same_value([0.485, 0.456, 0.406], IMAGENET_MEAN) and same_value(20, 20.0)
    assert not same_value(torch.zeros(3), None) and not same_value([1, 2], (1, 2, 3))


def test_every_method_validates_with_its_published_defaults() -> None:
    for name in E.available():
        assert E.validate(name) == E.METHODS.get(name).defaults


def test_the_function_itself_checks_before_it_computes() -> None:
    """The check runs on every call, not only in validate: no model is needed to be refused."""
    with pytest.raises(UsageError, match=r"swag: w_c=5\.0 has no effect with superpixels='image'"):
        swag(None, None, None, superpixels="image", w_c=5.0)  # type: ignore[arg-type]
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(UsageError, match=r"low=-1\.0 has no effect with first='alpha_beta'"):
        E.run("lrp", net, torch.randn(1, 3, 4), first="alpha_beta", low=-1.0)


def test_gradcam_temporal_needs_a_map_with_a_time_axis() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    x = torch.randn(1, 3, 6, 6)
    with pytest.raises(UsageError, match=r"temporal='block' has no effect with a map without a time axis"):
        E.run("gradcam", net, x, [0], layer="0", temporal="block")
    plain = E.run("gradcam", net, x, [0], layer="0", resize=False)
    assert torch.equal(E.run("gradcam", net, x, [0], layer="0", temporal="linear", resize=False), plain)


def test_weak_localisation_volume_needs_a_clip() -> None:
    maps = torch.zeros(1, 8, 8)
    maps[0, 2:4, 2:4] = 1.0
    boxes = [[[2, 2, 3, 3]]]
    with pytest.raises(UsageError, match=r"volume=False has no effect with an image"):
        weak_localisation(None, torch.zeros(1, 3, 8, 8), maps, boxes=boxes, val_alphas=[0.5], volume=False)
    iou = weak_localisation(None, torch.zeros(1, 3, 8, 8), maps, boxes=boxes, val_alphas=[0.5])["loc_val_iou"]
    assert iou.tolist() == [[1.0]]
