"""The explainer protocol and registry: :class:`Explanation`, :class:`Method`, :data:`METHODS`, :func:`register`.

Every method is one function ``fn(model, x, target, **params) -> Tensor`` that returns a signed, raw map of
shape ``(B, *native spatial dims)``; :func:`xcore.explain.run` resizes it to the spatial dims of ``x``
(``x.shape[2:]``: H×W images, T×H×W clips, T×V×M skeletons) unless ``resize=False``. A method with several maps
(e.g. discriminative relevance: temporal / spatial / full) or per-sample side values (freeze-frame predictions,
attention weights) returns an :class:`Explanation` instead; its first map is the primary one. Targets, the
model context, layer lookup and map utilities live in :mod:`xcore.core`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from xcore.core.targets import Target
from xcore.registry import Registry, keyword_defaults, merge_params


@dataclass
class Explanation:
    """A multi-part explanation: named maps (B, *S') — the first is the primary one, which metrics evaluate —
    and per-sample extras (B, ...) such as freeze-frame predictions or attention weights (never resized)."""

    maps: dict[str, Tensor]
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.maps:
            raise ValueError("an Explanation needs at least one map")

    @property
    def primary(self) -> str:
        return next(iter(self.maps))

    def map(self) -> Tensor:
        """The primary map."""
        return self.maps[self.primary]

    def apply(self, fn: Callable[[Tensor], Tensor]) -> Explanation:
        """The same explanation with ``fn`` applied to every map (extras untouched)."""
        return Explanation({k: fn(v) for k, v in self.maps.items()}, dict(self.extras))


class ExplainFn(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, target: Target, **params: Any) -> Tensor | Explanation: ...


@dataclass(frozen=True)
class Method:
    """A registered explanation method: its function and its published default parameters."""

    name: str
    fn: ExplainFn
    defaults: dict[str, Any] = field(default_factory=dict)
    uses_layer: bool = False
    resize_mode: str = "linear"
    extras: tuple[str, ...] = ()

    def params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The full parameters: the published defaults updated with ``overrides`` (unknown names raise)."""
        return merge_params("method", self.name, self.defaults, overrides)


METHODS: Registry[Method] = Registry("explanation method")


def register(name: str, *, resize_mode: str = "linear", extras: tuple[str, ...] = ()
             ) -> Callable[[ExplainFn], ExplainFn]:
    """Register ``fn`` under ``name``; its keyword-only defaults become the recorded parameters.

    ``resize_mode`` is how the native map is brought to the input grid: ``"linear"`` (bi-/trilinear) or
    ``"nearest"`` (each native cell repeated, e.g. an ST-GCN layer's T/4 frames over the input frames).
    ``extras``: the per-sample side values an :class:`Explanation` of this method may carry (the pipeline gives
    each a list column in the ``metrics`` table).
    """

    def deco(fn: ExplainFn) -> ExplainFn:
        defaults = keyword_defaults(fn)
        METHODS.add(name, Method(name, fn, defaults, uses_layer="layer" in defaults, resize_mode=resize_mode,
                                 extras=tuple(extras)))
        return fn

    return deco
