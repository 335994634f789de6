"""Atomic Parquet writes, footers, stale temps, the heatmap encoding and the shard completeness rule."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from xcore.core.shards import Shard
from xcore.io import parquet as xpq
from xcore.io.atomic import temp_name
from xcore.io.parquet import clean_stale_temps, decode_heatmap, encode_heatmap, read_footer, write_atomic
from xcore.io.runs import RunLayout, run_key


def _table(n: int = 3) -> pa.Table:
    return pa.table({"sample_id": [f"s{i}" for i in range(n)], "v": [float(i) for i in range(n)]})


def _visible(root) -> tuple[list[str], int]:
    files = pads.dataset(str(root), format="parquet", partitioning="hive").files
    glob = str(root / "**" / "*.parquet")
    n = duckdb.sql(f"SELECT count(*) FROM glob('{glob}')").fetchall()[0][0]
    return files, n


def test_write_atomic_footer_and_no_partial_file(tmp_path, monkeypatch):
    final = tmp_path / "metrics" / "method=a" / "shard-000001.parquet"
    write_atomic(_table(3), final, run_key="k1", shard_id=1)
    footer = read_footer(final)
    assert footer["run_key"] == "k1" and footer["shard_id"] == "1" and footer["rows"] == "3"
    assert footer["num_rows"] == 3 and footer["schema_version"] == str(xpq.SCHEMA_VERSION)
    assert "xcore_version" in footer
    assert pq.read_table(final).num_rows == 3

    def broken(table, where, **kw):  # writes some bytes, then dies mid-write
        where.write(b"PAR1 partial")
        raise OSError("disk full")

    other = tmp_path / "metrics" / "method=a" / "shard-000002.parquet"
    monkeypatch.setattr(xpq.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(_table(5), other, run_key="k1", shard_id=2)
    with pytest.raises(OSError):  # replacing an existing file keeps the old one intact
        write_atomic(_table(5), final, run_key="k2", shard_id=1)
    monkeypatch.undo()
    assert not other.exists()
    assert read_footer(final)["run_key"] == "k1"
    assert sorted(p.name for p in final.parent.iterdir()) == ["shard-000001.parquet"]


def test_temp_files_invisible_to_readers_and_cleaned(tmp_path):
    part = tmp_path / "metrics" / "method=a"
    write_atomic(_table(2), part / "shard-000000.parquet", run_key="k", shard_id=0)
    stale = temp_name(part / "shard-000001.parquet")  # what a killed writer leaves behind
    pq.write_table(_table(7), stale)
    foreign = part / ".keep-me"
    foreign.write_text("not ours")
    assert stale.name.startswith(".shard-000001.parquet.tmp-") and not stale.name.endswith(".parquet")
    files, n = _visible(tmp_path / "metrics")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["shard-000000.parquet"] and n == 1
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/metrics/**/*.parquet')").fetchall()[0][0] == 2
    assert clean_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and foreign.exists()


@pytest.mark.parametrize("scale", [1e-9, 1e-3, 1.0, 1e4])
def test_heatmap_round_trip(scale):
    rng = np.random.default_rng(0)
    m = (rng.standard_normal((2, 5, 7)) * scale).astype(np.float64)
    row = encode_heatmap(m)
    assert row["shape"] == [2, 5, 7] and row["dtype"] == "float16" and len(row["heatmap"]) == 2 * m.size
    assert row["scale"] == pytest.approx(np.abs(m).max(), rel=1e-12)
    back = decode_heatmap(row)
    assert back.shape == m.shape and back.dtype == np.float32
    # float16 keeps ~11 bits of the unit-scaled value: error <= 2^-11 of the row's max, never flushed to 0
    assert np.abs(back - m).max() <= 2.0**-11 * np.abs(m).max() * 1.01
    assert np.count_nonzero(back) == np.count_nonzero(m)
    assert np.array_equal(np.sign(back), np.sign(m))


def test_heatmap_zero_and_torch_and_nan():
    row = encode_heatmap(torch.zeros(3, 4))
    assert row["scale"] == 0.0 and np.array_equal(decode_heatmap(row), np.zeros((3, 4), np.float32))
    t = torch.tensor([[1e-9, -2e-9], [0.0, 5e-10]])
    assert np.allclose(decode_heatmap(encode_heatmap(t)), t.numpy(), rtol=1e-3, atol=0)
    with pytest.raises(ValueError):
        encode_heatmap(torch.tensor([1.0, float("nan")]))


def _write_shard(layout: RunLayout, shard: Shard, key: str) -> dict:
    tables = {layout.table_path("metrics", shard, "a"): _table(shard.size),
              layout.table_path("errors", shard): _table(0)}
    return layout.write_shard(shard, key, tables, {"ok": shard.size})


def test_completeness_rule(tmp_path):
    layout = RunLayout(tmp_path / "run")
    shard = Shard(3, 12, 16)
    assert not layout.is_complete(shard, "k")
    rec = _write_shard(layout, shard, "k")
    assert [f["rows"] for f in rec["files"]] == [4, 0]
    assert layout.is_complete(shard, "k")
    assert not layout.is_complete(shard, "other-key")  # wrong run key
    assert not layout.is_complete(Shard(3, 12, 15), "k")  # another range (shard size changed)
    metrics = layout.table_path("metrics", shard, "a")
    # a file rewritten with the right key but a different row count
    write_atomic(_table(3), metrics, run_key="k", shard_id=3)
    assert not layout.is_complete(shard, "k")
    # right rows, footer of another run
    write_atomic(_table(4), metrics, run_key="zzz", shard_id=3)
    assert not layout.is_complete(shard, "k")
    _write_shard(layout, shard, "k")
    assert layout.is_complete(shard, "k")
    layout.table_path("errors", shard).unlink()  # a listed file is missing
    assert not layout.is_complete(shard, "k")
    _write_shard(layout, shard, "k")
    layout.commit_path(shard).write_text("{not json")  # unreadable commit record
    assert not layout.is_complete(shard, "k")
    _write_shard(layout, shard, "k")
    metrics.write_bytes(b"garbage")  # unreadable footer
    assert not layout.is_complete(shard, "k")
    record = json.loads(layout.commit_path(shard).read_text())
    assert record["run_key"] == "k" and record["shard_id"] == 3


def test_run_key_changes_with_results_relevant_parts():
    base = {"dataset": "a", "methods": {"gradcam": {"layer": "features"}}}
    assert run_key(base) == run_key(dict(reversed(list(base.items()))))
    assert run_key(base) != run_key({**base, "methods": {"gradcam": {"layer": "features.3"}}})
    assert len(run_key(base)) == 16
