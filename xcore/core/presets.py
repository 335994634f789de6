"""Input normalisation presets: the mean / std / scale / channel order a model was trained with.

Explainers that work in pixel space (superpixels, LIME, XRAI, LRP's z^β bounds) undo the normalisation, and the
readers apply it, so the numbers live here, below both. ``x = (raw · scale − mean) / std`` channel-wise, with
``raw`` the uint8 pixel and the channels reversed first when ``bgr``.
"""

from __future__ import annotations

from dataclasses import dataclass

from xcore.errors import UsageError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
KINETICS_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
C3D_MEAN_BGR: tuple[float, float, float] = (90.0, 98.0, 102.0)
"""jfzhang95/pytorch-video-recognition ``dataloaders/dataset.py`` subtracts this from OpenCV (BGR) frames in 0..255."""


@dataclass(frozen=True)
class Preset:
    """One preprocessing preset: crop ``size``, ``resize`` (shorter side, or exact (height, width)), and the
    normalisation ``x = (raw · scale − mean) / std`` (channels reversed first when ``bgr``)."""

    name: str
    size: int
    resize: int | tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0
    bgr: bool = False

    def pixel_mean_std(self) -> tuple[list[float], list[float]]:
        """(mean, std) in [0, 1] pixel units that map a normalised input back to pixels:
        ``x = (raw·scale − mean)/std`` ⇒ ``raw/255 = x·std/(255·scale) + mean/(255·scale)``."""
        unit = 255.0 * self.scale
        return [m / unit for m in self.mean], [s / unit for s in self.std]


PRESETS: dict[str, Preset] = {
    # torchvision's ImageNet classification preset (ImageClassification: resize 256, crop 224)
    "imagenet": Preset("imagenet", 224, 256, IMAGENET_MEAN, IMAGENET_STD),
    # torchvision's VideoClassification preset of r3d_18 / mc3_18 / r2plus1d_18 (resize 128×171, crop 112)
    "kinetics": Preset("kinetics", 112, (128, 171), KINETICS_MEAN, KINETICS_STD),
    # C3D (jfzhang95/pytorch-video-recognition): BGR, 0..255, minus (90, 98, 102), no std, 128×171 -> 112
    "c3d": Preset("c3d", 112, (128, 171), C3D_MEAN_BGR, (1.0, 1.0, 1.0), scale=1.0, bgr=True),
    # "kinetics" at half size for CPU training: 64×85 -> 56 (keeps the part of the frame 128×171 -> 112 keeps)
    "small": Preset("small", 56, (64, 85), KINETICS_MEAN, KINETICS_STD),
}


def preset(name: str) -> Preset:
    """The named preset; ``UsageError`` for an unknown name."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]
