"""Every PIL mode a real dataset holds, written as a real file and loaded through the ImageNet reader (issue 12,
finding 3; xcore/data/image_modes.py): pixel values against hand-computed ones. The transform has mean 0, std 1
and the image's own size, so ``x * 255`` is the 8-bit RGB image the model sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xcore.data import ImageNetReader, ImageTransform
from xcore.errors import SampleError

S = 16  # images are S x S: no resize, no crop


TRANSFORM = ImageTransform(S, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(params=["transform", "reader"])
def seen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., np.ndarray]:
    """``seen(img, ext, **save)``: save ``img`` as ``val/<wnid>/img.<ext>`` under a fresh root and return, (S, S, 3),
    what the transform makes of the reopened file, or what the ImageNet reader loads."""

    def load(img: Image.Image, ext: str, **save: object) -> np.ndarray:
        folder = tmp_path / "root" / "val" / "n00000001"
        folder.mkdir(parents=True)
        img.save(folder / f"img.{ext}", **save)
        if request.param == "transform":
            with Image.open(folder / f"img.{ext}") as back:
                x = TRANSFORM(back)
        else:
            ds = ImageNetReader(tmp_path / "root", "val", transform=TRANSFORM)
            assert len(ds) == 1
            x = ds.load(0).x
        return x.permute(1, 2, 0).numpy() * 255

    return load


def grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.float64)[..., None], 3, axis=2)


RAMP = np.arange(S * S).reshape(S, S)  # 0..255


def test_l_grey_replicated(seen: Callable[..., np.ndarray]) -> None:
    got = seen(Image.fromarray(RAMP.astype(np.uint8), "L"), "png")
    np.testing.assert_allclose(got, grey3(RAMP), atol=1e-3)


def test_la_alpha_dropped(seen: Callable[..., np.ndarray]) -> None:
    la = np.stack([RAMP, 255 - RAMP], axis=2).astype(np.uint8)  # alpha 255 .. 0
    got = seen(Image.fromarray(la, "LA"), "png")
    np.testing.assert_allclose(got, grey3(RAMP), atol=1e-3)  # not composited on black (that would be L * alpha)


def test_p_palette_colours_transparency_dropped(seen: Callable[..., np.ndarray]) -> None:
    palette = [(10, 20, 30), (200, 100, 50), (0, 255, 128), (255, 255, 255)]
    index = (RAMP % 4).astype(np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette([c for rgb in palette for c in rgb] + [0] * (768 - 12))
    got = seen(img, "png", transparency=0)
    np.testing.assert_allclose(got, np.array(palette, np.float64)[index], atol=1e-3)


def test_rgba_alpha_dropped(seen: Callable[..., np.ndarray]) -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (S, S, 4), dtype=np.uint8)
    got = seen(Image.fromarray(rgba, "RGBA"), "png")
    np.testing.assert_allclose(got, rgba[..., :3].astype(np.float64), atol=1e-3)


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    c, k = cmyk[..., :3].astype(np.int64), cmyk[..., 3:].astype(np.int64)
    return np.rint((255 - c) * (255 - k) / 255)  # PIL's and torchvision's CMYK -> RGB


def test_cmyk_tiff_exact(seen: Callable[..., np.ndarray]) -> None:
    cmyk = np.random.default_rng(1).integers(0, 256, (S, S, 4), dtype=np.uint8)
    got = seen(Image.fromarray(cmyk, "CMYK"), "tif")
    np.testing.assert_allclose(got, _cmyk_to_rgb(cmyk), atol=1e-3)


def test_cmyk_jpeg(seen: Callable[..., np.ndarray]) -> None:
    """CMYK JPEGs (ImageNet holds some) are stored Adobe-inverted; PIL's decoder undoes that."""
    got = seen(Image.new("CMYK", (S, S), (10, 60, 120, 40)), "jpg", quality=100)
    np.testing.assert_allclose(got, np.broadcast_to([207.0, 164.0, 114.0], (S, S, 3)), atol=2)


def test_bilevel(seen: Callable[..., np.ndarray]) -> None:
    checker = (np.add.outer(np.arange(S), np.arange(S)) % 2).astype(bool)
    img = Image.fromarray(checker)
    assert img.mode == "1"
    got = seen(img, "png")
    np.testing.assert_allclose(got, grey3(checker * 255.0), atol=1e-3)


SIXTEEN = 257 * RAMP  # 0, 257, ..., 65535: the 16-bit ramp whose 8-bit image is exactly RAMP


@pytest.mark.parametrize(("ext", "dtype", "mode"), [("png", "<u2", "I;16"), ("tif", ">u2", "I;16B")])
def test_16_bit_ramp_scales_linearly(seen: Callable[..., np.ndarray], tmp_path: Path, ext: str, dtype: str,
                                     mode: str) -> None:
    img = Image.fromarray(SIXTEEN.astype(dtype))
    assert img.mode == mode
    img.save(tmp_path / f"copy.{ext}")
    with Image.open(tmp_path / f"copy.{ext}") as back:
        assert back.mode == mode and np.array_equal(np.asarray(back), SIXTEEN)  # really 16-bit on disk
    got = seen(img, ext)
    np.testing.assert_allclose(got, grey3(RAMP), atol=1e-3)  # 0..65535 -> 0..1 linearly, not all white


def test_16_bit_rounding(seen: Callable[..., np.ndarray]) -> None:
    values = np.array([0, 128, 129, 385, 386, 32767, 32768, 65406, 65407, 65535] * 26)[:S * S].reshape(S, S)
    expected = np.array([0, 0, 1, 1, 2, 127, 128, 254, 255, 255] * 26)[:S * S].reshape(S, S)  # round(v / 257)
    got = seen(Image.fromarray(values.astype(np.uint16)), "png")
    np.testing.assert_allclose(got, grey3(expected), atol=1e-3)


def test_mode_i_read_as_16_bit(seen: Callable[..., np.ndarray]) -> None:
    img = Image.fromarray(SIXTEEN.astype(np.int32))
    assert img.mode == "I"
    got = seen(img, "tif")
    np.testing.assert_allclose(got, grey3(RAMP), atol=1e-3)


@pytest.mark.parametrize("bad", [-1, 65536, 2**31 - 1])
def test_mode_i_outside_16_bits_is_refused(seen: Callable[..., np.ndarray], bad: int) -> None:
    values = SIXTEEN.astype(np.int32)
    values[3, 4] = bad
    with pytest.raises(SampleError, match=r"image mode I: values .* lie outside 0\.\.65535") as info:
        seen(Image.fromarray(values), "tif")
    assert info.value.stage == "load"


def test_float_in_unit_range(seen: Callable[..., np.ndarray]) -> None:
    img = Image.fromarray((RAMP / 255).astype(np.float32))
    assert img.mode == "F"
    got = seen(img, "tif")
    np.testing.assert_allclose(got, grey3(RAMP), atol=1e-3)


@pytest.mark.parametrize(("bad", "match"), [(1.5, r"values 0\.\.1\.5 lie outside 0\.0\.\.1\.0"),
                                            (-0.25, r"values -0\.25\.\.1 lie outside"),
                                            (float("nan"), "non-finite values")])
def test_float_outside_unit_range_is_refused(seen: Callable[..., np.ndarray], bad: float, match: str) -> None:
    values = (RAMP / 255).astype(np.float32)
    values[0, 1] = bad
    with pytest.raises(SampleError, match=match) as info:
        seen(Image.fromarray(values), "tif")
    assert info.value.stage == "load"
