"""filter_stats (thesis §6.2.3): DuckDB per-(class, filter) summaries equal numpy on the concatenated values and do
not depend on how the rows were split into files, on file order, or on ``classes_per_query``."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from xcore.errors import UsageError
from xcore.filters.stats import STATS_SCHEMA, filter_stats, histograms

K = 8
BINS = 5


def score_table(labels: np.ndarray, scores: list[np.ndarray | None], start: int = 0) -> pa.Table:
    """Rows as the ``filter_scores`` job writes them (``None`` scores = an error row)."""
    n = len(labels)
    as_list = pa.list_(pa.float32())

    def lists(arrays: list[np.ndarray | None]) -> pa.Array:
        return pa.array([None if a is None else a.astype(np.float32).tolist() for a in arrays], type=as_list)

    return pa.table({
        "sample_id": pa.array([f"s{start + i}" for i in range(n)], pa.string()),
        "index": pa.array(np.arange(start, start + n), pa.int64()),
        "label": pa.array(labels, pa.int64()),
        "pred": pa.array(labels, pa.int64()),
        "label_logit": pa.array(np.zeros(n), pa.float64()),
        "pred_logit": pa.array(np.zeros(n), pa.float64()),
        "label_prob": pa.array(np.zeros(n), pa.float64()),
        "pred_prob": pa.array(np.zeros(n), pa.float64()),
        "scores": lists(scores),
        "scores_pred": lists(scores),
        "activation": lists([None if a is None else np.abs(a) for a in scores]),
        "scorer": pa.array(["gradamap"] * n, pa.string()),
        "layer": pa.array(["features.29"] * n, pa.string()),
        "tap": pa.array(["output"] * n, pa.string()),
        "run_key": pa.array(["k"] * n, pa.string()),
    })


def write_shards(directory: Path, labels: np.ndarray, scores: list[np.ndarray | None], cuts: list[int]) -> list[Path]:
    """The rows split at ``cuts`` into ``shard-*.parquet`` files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, len(labels)]
    paths = []
    for i, (a, b) in enumerate(pairwise(bounds)):
        path = directory / f"shard-{i:06d}.parquet"
        pq.write_table(score_table(labels[a:b], scores[a:b], a), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[np.ndarray | None]]:
    """6 classes: 5 with 37–44 samples, class 4 with one sample; class 2 on a 1/8 grid (values on bin edges and
    ties), filter 3 of class 5 constant (lo == hi); 5 NULL error rows; rows shuffled."""
    rng = np.random.default_rng(0)
    labels, scores = [], []
    for c, n in enumerate([40, 44, 37, 41, 1, 39]):
        s = rng.normal(c * 0.3, 1.0 + 0.2 * c, size=(n, K)).astype(np.float32)
        if c == 2:
            s = np.round(s * 8) / 8
        if c == 5:
            s[:, 3] = np.float32(0.7)
        labels += [c] * n
        scores += list(s)
    labels += [0, 1, 3, 5, 7]
    scores += [None] * 5  # error rows: class 7 only has an error row
    order = rng.permutation(len(labels))
    return np.asarray(labels, np.int64)[order], [scores[i] for i in order]


@pytest.fixture(scope="module")
def one_file(tmp_path_factory: pytest.TempPathFactory, data: tuple) -> pa.Table:
    labels, scores = data
    paths = write_shards(tmp_path_factory.mktemp("one"), labels, scores, [])
    return filter_stats(paths, bins=BINS)


def test_equals_numpy_on_the_concatenated_values(one_file: pa.Table, data: tuple) -> None:
    labels, scores = data
    assert one_file.schema.equals(STATS_SCHEMA)
    ok = np.array([s is not None for s in scores])
    values = np.stack([s for s in scores if s is not None]).astype(np.float64)
    lab = labels[ok]
    rows = one_file.to_pylist()
    assert [(r["label"], r["filter"]) for r in rows] == [(c, n) for c in range(6) for n in range(K)]
    for r in rows:
        v = values[lab == r["label"], r["filter"]]
        assert r["count"] == len(v)
        assert r["mean"] == pytest.approx(v.mean(), rel=1e-12, abs=1e-12)
        p = np.percentile(v, [0.1, 99.9], method="linear")
        assert [r["p001"], r["p999"]] == pytest.approx(p.tolist(), rel=1e-12, abs=1e-12)
        assert (r["lo"], r["hi"]) == (v.min(), v.max())
        if v.min() < v.max():
            assert r["hist"] == np.histogram(v, BINS, range=(v.min(), v.max()))[0].tolist()
        else:
            assert r["hist"] == [len(v)] + [0] * (BINS - 1)


def test_grid_values_on_bin_edges_follow_numpy(one_file: pa.Table, data: tuple) -> None:
    """Class 2 lies on a 1/8 grid: many values sit exactly on bin edges, where only numpy's correction rule is right."""
    labels, scores = data
    values = np.stack([s for s, c in zip(scores, labels, strict=True) if s is not None and c == 2]).astype(np.float64)
    rows = [r for r in one_file.to_pylist() if r["label"] == 2]
    on_edge = 0
    for r in rows:
        v = values[:, r["filter"]]
        counts, edges = np.histogram(v, BINS, range=(v.min(), v.max()))
        on_edge += int(np.isin(v, edges[1:-1]).sum())
        assert r["hist"] == counts.tolist()
    assert on_edge > 0  # the grid really exercises the edges


