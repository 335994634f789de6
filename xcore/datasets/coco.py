"""The ``coco`` kind: COCO instance annotations (Lin et al., Microsoft COCO, ECCV 2014 / cocodataset.org data
format) read per (image, class present) for the pointing game (thesis §5.4.4.1; facebookresearch/TorchRay
torchray/benchmark/pointing_game.py).

Reader options come from the checkpoint's recorded preprocessing: its input size becomes the shorter side (no crop),
its mean / std the normalisation. The embedded default is the synthetic shapes set in COCO format
(:func:`xcore.data.synthetic_coco.generate_coco`); there is no default trainer and no demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xcore.data.coco import CocoReader
from xcore.data.synthetic_coco import default_coco_root, generate_coco
from xcore.datasets.base import DatasetKind, Demo, register


def coco_options(meta: dict[str, Any]) -> dict[str, Any]:
    """``{"size": …, "mean": …, "std": …}`` from a checkpoint's metadata: ``input_size`` (its last entry when a list;
    224 when unrecorded) as the shorter side, ``mean`` / ``std`` when recorded (ImageNet's otherwise)."""
    size = meta.get("input_size") or 224
    out: dict[str, Any] = {"size": int(size[-1] if isinstance(size, list | tuple) else size)}
    out.update({k: tuple(float(v) for v in meta[k]) for k in ("mean", "std") if meta.get(k)})
    return out


def generate() -> Path:
    return generate_coco(default_coco_root())


POINTING = Demo("", ("gradcam", "gradient", "centre", "random"), ("pointing_game",), target="label", uses="imagenet")
"""The demo's pointing game: the shapes model (the ``imagenet`` kind's demo model) explains each class present in
the synthetic COCO-format images (thesis §5.4.4.1)."""

COCO = register(DatasetKind("coco", CocoReader, "image", options=coco_options, generate=generate, demo=POINTING,
                            quick=POINTING))
