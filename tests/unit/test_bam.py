"""BAM (thesis §3.5.4, eqs 3.7–3.9): the reader's object region on a hand-written tree (val_loc rows first, a
non-square box, the val_mask index, PIL-bilinear resizing computed by hand), the safe mask loader, the reference
normalisation against NumPy, g_c on a hand-made map, the model contrast score on hand rows, the synthetic generator
and the dataset kind."""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xcore.metrics as M
from xcore.data.bam import BAMReader, load_masks
from xcore.data.synthetic_bam import generate_bam, render_bam
from xcore.datasets import open_dataset
from xcore.datasets.bam import bam_options
from xcore.errors import UsageError
from xcore.metrics.bam import bam_attribution, model_contrast, normalise
from xcore.models.train_bam import train_bam

CROP = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], np.uint8)  # 2 rows × 4 cols: a transposed paste cannot match


def _write_tree(root: Path) -> Path:
    """obj/ with classes a, b; val ``a-sky-0901.jpg`` (label 0, mask 0*100 + 1, full-image box) and
    ``b-sea-0903.jpg`` (label 1, mask 1*100 + 3 = CROP, box rows 10..14 × cols 20..28). Every other mask slot is
    wrong on purpose: odd slots all ones, even slots all zeros."""
    base = root / "obj"
    for cls in ("b", "a"):
        (base / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (128, 128), (200, 10, 10)).save(base / "train" / cls / f"{cls}-sky-0001.jpg")
    (base / "val").mkdir()
    for name in ("a-sky-0901.jpg", "b-sea-0903.jpg"):
        Image.new("RGB", (128, 128), (10, 200, 10)).save(base / "val" / name)
    (base / "val.txt").write_bytes("\ufeffa-sky-0901.jpg 0\r\nb-sea-0903.jpg 1\r\n\r\n".encode())
    (base / "val_loc.txt").write_bytes(b"a-sky-0901.jpg 0,0,128,128\r\nb-sea-0903.jpg 10,20,14,28\r\n")
    masks = np.empty(200, dtype=object)
    for k in range(200):
        masks[k] = np.full((3, 3), k % 2, np.uint8)
    masks[103] = CROP
    with open(base / "val_mask", "wb") as fh:
        np.save(fh, masks, allow_pickle=True)
    return root


def test_region_is_the_crop_resized_bilinearly_into_the_rows_first_box(tmp_path: Path) -> None:
    root = _write_tree(tmp_path)
    ds = BAMReader(root, "val", "obj", size=128)
    assert ds.classes == ["a", "b"] and [ds.label(i) for i in range(2)] == [0, 1]
    assert [ds.sample_id(i) for i in range(2)] == ["a-sky-0901", "b-sea-0903"]
    s = ds.load(1)
    assert (s.meta["obj"], s.meta["scene"], s.label) == ("b", "sea", 1)
    assert s.meta["region"].dtype == np.float32 and s.meta["region"].shape == (128, 128)
    # the box is 4 rows × 8 cols and the crop 2 × 4, so even at 128 px it is upsampled ×2 (PIL bilinear: pixel
    # centres, edges clamped). The weights by hand, rows then columns:
    rows = np.array([[1, 0], [.75, .25], [.25, .75], [0, 1]])
    cols = np.array([[1, 0, 0, 0], [.75, .25, 0, 0], [.25, .75, 0, 0], [0, .75, .25, 0], [0, .25, .75, 0],
                     [0, 0, .75, .25], [0, 0, .25, .75], [0, 0, 0, 1]])
    expected = np.zeros((128, 128))
    expected[10:14, 20:28] = rows @ CROP @ cols.T
    np.testing.assert_allclose(s.meta["region"], expected, rtol=1e-6, atol=1e-6)
    assert s.meta["box"] == [20, 10, 27, 13] and s.meta["boxes"] == [[20, 10, 27, 13]]  # xmin, ymin, xmax, ymax
    np.testing.assert_array_equal(ds.load(0).meta["region"], np.ones((128, 128), np.float32))  # mask 1, full box

    # 100 px: the box scales by 100/128 and truncates (reference: int(l * 224 / 128)): rows 7..10, cols 15..21
    small = BAMReader(root, "val", "obj", size=100).load(1)
    rows = np.array([[1, 0], [.5, .5], [0, 1]])
    cols = np.array([[1, 0, 0, 0], [.5, .5, 0, 0], [0, 5 / 6, 1 / 6, 0], [0, 1 / 6, 5 / 6, 0], [0, 0, .5, .5],
                     [0, 0, 0, 1]])
    expected = np.zeros((100, 100))
    expected[7:10, 15:21] = rows @ CROP @ cols.T
    np.testing.assert_allclose(small.meta["region"], expected, rtol=1e-6, atol=1e-6)
    assert small.x.shape == (3, 100, 100) and small.meta["box"] == [15, 7, 20, 9]
    assert BAMReader(root, "train", "obj").load(0).meta["region"] is None


