"""The degraded data of a ROAR unit: maps decoded from a committed ``explanations`` table (float16) against the
full-precision maps, the LeRF order, per-sample seeding, bad samples, and the bounded map cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from xcore.core.shards import Shard
from xcore.data.base import Sample
from xcore.io.parquet import encode_heatmap
from xcore.io.runs import RunLayout
from xcore.metrics.roar import degrade, select
from xcore.pipeline.roar_data import Degradation, DegradedDataset, MapStore, unit_seed
from xcore.pipeline.tables import EXPLANATIONS

H = W = 16


def write_run(root: Path, maps: list[np.ndarray], shard_size: int, skip: tuple[int, ...] = ()) -> None:
    """An explain run of method ``gradcam`` whose committed shards hold ``maps`` (sample ``i``: ``maps[i]``)."""
    layout = RunLayout(root)
    for sid, start in enumerate(range(0, len(maps), shard_size)):
        shard = Shard(sid, start, min(start + shard_size, len(maps)))
        rows = [{"sample_id": f"s{i}", "index": i, "label": 0, "target": 0, "pred": 0, "meta": "{}", "score": 1.0,
                 "method": "gradcam", "part": "map", "params": "{}", **encode_heatmap(maps[i]),
                 "native_shape": [H, W], "run_key": "k"} for i in range(shard.start, shard.stop) if i not in skip]
        table = pa.Table.from_pylist(rows, schema=EXPLANATIONS)
        layout.write_shard(shard, "k", {layout.table_path("explanations", shard, "gradcam"): table}, {})


class Reader:
    """A reader of ``n`` random normalised 3 × H × W images (label = index % 3)."""

    def __init__(self, n: int, broken: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, H, W, generator=g)
        self.broken = broken

    def __len__(self) -> int:
        return len(self.x)

    def sample_id(self, i: int) -> str:
        return f"s{i}"

    def load(self, i: int) -> Sample:
        if i in self.broken:
            raise OSError(f"truncated file s{i}")
        return Sample(f"s{i}", self.x[i].clone(), i % 3, {})


def test_stored_maps_degrade_like_full_precision_except_at_float16_ties(tmp_path):
    rng = np.random.default_rng(0)
    full = [rng.normal(size=(H, W)) for _ in range(5)]
    write_run(tmp_path, full, shard_size=2)
    store = MapStore(tmp_path, "k", "gradcam")
    assert len(store) == 5
    for i, m in enumerate(full):
        stored = store.get(i)
        scale = np.abs(m).max()
        assert np.abs(stored - m).max() <= 2.0**-11 * scale * (1 + 1e-9)  # float16 of m / scale, times scale
        x = Reader(5).x[i:i + 1]
        for t in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
            a = select(torch.from_numpy(stored)[None], t)[0]
            b = select(torch.from_numpy(m).float()[None], t)[0]
            k = int(t * H * W)
            kth = np.sort(m.ravel())[::-1][max(k - 1, 0)]
            # the selections differ only where float16 rounding made values tie with (or cross) the k-th value
            for r, c in torch.nonzero(a != b).tolist():
                assert abs(m[r, c] - kth) <= 2 * 2.0**-11 * scale
            same = degrade(x, torch.from_numpy(stored)[None], t)
            ref = degrade(x, torch.from_numpy(m).float()[None], t)
            assert torch.equal(same[0][:, a == b], ref[0][:, a == b])


def test_well_separated_maps_select_exactly_the_same(tmp_path):
    full = [np.arange(H * W, dtype=np.float64).reshape(H, W)[::-1].copy() * 1.0 + 10.0]  # 256 values, float16-exact
    write_run(tmp_path, full, shard_size=1)
    stored = torch.from_numpy(MapStore(tmp_path, "k", "gradcam").get(0))[None]
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert torch.equal(select(stored, t), select(torch.from_numpy(full[0]).float()[None], t))


def test_dataset_items_are_seeded_per_sample_and_lerf_removes_the_bottom(tmp_path):
    m = np.arange(H * W, dtype=np.float64).reshape(H, W)  # top = bottom-right corner
    write_run(tmp_path, [m, m, m], shard_size=3)
    store = MapStore(tmp_path, "k", "gradcam")
    reader = Reader(3)
    deg = Degradation(0.25, "lerf", "pixel", "mean", (0.0, 0.0, 0.0))
    data = DegradedDataset(reader, store, deg, seed=7)
    x, y = data[(0, 1)]
    assert y == 1
    removed = (x == 0).all(dim=0)
    assert removed.flatten()[:64].all() and not removed.flatten()[64:].any()  # the 64 lowest: the first rows
    kar = DegradedDataset(reader, store, Degradation(0.25, "kar", "pixel", "mean", (0.0,) * 3), seed=7)[(0, 1)][0]
    assert (kar == 0).all(dim=0).flatten()[:192].all() and not (kar == 0).all(dim=0).flatten()[192:].any()
    # training items: noise and augmentation drawn from (seed, epoch, index) only
    noisy = Degradation(0.5, "roar", "pixel", "noisy_linear", (0.05, 0.05, 0.05))
    train = DegradedDataset(reader, store, noisy, seed=7, shift=2)
    a, b = train[(3, 2)], DegradedDataset(reader, store, noisy, seed=7, shift=2)[(3, 2)]
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], train[(4, 2)][0])
    assert unit_seed(7, 3, 2) == unit_seed(7, 3, 2) != unit_seed(7, 3, 1)


def test_a_sample_without_map_or_unreadable_is_ignored_and_recorded(tmp_path):
    rng = np.random.default_rng(2)
    write_run(tmp_path, [rng.normal(size=(H, W)) for _ in range(4)], shard_size=2, skip=(2,))
    data = DegradedDataset(Reader(4, broken=(1,)), MapStore(tmp_path, "k", "gradcam"),
                           Degradation(0.5, "roar", "pixel", "mean", (0.0,) * 3), seed=0)
    labels = [data[(0, i)][1] for i in range(4)]
    assert labels == [0, -1, -1, 0]
    assert [(i, type(e).__name__) for i, _, e in data.failures] == [(1, "OSError"), (2, "KeyError")]
    assert torch.equal(data[(0, 1)][0], torch.zeros(3, H, W))


def test_the_map_cache_stays_within_its_byte_budget(tmp_path):
    rng = np.random.default_rng(3)
    full = [rng.normal(size=(H, W)) for _ in range(6)]
    write_run(tmp_path, full, shard_size=2)
    store = MapStore(tmp_path, "k", "gradcam", cache_bytes=H * W * 2 * 2)  # one shard of two float16 maps
    for i in (0, 3, 5, 1, 4):
        assert np.abs(store.get(i) - full[i]).max() <= 2.0**-11 * np.abs(full[i]).max() * (1 + 1e-9)
        assert len(store._cache) == 1
    with pytest.raises(KeyError):
        store.get(6)
