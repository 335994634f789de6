"""Layers named by dotted path: look one up (with a did-you-mean error) and pick the default CAM layer."""

from __future__ import annotations

import difflib

from torch import nn

from xcore.errors import UnknownLayerError, UsageError


def get_layer(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``"layer4"``, ``"features.29"``); a clear error otherwise."""
    names = [n for n, _ in model.named_modules() if n]
    try:
        return model.get_submodule(path)
    except AttributeError:
        close = difflib.get_close_matches(path, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; layers include {', '.join(names[-5:])}"
        raise UnknownLayerError(f"unknown layer {path!r} in {type(model).__name__}{hint}") from None


def default_layer(model: nn.Module) -> str:
    """The layer CAM methods use when none is named: ``model.xcore_cam_layer`` if set, else the last conv."""
    name = getattr(model, "xcore_cam_layer", None)
    if isinstance(name, str):
        return name
    last = None
    for n, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            last = n
    if last is None:
        raise UsageError(f"{type(model).__name__} has no conv layer; name one with layer=")
    return last
