"""Commit records with checksums and committed-only reads (issue 12, findings 4, 5, 9 and 10's stale temps).

Runs here are written with :meth:`RunLayout.write_shard` on small tables (no model, no Ray, no Prefect); the same
cases on a real run are in tests/integration/test_committed_reads.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from flows.cli import app
from xcore.core.shards import Shard
from xcore.io import atomic, commits
from xcore.io.atomic import temp_name
from xcore.io.parquet import clean_stale_temps, read_footer, write_atomic
from xcore.io.query import connect, method_summary
from xcore.io.runs import RunLayout, write_json_atomic

KEY = "k0"
SHARDS = [Shard(0, 0, 4), Shard(1, 4, 8), Shard(2, 8, 10)]


def _metrics(shard: Shard, method: str) -> pa.Table:
    ids = range(shard.start, shard.stop)
    return pa.table({"sample_id": [f"s{i}" for i in ids], "method": [method] * shard.size,
                     "status": ["ok"] * shard.size, "deletion_auc": [0.25 + i / 1000 for i in ids]})


def _write(layout: RunLayout, shard: Shard, key: str = KEY) -> dict:
    tables = {layout.table_path("metrics", shard, m): _metrics(shard, m) for m in ("a", "b")}
    tables[layout.table_path("errors", shard)] = pa.table({"sample_id": pa.array([], pa.string())})
    return layout.write_shard(shard, key, tables, {"ok": 2 * shard.size})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run directory with shards 0 and 1 committed (16 metrics rows) and a run.json naming its key."""
    layout = RunLayout(tmp_path / "run")
    for shard in SHARDS[:2]:
        _write(layout, shard)
    write_json_atomic(layout.run_json, {"run_key": KEY})
    return layout.root


def _flip_value(path: Path, value: float) -> None:
    """Flip one mantissa bit of ``value`` where it is stored: the file still parses, one number changed."""
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<d", value))
    assert at > 0
    data[at + 4] ^= 0x10
    path.write_bytes(bytes(data))


