"""Checkpoints: a ``.pt`` state dict plus a ``.json`` sidecar that says how to rebuild and feed the model."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xcore.errors import UsageError
from xcore.io.atomic import atomic_open
from xcore.models.zoo import build_model, load_weights, require_file

REQUIRED_META = ("arch", "num_classes")


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


def read_meta(path: Path | str) -> dict[str, Any]:
    """The metadata of the checkpoint at ``path``: its JSON sidecar, or torchvision's for a torchvision
    weight file; UsageError (one line) when missing or invalid."""
    mpath = meta_path(path)
    try:
        meta = json.loads(mpath.read_text())
    except FileNotFoundError:
        known = torchvision_meta(Path(path))
        if known is not None:
            return known
        raise UsageError(f"checkpoint metadata {mpath} does not exist (write it with the arch, num_classes, "
                         "input_size, mean and std keys; torchvision weight files need none)") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"checkpoint metadata {mpath} is unreadable: {err}") from None
    if not isinstance(meta, dict) or any(k not in meta for k in REQUIRED_META):
        raise UsageError(f"checkpoint metadata {mpath} lacks {' or '.join(REQUIRED_META)}")
    return meta


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model described by ``path``'s metadata, load its weights, and return it in eval mode."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".pt")
    require_file(path)
    meta = read_meta(path)
    model = build_model(meta["arch"], int(meta["num_classes"]), **(meta.get("arch_kwargs") or {}))
    load_weights(model, path)
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
