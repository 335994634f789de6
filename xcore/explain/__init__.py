"""Explanation methods behind one protocol, found through a registry.

``run(name, model, x, targets, **params)`` returns a signed, un-normalised map of shape (B, *x.shape[2:])
(or the method's native resolution with ``resize=False``). Each method is one module that registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch
from torch import Tensor, nn

from xcore.core.context import model_device, model_state
from xcore.core.layers import get_layer
from xcore.core.maps import map_grid, resize_to
from xcore.core.param_types import fit_params
from xcore.core.params import check_ignored
from xcore.core.targets import Target, Targets
from xcore.explain.base import METHODS, Explanation, Method

__all__ = ["METHODS", "Explanation", "Method", "Target", "available", "run", "validate"]

# every module of this package registers its method(s) on import: adding a method = adding one module
for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")


def available() -> list[str]:
    """Registry names of every explanation method (the ``method`` column of the Parquet tables)."""
    return METHODS.names()


def validate(name: str, model: nn.Module | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve ``name`` and its full parameters; bring each given value to its declared type
    (:mod:`xcore.core.param_types`: ``layer=7`` is the layer named ``"7"``); check a named layer exists and that no
    parameter is set that the chosen variant ignores (:mod:`xcore.core.params`). Raises ``UsageError``."""
    method = METHODS.get(name)
    full = method.params(fit_params("method", name, method.fn, params or {}))
    check_ignored(method.fn, full)
    if model is not None and full.get("layer") is not None:
        get_layer(model, full["layer"])
    return full


def run(name: str, model: nn.Module, x: Tensor, targets: Targets = None, *, resize: bool = True,
        parts: bool = False, **params: Any) -> Tensor | Explanation:
    """Explain ``model`` on the batch ``x`` (B, C, *S) for ``targets`` with method ``name``.

    Returns a float tensor (B, *S) on the model's device: signed and raw (no normalisation); with
    ``resize=False`` the method's native resolution (e.g. the CAM layer's grid). With ``parts=True`` the
    result is an :class:`Explanation` (every map, each resized alike, and the method's per-sample extras; a
    single-map method gives one part named ``"map"``); otherwise a multi-part method's primary map. The model's
    train/eval state and ``requires_grad`` flags are restored on exit, and every hook removed, also on error.
    """
    method = METHODS.get(name)
    full = method.params(params)
    if x.ndim < 3:
        raise ValueError(f"x must be batched (B, C, *spatial); got shape {tuple(x.shape)}")
    target = Target.of(targets, x.shape[0])
    x = x.to(model_device(model))
    with model_state(model), torch.enable_grad():
        out = method.fn(model, x, target, **full)
    expl = out if isinstance(out, Explanation) else Explanation({"map": out})
    expl = expl.apply(lambda m: m.detach())
    expl.extras = {k: v.detach() for k, v in expl.extras.items()}
    if resize:
        expl = expl.apply(lambda m: resize_to(m, map_grid(x, m), method.resize_mode))
    return expl if parts else expl.map()
