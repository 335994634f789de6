"""The explainer protocol: targets, model-state handling, layer lookup and the method registry.

Every method is one function ``fn(model, x, target, **params) -> Tensor`` that returns a signed, raw map of
shape ``(B, *native spatial dims)``; :func:`xcore.explain.run` resizes it to the spatial dims of ``x``
(``x.shape[2:]``: H×W images, T×H×W clips, T×V×M skeletons) unless ``resize=False``. A method with several maps
(e.g. discriminative relevance: temporal / spatial / full) or per-sample side values (freeze-frame predictions,
attention weights) returns an :class:`Explanation` instead; its first map is the primary one.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from xcore.errors import UnknownLayerError, UsageError
from xcore.registry import Registry, keyword_defaults, merge_params

TargetFn = Callable[[Tensor], Tensor]
TargetLike = int | TargetFn
Targets = Sequence[TargetLike] | Tensor | TargetFn | None


class Target:
    """What each sample's explanation is *of*: a class index or a scalar function of the model output.

    ``Target.of(targets, batch)`` accepts
    - ``None``: the class predicted on the clean input (resolved lazily from the first forward);
    - a sequence / 1-D tensor with one entry per sample, each an ``int`` class or a callable
      ``f(output[i:i+1]) -> Tensor`` of one scalar (regression-like targets);
    - one callable ``f(output) -> Tensor(B,)`` applied to the whole batch.
    A length that differs from the batch raises ``ValueError``.
    """

    def __init__(self, classes: Tensor | None, fns: list[TargetFn | None] | None,
                 batch_fn: TargetFn | None) -> None:
        self._classes = classes
        self._fns = fns
        self._batch_fn = batch_fn

    @classmethod
    def of(cls, targets: Targets, batch: int) -> Target:
        if isinstance(targets, Target):
            return targets
        if targets is None:
            return cls(None, None, None)
        if callable(targets) and not isinstance(targets, Tensor):
            return cls(None, None, targets)
        if isinstance(targets, Tensor):
            if targets.ndim != 1 or targets.dtype.is_floating_point:
                raise ValueError("targets tensor must be 1-D integer class indices")
            items: list[TargetLike] = [int(t) for t in targets.tolist()]
        else:
            items = list(targets)
        if len(items) != batch:
            raise ValueError(f"got {len(items)} targets for a batch of {batch} samples")
        if all(isinstance(t, int) or (hasattr(t, "__index__") and not callable(t)) for t in items):
            return cls(torch.tensor([int(t) for t in items], dtype=torch.long), None, None)
        fns: list[TargetFn | None] = []
        classes = []
        for t in items:
            if callable(t):
                fns.append(t)
                classes.append(-1)
            else:
                fns.append(None)
                classes.append(int(t))
        return cls(torch.tensor(classes, dtype=torch.long), fns, None)

    @property
    def is_class(self) -> bool:
        """True when every sample targets a class index (possibly the predicted one)."""
        return self._batch_fn is None and self._fns is None

    @property
    def resolved(self) -> bool:
        """False only for a predicted-class target whose classes no forward has fixed yet."""
        return not (self.is_class and self._classes is None)

    def tile(self, k: int) -> Target:
        """This target for the batch tiled ``k`` times along dim 0 (row ``j·B + i`` is sample ``i``).

        A predicted-class target must be :attr:`resolved` first (on the clean input), else the tiled batch's
        first forward would fix the classes from perturbed copies.
        """
        if not self.resolved:
            raise ValueError("resolve the predicted classes on the clean input before tiling the target")
        batch_fn = self._batch_fn
        if batch_fn is not None:
            return Target(None, None, lambda out: torch.cat([batch_fn(o).reshape(-1) for o in out.chunk(k)]))
        assert self._classes is not None
        return Target(self._classes.repeat(k), None if self._fns is None else self._fns * k, None)

    def classes(self, output: Tensor) -> Tensor:
        """Class indices (B,) on ``output``'s device; the predicted class where none was given."""
        if not self.is_class:
            raise TypeError("this target is a function of the output, not a class index")
        if self._classes is None:
            self._classes = output.detach().argmax(dim=1).cpu()
        return self._classes.to(output.device)

    def select(self, output: Tensor, *, softmax: bool = False) -> Tensor:
        """The explained scalar per sample, shape (B,): ``y^c`` (or ``softmax(y)_c``), or the target function."""
        if self._batch_fn is not None:
            out = self._batch_fn(output)
            return out.reshape(output.shape[0])
        scores = output.softmax(dim=1) if softmax else output
        if self._fns is None:
            return scores.gather(1, self.classes(output)[:, None]).squeeze(1)
        assert self._classes is not None
        picked = []
        for i, fn in enumerate(self._fns):
            picked.append(fn(output[i : i + 1]).reshape(()) if fn is not None else scores[i, self._classes[i]])
        return torch.stack(picked)


