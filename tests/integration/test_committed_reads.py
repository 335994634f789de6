"""Committed-only reads and checksums on a real run (issue 12, findings 4, 5, 9, 10): the explain job over the
tiny data with the in-process executor (no Ray, no Prefect), then the files changed as a user or a kill would."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.driver import dispatch, plan
from tasks.executors import LocalExecutor
from xcore.io.atomic import temp_name
from xcore.io.query import connect
from xcore.pipeline import open_job

XAI = str(Path(sys.executable).parent / "xai")
METHODS = ("gradcam", "gradient", "random")


def _run(cfg: dict[str, Any]) -> tuple[Any, list[int], list[int]]:
    """plan -> dispatch -> reduce; the job, the shards that were to do and those computed."""
    job = open_job("explain", cfg)
    todo, _done = plan(job)
    summaries, failed = dispatch(job, todo, LocalExecutor(job), backoff=0)
    assert failed == []
    job.reduce(summaries, failed)
    return job, [s.shard_id for s in todo], sorted(s["shard_id"] for s in summaries)


@pytest.fixture(scope="module")
def first_run(tiny_data, tiny_model, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """One complete run (3 shards of 4, 4, 2 samples, 3 methods); tests work on copies of it."""
    cfg = {"dataset": str(tiny_data), "model": str(tiny_model), "out": str(tmp_path_factory.mktemp("runs")),
           "methods": {"gradient": {}, "gradcam": {"layer": "features"}, "random": {}},
           "metrics": {"deletion_insertion": {"steps": 8}}, "shard_size": 4, "batch_size": 3, "run_id": "r"}
    job, todo, computed = _run(cfg)
    assert todo == computed == [0, 1, 2]
    return cfg, Path(job.run_dir)


@pytest.fixture
def run(first_run, tmp_path) -> tuple[dict[str, Any], Path]:
    cfg, src = first_run
    shutil.copytree(src, tmp_path / "runs" / "r")
    return {**cfg, "out": str(tmp_path / "runs")}, tmp_path / "runs" / "r"


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = connect(run_dir).execute("SELECT COLUMNS(lambda c: NOT regexp_matches(c, '_ms$|^explain_batch$')) "
                                    "FROM metrics ORDER BY method, index")
    cols = [d[0] for d in rows.description]
    return [dict(zip(cols, r, strict=True)) for r in rows.fetchall()]


def _ok_per_method(run_dir: Path) -> dict[str, int]:
    return {m["method"]: m["ok"] for m in json.loads((run_dir / "run.json").read_text())["summary"]["methods"]}


def test_backup_copy_and_uncommitted_shard_are_not_read(run):
    cfg, run_dir = run
    full = _metrics(run_dir)
    assert len(full) == 30 and _ok_per_method(run_dir) == dict.fromkeys(METHODS, 10)
    for table in ("metrics", "explanations"):  # finding 4: a user's backup copy of shard 1
        for method in METHODS:
            src = run_dir / table / f"method={method}" / "shard-000001.parquet"
            shutil.copy(src, src.with_name("shard-000003.backup.parquet"))
    (run_dir / "_shards" / "shard-000002.json").unlink()  # shard 2 written, its commit lost to a kill
    assert connect(run_dir).execute("SELECT count(*) FROM metrics").fetchone() == (24,)
    assert connect(run_dir).execute("SELECT count(*) FROM explanations").fetchone() == (24,)
    assert _metrics(run_dir) == [r for r in full if r["index"] < 8]
    query = CliRunner().invoke(app, ["query", str(run_dir), "SELECT count(*) AS n FROM metrics"])
    assert query.exit_code == 0 and "24" in query.stdout and "28" not in query.stdout, query.output
    summary = CliRunner().invoke(app, ["summary", str(run_dir)])
    assert summary.exit_code == 0, summary.output
    cells = [[c.strip() for c in line.split("│")[1:3]] for line in summary.stdout.splitlines()]
    rows = [c for c in cells if c and c[0] in METHODS][:len(METHODS)]  # the first table (then seconds per method)
    assert rows == [[m, "8"] for m in METHODS], summary.stdout
    _job, todo, computed = _run(cfg)  # the rerun commits shard 2 again; the backups stay unread
    assert todo == computed == [2]
    assert _ok_per_method(run_dir) == dict.fromkeys(METHODS, 10)
    assert _metrics(run_dir) == full


def _flip_insertion_auc(path: Path) -> float:
    """Flip one mantissa bit of the first insertion AUC where it is stored; the file still reads. The new value."""
    before = pq.read_table(path).column("insertion_auc").to_pylist()
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<d", before[0]))
    assert at > 0
    data[at + 5] ^= 0x04
    path.write_bytes(bytes(data))
    after = pq.read_table(path).column("insertion_auc").to_pylist()
    assert after[1:] == before[1:] and after[0] != before[0]
    return after[0]


def test_flipped_byte_is_found_recomputed_and_verified(run):
    cfg, run_dir = run
    full = _metrics(run_dir)
    victim = run_dir / "metrics" / "method=gradient" / "shard-000001.parquet"
    changed = _flip_insertion_auc(victim)  # finding 5
    assert changed in [r["insertion_auc"] for r in _metrics(run_dir)]
    stale = [temp_name(run_dir / "_shards" / "shard-000001.json"), temp_name(run_dir / "run.json")]
    for path in stale:  # finding 10: what a kill during a commit record's write leaves
        path.write_text('{"run_key": ')
    job = open_job("explain", cfg)
    todo, _done = plan(job)  # the resume check hashes the files: shard 1 is incomplete
    assert [s.shard_id for s in todo] == [1]
    assert not any(p.exists() for p in stale)
    verify = subprocess.run([XAI, "verify", str(run_dir)], capture_output=True, text=True, timeout=120)
    lines = verify.stdout.strip().splitlines()
    assert verify.returncode == 1 and len(lines) == 2, (verify.stdout, verify.stderr)
    assert lines[0] == ("bad shard-000001: metrics/method=gradient/shard-000001.parquet: sha256 differs from the "
                        "commit record (the file changed after it was written)")
    _job, todo_again, computed = _run(cfg)
    assert todo_again == computed == [1]
    assert _metrics(run_dir) == full
    again = CliRunner().invoke(app, ["verify", str(run_dir)])
    assert again.exit_code == 0 and "3 of 3 committed shards intact (3 planned)" in again.stdout, again.output


def test_xai_summary_on_a_corrupt_shard_prints_one_line(run):
    _cfg, run_dir = run
    victim = run_dir / "metrics" / "method=gradcam" / "shard-000002.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # finding 9: a truncated shard
    res = subprocess.run([XAI, "summary", str(run_dir)], capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert f"xai verify {run_dir}" in lines[0] and "Traceback" not in res.stderr + res.stdout
