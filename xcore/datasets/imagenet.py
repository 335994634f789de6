"""The ``imagenet`` kind: ImageNet-layout image folders (ILSVRC train / val, LOC boxes), and the demo's shapes.

Reader options come from the checkpoint's recorded preprocessing (input size, resize, mean / std); the embedded
default is the synthetic shapes set (:func:`xcore.data.generate_images`) with ``SmallCNN`` trained in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xcore.data import ImageNetReader, ImageTransform, default_data_root, generate_images
from xcore.datasets.base import DatasetKind, Demo, register
from xcore.models import train_model


def transform_of(meta: dict[str, Any]) -> ImageTransform:
    """The preprocessing recorded in a checkpoint's metadata (ImageNet mean / std and 224 px when unrecorded)."""
    size = meta.get("input_size") or 224
    size = int(size[-1] if isinstance(size, list | tuple) else size)
    kw = {k: meta[k] for k in ("mean", "std") if meta.get(k)}
    return ImageTransform(size, meta.get("resize"), **kw)


def image_options(meta: dict[str, Any]) -> dict[str, Any]:
    return {"transform": transform_of(meta)}


def generate() -> Path:
    return generate_images(default_data_root())


METHODS = ("gradient", "guided_backprop", "input_x_gradient", "gradcam", "centre", "random")

IMAGENET = register(DatasetKind(
    "imagenet", ImageNetReader, "image", options=image_options, train=train_model, generate=generate,
    demo=Demo(".xcore/models/smallcnn.pt", METHODS),
    # the ten-minute demo: a 64 px model (an 8×8 CAM; 96.7 % in 15 epochs, ~1 min on one thread) and 60 val images
    quick=Demo(".xcore/models/quick/smallcnn.pt", METHODS, ("deletion_insertion", "faithfulness"), samples=60,
               train={"epochs": 15, "lr": 3e-3, "input_size": 64}, min_accuracy=0.9,
               train_seconds=60)))