def test_bad_list_files_and_masks_name_the_file(tmp_path: Path) -> None:
    root = _write_tree(tmp_path)
    base = root / "obj"
    (base / "val.txt").write_text("a-sky-0901.jpg 0\n")
    with pytest.raises(UsageError, match=r"val\.txt has no label for b-sea-0903\.jpg"):
        BAMReader(root, "val")
    (base / "val.txt").write_text("a-sky-0901.jpg 0\nb-sea-0903.jpg 1\n")
    (base / "val_loc.txt").write_text("a-sky-0901.jpg 0,0,128\nb-sea-0903.jpg 10,20,14,28\n")
    with pytest.raises(UsageError, match=r"val_loc\.txt: bad box '0,0,128' for a-sky-0901\.jpg"):
        BAMReader(root, "val")
    with pytest.raises(UsageError, match="unknown BAM labels"):
        BAMReader(root, "val", labels="objects")


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_mask_file_is_unpickled_without_running_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "val_mask"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    path.write_bytes(buf.getvalue() + pickle.dumps(np.array([_Exploit()], dtype=object), protocol=3))
    with pytest.raises(UsageError, match=r"unreadable BAM mask file .*val_mask: refusing builtins\.print"):
        load_masks(path)
    assert "pwned" not in capsys.readouterr().out
    plain = tmp_path / "plain"
    with open(plain, "wb") as fh:
        np.save(fh, np.eye(3, dtype=np.uint8)[None])
    np.testing.assert_array_equal(load_masks(plain), np.eye(3, dtype=np.uint8)[None])


def _reference(e3: np.ndarray, region: np.ndarray, q: float = 99.0) -> tuple[np.ndarray, float]:
    """google-research-datasets/bam ``visualize_pos_attr`` + ``single_attr`` in NumPy ((H, W, C) map)."""
    image_2d = np.sum(e3.clip(min=0), axis=2)
    vmax, vmin = np.percentile(image_2d, q), np.min(image_2d)
    e = np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)
    return e, float(np.sum(e * region) / np.count_nonzero(region))


@pytest.mark.parametrize("channels", [0, 3])
@pytest.mark.parametrize("q", [99.0, 90.0])
def test_normalisation_and_g_equal_the_numpy_reference(channels: int, q: float) -> None:
    gen = torch.Generator().manual_seed(3)
    B, H, W = 4, 16, 20  # non-square
    maps = torch.randn(B, *((channels,) if channels else ()), H, W, generator=gen)
    region = (torch.rand(B, H, W, generator=gen) * (torch.rand(B, H, W, generator=gen) < 0.3)).numpy()
    x = torch.zeros(B, 3, H, W)
    e = normalise(maps, (H, W), q)
    g = M.run("bam_attribution", None, x, maps, region=list(region), percentile=q)["region_attribution"]
    assert g.dtype == torch.float64 and g.shape == (B,)
    for b in range(B):
        e3 = maps[b].permute(1, 2, 0).numpy() if channels else maps[b].numpy()[..., None]
        ref_e, ref_g = _reference(e3.astype(np.float64), region[b], q)
        np.testing.assert_allclose(e[b].numpy(), ref_e, rtol=1e-5, atol=1e-6)
        assert float(g[b]) == pytest.approx(ref_g, rel=1e-5, abs=1e-6)


def test_g_on_a_hand_made_map_and_region() -> None:
    """16 pixels: 11 zeros (the -3 clipped), three 1s, two 2s -> P99 = 2 (sorted[14] = sorted[15] = 2), min 0, so
    e = max(map, 0)/2. Region: four non-zero pixels weighing 1, 1, 0.5, 0.25 on e = 0.5, 1, 1, 0.5 ->
    g = (0.5 + 1 + 0.5 + 0.125)/4 = 0.53125."""
    m = torch.tensor([[0., 1, 2, 2], [0, 0, 1, 1], [0, 0, 0, 0], [-3, 0, 0, 0]])
    region = np.zeros((4, 4), np.float32)
    region[0, 1:4] = [1, 1, 0.5]
    region[1, 2] = 0.25
    x = torch.zeros(1, 3, 4, 4)
    assert float(bam_attribution(None, x, m[None], region=[region])["region_attribution"][0]) == 0.53125
    split = torch.stack([0.25 * m.clamp(min=0), 0.75 * m.clamp(min=0), torch.full((4, 4), -5.0)])  # Σ_c max(e_c, 0)
    assert float(bam_attribution(None, x, split[None], region=[region])["region_attribution"][0]) == 0.53125
    # an 8×8 map is resized (bilinear, align_corners=False) to the 4×4 input: output pixel i samples input 2i + 0.5,
    # the mean of two equal repeated pixels, so the map is m again
    double = m.repeat_interleave(2, 0).repeat_interleave(2, 1)[None]
    assert float(bam_attribution(None, x, double, region=[region])["region_attribution"][0]) == 0.53125
    peak = torch.zeros(1, 4, 4)
    peak[0, 0, 0] = 5.0  # P99 = min = 0: the zero denominator gives an all-zero map, not inf
    got = bam_attribution(None, x.expand(2, -1, -1, -1), torch.cat([peak, m[None]]), region=[region, np.zeros((4, 4))])
    assert float(got["region_attribution"][0]) == 0.0 and math.isnan(float(got["region_attribution"][1]))


