"""Checkpoints: a ``.pt`` state dict plus what rebuilds and feeds the model — its ``.json`` sidecar, the
command line's overrides (``--arch``, ``--num-classes``, ``--input-size``, ``--mean``, ``--std``,
``--model-factory``), or torchvision's metadata for torchvision's own weight files.

:func:`load_checkpoint` is the one code path of every job: metadata = sidecar (when present) updated by the
overrides (:func:`read_meta`); the model built by the zoo (``arch``) or by a plug-in factory ``package.module:fn``
(:func:`build_from_meta`); the weights read with ``torch.load(..., weights_only=True)`` and unwrapped from the
usual training-checkpoint shapes (:func:`read_weights`), then loaded strictly (:func:`fit_weights`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import inspect
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xcore.errors import UsageError
from xcore.io.atomic import atomic_open
from xcore.models.zoo import build_model, load_error, require_file, torchvision_compat

REQUIRED_META = ("arch", "num_classes")
BUILDERS = ("arch", "model_factory")  # what builds the model: a zoo name, or a plug-in factory (which wins)
WRAPPERS = ("state_dict", "model_state_dict", "model")  # where training checkpoints keep the state dict
PARALLEL_PREFIX = "module."  # DataParallel / DistributedDataParallel's key prefix
FACTORY_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temp file in ``path``'s folder, then ``os.replace`` it into place."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def meta_path(path: Path | str) -> Path:
    """The JSON sidecar of a checkpoint."""
    return Path(path).with_suffix(".json")


def save_checkpoint(path: Path | str, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model``'s state dict to ``path`` and ``meta`` (completed with defaults) to its ``.json``.

    ``meta`` needs ``arch`` and ``num_classes``; ``classes``, ``class_names``, ``input_size``, ``mean``, ``std``,
    ``val_accuracy`` and ``arch_kwargs`` are recorded as given (``None`` / ``{}`` when absent), ``created`` and
    ``torch`` are filled in. Returns ``path``.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError("the checkpoint path must not end in .json (that is the metadata sidecar)")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {', '.join(missing)}")
    full: dict[str, Any] = {"classes": None, "class_names": None, "input_size": None, "mean": None,
                            "std": None, "val_accuracy": None, "arch_kwargs": {}}
    full.update(meta)
    full["created"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    full["torch"] = torch.__version__
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    _atomic_write(path, buf.getvalue())
    _atomic_write(meta_path(path), (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return path


# torchvision's published ImageNet weight files (``resnet50-0676ba61.pth``, ...): their metadata is known
TORCHVISION_FILES = {"vgg16": "vgg16-", "resnet18": "resnet18-", "resnet50": "resnet50-",
                     "densenet121": "densenet121-", "inception_v3": "inception_v3_google-"}


def torchvision_meta(path: Path) -> dict[str, Any] | None:
    """Metadata of a torchvision ImageNet weight file named as torchvision names it, else ``None``.

    ImageNet-1k class order (sorted WNIDs), 224² inputs resized from 256 (299 from 342 for Inception v3),
    ImageNet mean / std — torchvision's ``IMAGENET1K_V1`` transforms.
    """
    for arch, prefix in TORCHVISION_FILES.items():
        if path.name.startswith(prefix):
            size, resize = (299, 342) if arch == "inception_v3" else (224, 256)
            return {"arch": arch, "num_classes": 1000, "input_size": size, "resize": resize,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "source": "torchvision"}
    return None


def merge_meta(meta: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``meta`` with every non-``None`` override replacing its key; ``overridden`` lists the replaced keys.

    A builder override (``arch`` or ``model_factory``) that differs from the builder the sidecar names drops the
    sidecar's builder keys and ``arch_kwargs`` (they belong to the other architecture; a sidecar naming no builder
    keeps its ``arch_kwargs``); an ``input_size`` that differs drops the recorded ``resize`` (tied to the old size:
    the shorter side is then resized to the new size).
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    out = dict(meta)
    if any(out.get(k) for k in BUILDERS) and any(out.get(k) != given[k] for k in BUILDERS if k in given):
        for key in (*BUILDERS, "arch_kwargs"):
            out.pop(key, None)
    if "input_size" in given and out.get("input_size") != given["input_size"]:
        out.pop("resize", None)
    out.update(given)
    if given:
        out["overridden"] = sorted(given)
    return out


def read_meta(path: Path | str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of the checkpoint at ``path``: its JSON sidecar (torchvision's for a torchvision weight file)
    updated by ``overrides`` (:func:`merge_meta`). The sidecar is optional when the overrides name a builder
    (``arch`` or ``model_factory``) and ``num_classes``; UsageError (one line) when missing, invalid or
    incomplete."""
    mpath = meta_path(path)
    meta: Any
    try:
        meta = json.loads(mpath.read_text())
    except FileNotFoundError:
        meta = torchvision_meta(Path(path))
        given = {k for k, v in (overrides or {}).items() if v is not None}
        if meta is None and not (given & set(BUILDERS) and "num_classes" in given):
            raise UsageError(f"checkpoint metadata {mpath} does not exist (write it with the arch, num_classes, "
                             "input_size, mean and std keys, or give --arch NAME or --model-factory "
                             "package.module:fn with --num-classes N; torchvision weight files need none)") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"checkpoint metadata {mpath} is unreadable: {err}") from None
    if not isinstance(meta, dict | None):
        raise UsageError(f"checkpoint metadata {mpath} is not a JSON object")
    merged = merge_meta(meta or {}, overrides)
    if "num_classes" not in merged or not any(merged.get(k) for k in BUILDERS):
        raise UsageError(f"checkpoint metadata {mpath} lacks {' or '.join(REQUIRED_META)}")
    return merged


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable a plug-in spec ``"package.module:fn"`` names (``fn`` may be dotted: ``Class.build``).

    The module is imported by name, as job plug-ins are: it must be importable in the driver and in every Ray
    actor — installed, on ``PYTHONPATH``, or under the driver's working directory, which Ray puts on its local
    workers' ``sys.path``; the driver appends its working directory too when the module is not found otherwise
    (``xai`` is a console script, whose ``sys.path`` lacks it). A bad spec is a one-line UsageError.
    """
    if not FACTORY_SPEC.fullmatch(spec):
        raise UsageError(f"model factory {spec!r}: use package.module:function")
    module, _, attr = spec.partition(":")
    try:
        fn = functools.reduce(getattr, attr.split("."), _import(module))
    except Exception as err:  # ImportError, AttributeError, or whatever the user's module raised on import
        raise UsageError(f"cannot load model factory {spec!r}: {type(err).__name__}: "
                         f"{' '.join(str(err).split())}") from None
    if not callable(fn):
        raise UsageError(f"model factory {spec!r} is a {type(fn).__name__}, not a function")
    return fn


def _import(module: str) -> Any:
    """``importlib.import_module(module)``, retried with the working directory on ``sys.path`` (as on Ray's
    workers) when the module's top-level package is not found."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if err.name != module.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(module)