def test_commit_record_lists_sha256_of_the_bytes_as_written(tmp_path, monkeypatch):
    def no_reread(path):
        raise AssertionError(f"{path} was read back to hash it")

    monkeypatch.setattr(atomic, "sha256_file", no_reread)
    monkeypatch.setattr(commits, "sha256_file", no_reread)
    layout = RunLayout(tmp_path / "run")
    rec = _write(layout, SHARDS[1])
    monkeypatch.undo()
    assert rec["format"] == commits.COMMIT_FORMAT == 2
    assert json.loads(layout.commit_path(SHARDS[1]).read_text()) == rec
    assert [f["path"] for f in rec["files"]] == ["metrics/method=a/shard-000001.parquet",
                                                 "metrics/method=b/shard-000001.parquet", "errors/shard-000001.parquet"]
    for f in rec["files"]:
        data = (layout.root / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
        assert f["rows"] == read_footer(layout.root / f["path"])["num_rows"]
    assert layout.is_complete(SHARDS[1], KEY)


def test_a_flipped_byte_makes_the_shard_incomplete(run):
    layout = RunLayout(run)
    victim = layout.table_path("metrics", SHARDS[1], "b")
    footer = read_footer(victim)
    _flip_value(victim, 0.25 + 4 / 1000)
    assert read_footer(victim) == footer  # the footer check alone passes: same key, shard and rows
    assert method_summary(run)[1]["deletion_auc"] != pytest.approx(sum(0.25 + i / 1000 for i in range(8)) / 8,
                                                                   abs=1e-12)  # a value silently changed
    assert layout.is_complete(SHARDS[0], KEY)
    assert not layout.is_complete(SHARDS[1], KEY)
    assert "sha256" in layout.shard_problem(SHARDS[1], KEY)
    _write(layout, SHARDS[1])  # the rerun's rewrite
    assert layout.is_complete(SHARDS[1], KEY)


def test_records_without_checksums_are_incomplete_but_readable(run):
    """A commit record of an older xcore (no format, no sha256): recomputed on resume, still queried."""
    layout = RunLayout(run)
    path = layout.commit_path(SHARDS[1])
    rec = json.loads(path.read_text())
    rec.pop("format")
    for f in rec["files"]:
        f.pop("sha256"), f.pop("bytes")
    path.write_text(json.dumps(rec))
    assert not layout.is_complete(SHARDS[1], KEY)
    assert "format 1" in layout.shard_problem(SHARDS[1], KEY)
    assert connect(run).execute("SELECT count(*) FROM metrics").fetchone() == (16,)


def test_a_record_may_not_list_files_outside_the_run(run, tmp_path):
    layout = RunLayout(run)
    outside = tmp_path / "outside.parquet"
    shutil.copy(layout.table_path("metrics", SHARDS[1], "a"), outside)
    path = layout.commit_path(SHARDS[1])
    rec = json.loads(path.read_text())
    rec["files"][0]["path"] = "metrics/../../outside.parquet"
    path.write_text(json.dumps(rec))
    assert "not a path inside the run" in layout.shard_problem(SHARDS[1], KEY)
    assert connect(run).execute("SELECT count(*) FROM metrics").fetchone() == (12,)  # only the listed, inside


def test_backup_copies_and_uncommitted_shards_are_not_read(run):
    layout = RunLayout(run)
    before = method_summary(run)
    assert [(r["method"], r["ok"]) for r in before] == [("a", 8), ("b", 8)]
    for method in ("a", "b"):  # finding 4: a copied shard next to the real one
        src = layout.table_path("metrics", SHARDS[1], method)
        shutil.copy(src, src.with_name("shard-000001.backup.parquet"))
    for path, table in {layout.table_path("metrics", SHARDS[2], "a"): _metrics(SHARDS[2], "a")}.items():
        write_atomic(table, path, run_key=KEY, shard_id=2)  # written, never committed (the driver was killed)
    con = connect(run)
    assert con.execute("SELECT count(*), count(DISTINCT sample_id) FROM metrics").fetchone() == (16, 8)
    assert con.execute("SELECT count(*) FROM metrics WHERE sample_id IN ('s8', 's9')").fetchone() == (0,)
    assert method_summary(run) == before
    layout.write_shard(SHARDS[2], "other-run", {layout.table_path("metrics", SHARDS[2], "a"):
                                                _metrics(SHARDS[2], "a")}, {})
    assert method_summary(run) == before  # committed, but by another run key


def test_stale_temps_of_commit_records_and_manifests_are_cleaned(run):
    layout = RunLayout(run)
    stale = [temp_name(layout.commit_path(SHARDS[2])), temp_name(layout.run_json),
             temp_name(layout.manifests / "plan.json"), temp_name(layout.table_path("metrics", SHARDS[2], "a"))]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{half")
    kept = [run / "_shards" / ".keep", run / "_shards" / "notes.tmp-0123456789abcdef0123456789abcdef",
            run / "_shards" / ".shard-000002.json.tmp-123"]
    for path in kept:
        path.write_text("not ours")
    assert stale[0].name.startswith(".shard-000002.json.tmp-")
    assert sorted(clean_stale_temps(run)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert layout.is_complete(SHARDS[1], KEY)


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    return lines[0]


def test_xai_verify_exit_codes(run, tmp_path):
    cli = CliRunner()
    good = cli.invoke(app, ["verify", str(run)])
    assert good.exit_code == 0 and "2 of 2 committed shards intact" in good.stdout, good.output
    _flip_value(RunLayout(run).table_path("metrics", SHARDS[1], "a"), 0.25 + 4 / 1000)
    (RunLayout(run).table_path("errors", SHARDS[0])).unlink()
    bad = cli.invoke(app, ["verify", str(run)])
    lines = bad.stdout.strip().splitlines()
    assert bad.exit_code == 1 and len(lines) == 3, bad.output
    assert lines[0].startswith("bad shard-000000: errors/shard-000000.parquet is missing")
    assert lines[1].startswith("bad shard-000001: metrics/method=a/shard-000001.parquet: sha256 differs")
    assert "0 of 2 committed shards intact" in lines[2]
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "plain", tmp_path / "missing"):
        res = cli.invoke(app, ["verify", str(path)])
        assert res.exit_code == 2 and "is not a run directory" in _one_line(res)


def test_xai_summary_and_query_on_a_corrupt_shard_one_line(run):
    cli = CliRunner()
    sql = cli.invoke(app, ["query", str(run), "SELECT nosuch FROM errors"])  # bad SQL: a usage error
    assert sql.exit_code == 2 and "nosuch" in _one_line(sql)
    RunLayout(run).table_path("metrics", SHARDS[1], "a").write_bytes(b"PAR1 not parquet")  # finding 9
    for args in (["summary", str(run)], ["query", str(run), "SELECT count(*) FROM metrics"]):
        res = cli.invoke(app, args)
        assert res.exit_code == 1, res.output
        assert f"xai verify {run}" in _one_line(res)


def test_xai_summary_and_query_on_a_run_without_committed_shards(tmp_path):
    run = tmp_path / "run"
    write_json_atomic(run / "_manifests" / "plan.json", {"run_key": KEY, "total": 3})
    cli = CliRunner()
    for args in (["summary", str(run)], ["query", str(run), "SELECT count(*) FROM metrics"]):
        res = cli.invoke(app, args)
        assert res.exit_code == 0 and res.stdout.strip() == f"{run}: no committed shards yet", res.output
    assert cli.invoke(app, ["verify", str(run)]).stdout.strip() == f"{run}: 0 of 0 committed shards intact (3 planned)"