@contextlib.contextmanager
def rnn_without_cudnn(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.RNNBase`` submodule of ``model`` runs its CUDA forward with cuDNN disabled; the
    flag is restored after each call and on exit, hooks removed. cuDNN's RNN backward refuses eval mode ("cudnn RNN
    backward can only be called in training mode", methods.md §7.2); the autograd node of an RNN is chosen at its
    forward, and the non-cuDNN one is built from ordinary ops whose backward never calls cuDNN (convs keep it)."""
    prev = torch.backends.cudnn.enabled
    saved: list[bool] = []

    def pre(_m: nn.Module, args: Any) -> None:
        saved.append(torch.backends.cudnn.enabled)
        if any(isinstance(a, Tensor) and a.is_cuda for a in args):
            torch.backends.cudnn.enabled = False

    def post(_m: nn.Module, _args: Any, _out: Any) -> None:
        torch.backends.cudnn.enabled = saved.pop()

    handles = []
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        torch.backends.cudnn.enabled = prev


@contextlib.contextmanager
def model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and freeze parameters for the block; restore both on exit, also on error.
    RNN forwards on CUDA run without cuDNN inside the block (:func:`rnn_without_cudnn`), so gradients flow through
    an LSTM in eval mode.
    """
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in grads:
        p.requires_grad_(False)
    try:
        with rnn_without_cudnn(model):
            yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, req in grads.items():
            p.requires_grad_(req)


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


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


@contextlib.contextmanager
def capture(model: nn.Module, path: str) -> Iterator[dict[str, Tensor]]:
    """Record the forward output of ``model.<path>`` as ``store["act"]``; the hook is removed on exit."""
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        store["act"] = out[0] if isinstance(out, tuple) else out

    handle = get_layer(model, path).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


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


def reduce_channels(g: Tensor, how: str = "max_abs") -> Tensor:
    """Reduce (B, C, *S) to (B, *S): ``max_c |g|`` (Simonyan; methods.md §0), or sum / mean / abs_sum / l2."""
    if how == "max_abs":
        return g.abs().amax(dim=1)
    if how == "sum":
        return g.sum(dim=1)
    if how == "mean":
        return g.mean(dim=1)
    if how == "abs_sum":
        return g.abs().sum(dim=1)
    if how == "l2":
        return g.pow(2).sum(dim=1).sqrt()
    raise UsageError(f"unknown channel reduction {how!r}; use max_abs, sum, mean, abs_sum or l2")


def map_grid(x: Tensor, maps: Tensor) -> tuple[int, ...]:
    """The input grid a (B, *S') map explains: the leading ``len(S')`` spatial dims of ``x`` (B, C, *S).

    Images and clips explain every spatial dim; a skeleton map (B, T, V) explains (T, V) of x (B, C, T, V, M),
    each cell covering all person slots.
    """
    return tuple(int(s) for s in x.shape[2 : 2 + maps.ndim - 1])


def resize_to(maps: Tensor, size: Sequence[int], mode: str = "linear") -> Tensor:
    """Resize (B, *S') maps to (B, *size): (bi-/tri)linear with ``align_corners=False``, or ``"nearest"``
    (nearest-exact: an integer down-sampling's cells are repeated)."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    if maps.ndim - 1 != len(size):
        raise ValueError(f"cannot resize a map of shape {tuple(maps.shape)} to {size}")
    if mode == "nearest":
        return torch.nn.functional.interpolate(maps[:, None].float(), size=size,
                                               mode="nearest-exact")[:, 0].to(maps.dtype)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode=mode,
                                           align_corners=False)[:, 0].to(maps.dtype)