def build_from_meta(meta: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model of ``meta``: ``model_factory(num_classes=N, **arch_kwargs)`` (``fn(**arch_kwargs)``
    when ``fn`` takes no ``num_classes``) when a factory is named, else the zoo's ``build_model(arch, N)``."""
    num_classes, kwargs = int(meta["num_classes"]), dict(meta.get("arch_kwargs") or {})
    spec = meta.get("model_factory")
    if not spec:
        return build_model(str(meta["arch"]), num_classes, **kwargs)
    fn = load_factory(str(spec))
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it the class count
        params = None
    takes_n = params is None or any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)
    try:
        model = fn(num_classes=num_classes, **kwargs) if takes_n else fn(**kwargs)
    except Exception as err:
        raise UsageError(f"model factory {spec!r} failed: {type(err).__name__}: {' '.join(str(err).split())}"
                         ) from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model factory {spec!r} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_weights(path: Path | str, own_keys: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The state dict at ``path`` (``torch.load(..., weights_only=True)``, never anything else): as saved, or
    unwrapped from ``{"state_dict": ...}``, ``{"model_state_dict": ...}`` or ``{"model": ...}``; the
    DataParallel / DDP prefix ``module.`` is stripped when every key has it and the model's own keys
    (``own_keys``) do not all have it. An unreadable file or no state dict is a one-line UsageError."""
    path = require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean the same thing here
        raise UsageError(f"checkpoint {path} is unreadable: {load_error(err)}") from None
    if not _is_state(obj):
        obj = next((obj[k] for k in WRAPPERS if isinstance(obj, Mapping) and _is_state(obj.get(k))), None)
    if obj is None:
        raise UsageError(f"checkpoint {path} does not hold a state_dict (nor one under "
                         f"{', '.join(WRAPPERS)})")
    state = {str(k): v for k, v in obj.items()}
    own = list(own_keys)
    if all(k.startswith(PARALLEL_PREFIX) for k in state) and not (own and all(
            k.startswith(PARALLEL_PREFIX) for k in own)):
        state = {k.removeprefix(PARALLEL_PREFIX): v for k, v in state.items()}
    return state


def _keys(label: str, keys: list[str], shown: int = 3) -> str:
    return f"{label} ({len(keys)}): {', '.join(keys[:shown])}{', ...' if len(keys) > shown else ''}"


def fit_weights(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str) -> nn.Module:
    """Load ``state`` into ``model`` strictly (after torchvision's own key fixes); a mismatch is ONE line of
    UsageError listing the missing, unexpected and wrongly shaped keys (first three of each, with counts)."""
    own = model.state_dict()
    state = torchvision_compat(dict(state), own)
    # BatchNorm fills a missing ``num_batches_tracked`` itself (older files, e.g. torchvision's, have none)
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = [_keys(label, keys) for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape of file vs model", shapes)) if keys]
        raise UsageError(f"checkpoint {path} does not match {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
    return model


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu",
                    overrides: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model described by ``path``'s metadata updated by ``overrides`` (:func:`read_meta`), load its
    weights (:func:`read_weights`, :func:`fit_weights`), and return it in eval mode on ``device`` with the
    metadata."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".pt")
    require_file(path)
    meta = read_meta(path, overrides)
    model = build_from_meta(meta)
    fit_weights(model, read_weights(path, model.state_dict().keys()), path)
    if meta.get("preset"):  # a video checkpoint: LRP's z^β bounds are its preset's input range
        from xcore.data.video_transforms import video_preset

        model.xcore_input_bounds = video_preset(str(meta["preset"])).input_bounds()
        model.xcore_preset = str(meta["preset"])
    return model.to(device).eval(), meta


def weights_digest(path: Path | str) -> str:
    """First 16 hex digits of the sha256 of the ``.pt`` file (identifies the weights in run metadata)."""
    path = require_file(path)
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
