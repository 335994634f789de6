"""The model registry: ``MODELS.get(arch)(num_classes, **kw) -> nn.Module`` with ``xcore_cam_layer`` set.

torchvision architectures are built with ``weights=None``: nothing is ever downloaded. Trained weights come
from :func:`load_weights` (always ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from xcore.errors import UsageError
from xcore.models.smallcnn import SmallCNN
from xcore.registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


def _torchvision(fn: Callable[..., nn.Module], cam_layer: str, **fixed: Any) -> Builder:
    def build(num_classes: int, **kw: Any) -> nn.Module:
        model = fn(weights=None, num_classes=num_classes, **{**fixed, **kw})
        model.xcore_cam_layer = cam_layer
        return model

    build.__doc__ = f"torchvision {fn.__name__} (weights=None), CAM layer {cam_layer!r}."
    return build


@MODELS.register("smallcnn")
def smallcnn(num_classes: int, **kw: Any) -> nn.Module:
    """:class:`~xcore.models.smallcnn.SmallCNN`, CAM layer ``features``."""
    return SmallCNN(num_classes, **kw)


@MODELS.register("stgcn")
def stgcn(num_classes: int, **kw: Any) -> nn.Module:
    """ST-GCN (10 blocks; ``width`` scales the channels, ``blocks=7`` drops blocks 3, 6, 9), CAM layer = last block."""
    from xcore.models.stgcn import STGCN

    return STGCN(num_classes, **kw)


@MODELS.register("stgcn7")
def stgcn7(num_classes: int, **kw: Any) -> nn.Module:
    """The 7-block ST-GCN of Das & Ortega, STG-Grad-CAM paper §3.2 (blocks 3, 6 and 9 removed)."""
    return stgcn(num_classes, **{**kw, "blocks": 7})


def _video(name: str) -> Builder:
    def build(num_classes: int, **kw: Any) -> nn.Module:
        from xcore.models import video_nets as video

        return getattr(video, f"build_{name}")(num_classes, **kw)

    build.__doc__ = f"Video model {name} (xcore.models.video_nets.build_{name}); input (B, C, T, H, W)."
    return build


for _name in ("c3d", "cnn_lstm", "cnn_lstm_attention", "small3d", "r3d_18", "mc3_18", "r2plus1d_18"):
    MODELS.add(_name, _video(_name))

MODELS.add("vgg16", _torchvision(tvm.vgg16, "features.29"))
MODELS.add("resnet18", _torchvision(tvm.resnet18, "layer4"))
MODELS.add("resnet50", _torchvision(tvm.resnet50, "layer4"))
MODELS.add("densenet121", _torchvision(tvm.densenet121, "features"))
MODELS.add("inception_v3", _torchvision(tvm.inception_v3, "Mixed_7c", aux_logits=False, init_weights=False))


def build_model(arch: str, num_classes: int, **kw: Any) -> nn.Module:
    """A freshly initialised ``arch`` with ``num_classes`` outputs (unknown arch: ``UsageError``)."""
    return MODELS.get(arch)(num_classes, **kw)


def require_file(path: Path | str) -> Path:
    """``path`` as a ``Path`` when it is a file; a one-line :class:`UsageError` saying it is a directory or does not
    exist otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    return path


# what torch's weights-only unpickler says it refused: "Unsupported global: GLOBAL builtins.eval was not an
# allowed global", "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ADVICE = re.compile(r"weights_only|Weights only load failed|Check the documentation|Please file an issue|"
                     r"allowlist|safe_globals|trust")


def load_error(err: BaseException) -> str:
    """The reason ``torch.load(weights_only=True)`` refused a file, in one line: the blocked global it names (a
    pickle that would run code), else torch's own detail without its advice to load with ``weights_only=False``
    (which would run whatever code the file carries)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        return (f"it needs the global {blocked.group(1)}, which is refused (loading it could run code; "
                "a checkpoint must be a plain state_dict of tensors)")
    detail = [ln.strip() for ln in text.splitlines() if ln.strip() and not _ADVICE.search(ln)]
    return " ".join(detail) or type(err).__name__


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a state dict (or a dict holding one under ``state_dict``/``model``).

    A missing, unreadable or non-state-dict file raises :class:`UsageError` with one line.
    """
    path = require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean the same thing here
        raise UsageError(f"checkpoint {path} is unreadable: {load_error(err)}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"checkpoint {path} does not hold a state_dict")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def torchvision_compat(state: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Key fixes for torchvision's published weight files, as torchvision itself applies them: DenseNet's
    pre-0.3 ``norm.1`` names become ``norm1``; Inception v3's auxiliary head is dropped when the model has none."""
    out = {}
    for key, value in state.items():
        m = _OLD_DENSENET_KEY.match(key)
        if m and key not in own:
            key = m.group(1) + m.group(2)
        if key.startswith("AuxLogits.") and key not in own:
            continue
        out[key] = value
    return out


def load_weights(model: nn.Module, path: Path | str) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` (strict); mismatched keys or shapes raise UsageError."""
    own = model.state_dict()
    state = torchvision_compat(read_state_dict(path), own)
    # BatchNorm fills a missing ``num_batches_tracked`` itself (older files, e.g. torchvision's, have none)
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes))
                 if keys]
        raise UsageError(f"checkpoint {path} does not match {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
    return model