def test_model_contrast_counts_only_images_correct_for_both() -> None:
    obj = [{"sample_id": "s1", "label": 0, "pred": 0, "region_attribution": 0.8},
           {"sample_id": "s2", "label": 1, "pred": 1, "region_attribution": 0.6},
           {"sample_id": "s3", "label": 2, "pred": 0, "region_attribution": 0.9},  # object model wrong
           {"sample_id": "s4", "label": 0, "pred": 0, "region_attribution": 0.7}]
    scene = [{"sample_id": "s4", "label": 2, "pred": 2, "region_attribution": 0.5},
             {"sample_id": "s3", "label": 0, "pred": 0, "region_attribution": 0.3},
             {"sample_id": "s2", "label": 1, "pred": 2, "region_attribution": 0.1},  # scene model wrong
             {"sample_id": "s1", "label": 3, "pred": 3, "region_attribution": 0.2},
             {"sample_id": "s5", "label": 1, "pred": 1, "region_attribution": 0.0}]  # no object-model row
    got = model_contrast(obj, scene)  # X_corr = {s1, s4}
    assert got["n"] == 2
    assert got["G_obj_object_model"] == pytest.approx(0.75, abs=1e-12)
    assert got["G_obj_scene_model"] == pytest.approx(0.35, abs=1e-12)
    assert got["MCS"] == pytest.approx(0.4, abs=1e-12)
    empty = model_contrast(obj[2:3], scene)
    assert empty["n"] == 0 and math.isnan(empty["MCS"])
    with pytest.raises(UsageError, match="twice"):
        model_contrast(obj + obj[:1], scene)


def test_generator_writes_both_layouts_with_matching_regions(tmp_path: Path) -> None:
    objects, scenes = ("square", "disc"), ("dots", "checker")
    root = generate_bam(tmp_path / "bam", objects=objects, scenes=scenes, n_train_per_pair=1, n_val_per_pair=2,
                        seed=5)
    marker = (root / ".complete").read_text()
    assert generate_bam(root, objects=objects, scenes=scenes, n_train_per_pair=1, n_val_per_pair=2, seed=5) == root
    assert (root / ".complete").read_text() == marker
    with pytest.raises(UsageError, match="other parameters"):
        generate_bam(root, objects=objects, scenes=scenes, n_train_per_pair=1, n_val_per_pair=2, seed=6)
    obj, scene = BAMReader(root, "val", "obj", size=128), BAMReader(root, "val", "scene", size=128)
    assert obj.classes == ["disc", "square"] and scene.classes == ["checker", "dots"]
    assert len(BAMReader(root, "train", "obj")) == len(BAMReader(root, "train", "scene")) == 4
    assert len(obj) == len(scene) == 8
    for i in range(len(obj)):
        a, b = obj.load(i), scene.load(i)
        o, s, k = a.meta["obj"], a.meta["scene"], int(a.sample_id[-4:]) - 900 - 2 * scenes.index(a.meta["scene"])
        assert (obj.classes[a.label], scene.classes[b.label]) == (o, s)
        assert (obj.path(i).read_bytes(), b.sample_id) == (scene.path(i).read_bytes(), a.sample_id)
        _, mask = render_bam(np.random.default_rng([5, 2, objects.index(o), scenes.index(s), k]), o, s)
        np.testing.assert_array_equal(a.meta["region"], mask.astype(np.float32))  # 128 px: the exact mask
        np.testing.assert_array_equal(b.meta["region"], a.meta["region"])


def test_dataset_kind_and_trainer_record_the_labelling(tmp_path: Path) -> None:
    root = generate_bam(tmp_path / "bam", objects=("disc", "cross"), scenes=("smooth", "stripes_fine"),
                        n_train_per_pair=2, n_val_per_pair=1)
    meta = train_bam(root, tmp_path / "m.pt", labels="scene", epochs=1, input_size=32,
                     arch_kwargs={"width": 4, "blocks": 2})
    assert meta["bam_labels"] == "scene" and meta["classes"] == ["smooth", "stripes_fine"]
    assert (meta["num_classes"], meta["input_size"], meta["train"]["n_train"], meta["train"]["n_val"]) == (2, 32, 8, 4)
    ds = open_dataset("bam", root, "val", **bam_options(meta))
    assert isinstance(ds, BAMReader) and ds.labels == "scene" and ds.load(0).x.shape == (3, 32, 32)
    assert open_dataset("bam", root, "val", **bam_options({"input_size": 48})).labels == "obj"