def test_single_sample_and_constant_filter_go_to_bin_0(one_file: pa.Table) -> None:
    rows = {(r["label"], r["filter"]): r for r in one_file.to_pylist()}
    single = rows[(4, 0)]
    assert single["count"] == 1
    assert single["p001"] == single["p999"] == single["lo"] == single["hi"] == single["mean"]
    assert single["hist"] == [1, 0, 0, 0, 0]
    const = rows[(5, 3)]
    assert const["lo"] == const["hi"] == const["mean"] == const["p001"] == const["p999"] == pytest.approx(0.7)
    assert const["hist"] == [39, 0, 0, 0, 0]
    assert 7 not in {r["label"] for r in rows.values()}  # a class with only error rows has no distribution


def test_independent_of_sharding_file_order_and_chunking(tmp_path: Path, one_file: pa.Table, data: tuple) -> None:
    labels, scores = data
    seven = write_shards(tmp_path / "seven", labels, scores, [3, 4, 60, 61, 130, 200])
    assert len(seven) == 7
    rng = np.random.default_rng(1)
    shuffled = [seven[i] for i in rng.permutation(7)]
    for paths in (seven, shuffled, seven[::-1]):
        assert filter_stats(paths, bins=BINS).equals(one_file)
    by_one = filter_stats(shuffled, bins=BINS, classes_per_query=1)
    by_two = filter_stats(shuffled, bins=BINS, classes_per_query=2, memory_limit="256MB")
    assert by_one.equals(one_file) and by_two.equals(one_file)


def test_other_column_percentiles_and_metadata(tmp_path: Path, data: tuple) -> None:
    labels, scores = data
    paths = write_shards(tmp_path, labels, scores, [100])
    t = filter_stats(paths, column="activation", bins=3, low=25.0, high=75.0)
    assert t.schema.metadata == {b"column": b"activation", b"bins": b"3", b"low": b"25.0", b"high": b"75.0"}
    r = t.filter(pc.and_(pc.equal(t["label"], 1), pc.equal(t["filter"], 6))).to_pylist()[0]
    v = np.abs(np.stack([s for s, c in zip(scores, labels, strict=True) if s is not None and c == 1])[:, 6])
    v = v.astype(np.float64)
    assert [r["p001"], r["p999"]] == pytest.approx(np.percentile(v, [25, 75]).tolist(), rel=1e-12)
    assert r["hist"] == np.histogram(v, 3, range=(v.min(), v.max()))[0].tolist()


def test_only_error_rows_give_an_empty_table(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, np.array([0, 1]), [None, None], [])
    t = filter_stats(paths)
    assert t.num_rows == 0 and t.schema.equals(STATS_SCHEMA)


def test_batched_histograms_equal_numpy_per_group_whatever_the_block() -> None:
    """300 groups of 1–60 float32 values (ties, one constant group) at three scales; every other group also holds
    its own exact bin edges, where a plain ``floor`` misplaces values and only numpy's edge correction is right."""
    rng = np.random.default_rng(2)
    scale = rng.choice([1.0, 1e-3, 37.0], size=300)
    base = [(np.round(rng.normal(0, 1, n) * 4) / 4 * s).astype(np.float32).astype(np.float64)
            for n, s in zip(rng.integers(1, 61, size=300), scale, strict=True)]
    base[5][:] = base[5][0]
    naive_wrong = 0
    for bins in (1, 3, 7, 32):
        groups = [np.concatenate([g, np.linspace(g.min(), g.max(), bins + 1)]) if i % 2 and g.min() < g.max() else g
                  for i, g in enumerate(base)]
        counts = np.array([len(g) for g in groups])
        lo, hi = np.array([g.min() for g in groups]), np.array([g.max() for g in groups])
        expected = np.stack([np.histogram(g, bins, range=(a, b))[0] if a < b else np.eye(bins, dtype=int)[0] * len(g)
                             for g, a, b in zip(groups, lo, hi, strict=True)])
        for block in (1, 50, 1 << 22):
            np.testing.assert_array_equal(histograms(np.concatenate(groups), counts, lo, hi, bins, block=block),
                                          expected)
        naive_wrong += sum(not np.array_equal(np.bincount(np.minimum(((g - a) / (b - a) * bins).astype(int), bins - 1),
                                                          minlength=bins), e)
                           for g, a, b, e in zip(groups, lo, hi, expected, strict=True) if a < b)
    assert naive_wrong > 10  # the edge correction is really exercised


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    good = write_shards(tmp_path / "a", np.array([0, 0]), [np.ones(K), np.zeros(K)], [])
    mixed = write_shards(tmp_path / "b", np.array([0, 1]), [np.ones(K), np.ones(K + 1)], [])
    for call in (lambda: filter_stats([]), lambda: filter_stats([tmp_path / "none.parquet"]),
                 lambda: filter_stats(good, column="sample_id"), lambda: filter_stats(good, column="x; DROP"),
                 lambda: filter_stats(good, column="missing"), lambda: filter_stats(good, bins=0),
                 lambda: filter_stats(good, low=50, high=10), lambda: filter_stats(good, memory_limit="lots"),
                 lambda: filter_stats(good, memory_limit="1KB"), lambda: filter_stats(mixed)):
        with pytest.raises(UsageError):
            call()
