"""Every PIL image mode to 8-bit RGB, the step before the image transform resizes and normalises (issue 12,
finding 3: ``convert("RGB")`` clips a 16-bit ``I;16`` image to white).

- ``RGB``: as it is.
- ``L``, ``1``: grey replicated to the three channels (``1``: 0 or 255).
- ``LA``, ``RGBA``, ``P``, ``PA``: alpha and palette transparency are *dropped*, not composited: the colour
  channels as stored. PIL's ``convert("RGB")`` and torchvision's ``read_image(mode=ImageReadMode.RGB)`` agree on it.
- ``CMYK``: PIL's conversion, ``R = (255 - C)(255 - K) / 255`` (torchvision's ``read_image`` gives the same);
  PIL's JPEG decoder undoes Adobe's inverted CMYK.
- ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (unsigned 16-bit): ``round(v · 255 / 65535)``: 0 → 0, 65535 → 255,
  linear (torchvision's ``to_dtype(uint8)`` takes the high byte, at most one level lower).
- ``I`` (32-bit signed) is read as 16-bit: older Pillow versions open 16-bit PNGs as ``I``, and 16-bit data
  converted with ``convert("I")`` arrives so. Values 0..65535 scale as ``I;16``; any value outside is refused (a
  32-bit image has no defined scaling).
- ``F`` (32-bit float) is assumed to be in [0, 1], torchvision's convention for float images: ``round(v · 255)``;
  a value outside [0, 1] or not finite is refused.
- Any other mode (``YCbCr``, ``LAB``, ``HSV``, ``RGBX``, ...): PIL's ``convert("RGB")``; a mode PIL cannot convert
  is refused.

A refusal is :class:`~xcore.errors.SampleError` of the ``load`` stage: one ``errors`` row naming the mode and the rule.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from xcore.errors import SampleError

SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_RANGES = {"I": (0, 65535, 65535.0), "F": (0.0, 1.0, 1.0)}  # accepted min, max, and the value that maps to 255


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as an 8-bit ``RGB`` image by the rule of its mode (the module's table); SampleError if none."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in SIXTEEN_BIT or mode in _RANGES:
        return _to_grey(img).convert("RGB")
    if mode in ("P", "PA"):  # via RGBA: PIL warns on a palette with transparency bytes converted straight to RGB
        return img.convert("RGBA").convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise SampleError("load", f"image mode {mode} has no conversion to RGB ({err})") from None


def _to_grey(img: Image.Image) -> Image.Image:
    """A one-channel high-bit-depth image (16-bit, ``I``, ``F``) -> mode ``L`` by its real range."""
    values = np.asarray(img).astype(np.float64)
    low, high, full = _RANGES.get(img.mode, (0, 65535, 65535.0))
    if not np.isfinite(values).all():
        raise SampleError("load", f"image mode {img.mode}: non-finite values; no defined scaling to 8 bits")
    if values.size and (values.min() < low or values.max() > high):
        raise SampleError("load", f"image mode {img.mode}: values {values.min():g}..{values.max():g} lie outside "
                                  f"{low}..{high}, the range this mode is read in; no defined scaling to 8 bits")
    return Image.fromarray(np.rint(values * (255.0 / full)).astype(np.uint8), "L")
