"""A killed ``xai run`` (SIGKILL of its whole process group, mid-write) resumes: the same command computes only the
unfinished shards and the tables equal those of a run that was never interrupted.

The kill lands at a known point without timing: a ``sitecustomize`` on the killed run's ``PYTHONPATH`` (the driver,
and with Ray every actor, inherit it) stops the first write of shard 3 after one whole table file and half of the
next one's temp file, as a crash mid-write would leave them, and says so in a marker file; the test waits for that
marker (a deadline, not a sleep), then kills. Every process of a run carries a token in its environment, so the test
finds any process of the run that outlived the kill (a Ray head, raylet or actor, the temporary Prefect server),
and only those: they fail the test and are killed by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pause_gate import XAI, sitecustomize

from flows.prefect_env import TELEMETRY_OFF

GATED = 3  # the shard whose write is cut short
SHARDS = 5  # 10 samples, 2 per shard
GATE = sitecustomize('''"""Test gate of test_killed_driver: the first write of shard $XCORE_TEST_GATE_SHARD leaves
one whole table file and a half-written temp file, writes $XCORE_TEST_GATE_DIR/blocked, then waits to be killed."""
import io
import os
import time
import uuid
from pathlib import Path

SHARD = os.environ.get("XCORE_TEST_GATE_SHARD")


def _patch(module):
    import pyarrow.parquet as pq

    real = module.write_atomic
    calls = []

    def write_atomic(table, path, *, run_key, shard_id, **kw):
        if int(shard_id) != int(SHARD):
            return real(table, path, run_key=run_key, shard_id=shard_id, **kw)
        calls.append(path)
        if len(calls) == 1:
            return real(table, path, run_key=run_key, shard_id=shard_id, **kw)
        path, buf = Path(path), io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        (path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}").write_bytes(data[: len(data) // 2])
        marker = Path(os.environ["XCORE_TEST_GATE_DIR"]) / "blocked"
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(1)

    module.write_atomic = write_atomic


''')


def _env(home: Path, token: str, **extra: str) -> dict[str, str]:
    """The environment of one ``xai run``: no inherited Prefect server or Ray cluster, a temporary Prefect
    server under ``home``, telemetry off, and the token that marks every process of the test's runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RAY_ADDRESS"}
    env.update(TELEMETRY_OFF, PREFECT_HOME=str(home), RAY_USAGE_STATS_ENABLED="0", XCORE_KILL_TEST=token,
               COLUMNS="200", **extra)
    return env


def _marked(token: str) -> dict[int, str]:
    """Live processes whose environment carries ``token``: pid -> command line."""
    needle = f"XCORE_KILL_TEST={token}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    return found


def _committed(run: Path) -> dict[int, dict[str, Any]]:
    """Commit records by shard id."""
    records = (json.loads(p.read_text()) for p in sorted((run / "_shards").glob("shard-*.json")))
    return {r["shard_id"]: r for r in records}


def _tables(run: Path) -> dict[str, list[tuple]]:
    """Every table of the run through DuckDB, timings dropped, in a fixed order."""
    con = duckdb.connect()
    out = {}
    for table, order in (("metrics", "method, index"), ("explanations", "method, index, part"),
                         ("errors", "index, method")):
        files = sorted((run / table).rglob("*.parquet"))
        if not files:
            out[table] = []
            continue
        src = f"read_parquet('{run / table}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        cols = "COLUMNS(lambda c: NOT regexp_matches(c, '_ms$|^explain_batch$'))" if table == "metrics" else "*"
        out[table] = con.execute(f"SELECT {cols} FROM {src} ORDER BY {order}").fetchall()
    return out


def _parquet_rows(run: Path) -> int:
    """Rows of every ``*.parquet`` file DuckDB sees under the run (committed or not)."""
    sql = f"SELECT count(*) FROM read_parquet('{run}/**/*.parquet', union_by_name = true)"
    return duckdb.connect().execute(sql).fetchall()[0][0]


def _run(args: list[str], env: dict[str, str], log: Path, timeout: float = 300.0) -> None:
    with log.open("wb") as fh:
        proc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              start_new_session=True, timeout=timeout)
    assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_killed_run_resumes_only_unfinished_shards(tiny_data, tiny_model, tmp_path, executor):
    token, home, gate = uuid.uuid4().hex, tmp_path / "prefect-home", tmp_path / "gate"
    home.mkdir()
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(GATE)
    command = [XAI, "run", "--dataset", str(tiny_data), "--model", str(tiny_model), "-m", "gradient", "-m", "gradcam",
               "-p", "gradcam.layer=features", "--metric", "deletion_insertion", "-p", "deletion_insertion.steps=8",
               "--shard-size", "2", "--batch-size", "2", "--executor", executor, "--run-id", "r",
               *(["--actors", "2"] if executor == "ray" else [])]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    run = killed / "r"
    pythonpath = os.pathsep.join(p for p in (str(gate), os.environ.get("PYTHONPATH")) if p)
    log = tmp_path / "killed.log"
    t0 = time.monotonic()
    with log.open("wb") as fh:
        proc = subprocess.Popen([*command, "--out", str(killed)], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=_env(home, token, PYTHONPATH=pythonpath, XCORE_TEST_GATE_SHARD=str(GATED),
                                         XCORE_TEST_GATE_DIR=str(gate)))
    leftovers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        while not ((gate / "blocked").exists() and _committed(run)):
            assert proc.poll() is None, f"xai exited {proc.returncode} early:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"shard {GATED} never reached its write:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        seen = _marked(token)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while (leftovers := _marked(token)) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _marked(token):  # only processes of this test's run carry the token
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    killed_s = time.monotonic() - t0
    assert leftovers == {}, f"processes of the killed run still alive 30 s after the kill: {leftovers}"
    if executor == "ray":
        assert any("raylet" in c for c in seen.values()), seen  # the run's own Ray was up when it was killed

    before = _committed(run)
    assert 1 <= len(before) < SHARDS and GATED not in before, sorted(before)
    cut = sorted(p.relative_to(run).as_posix() for p in run.rglob(f"*shard-{GATED:06d}.parquet*"))
    assert len(cut) == 2 and any(".tmp-" in p for p in cut), cut  # one whole uncommitted file, one half temp
    committed_rows = sum(f["rows"] for r in before.values() for f in r["files"])
    assert _parquet_rows(run) > committed_rows  # the uncommitted file of shard 3 is visible until the rerun

    t1 = time.monotonic()
    _run([*command, "--out", str(killed)], _env(home, token), tmp_path / "resume.log")
    resume_s = time.monotonic() - t1
    todo = sorted(set(range(SHARDS)) - set(before))
    assert json.loads((run / "_manifests" / "plan.json").read_text())["todo"] == todo
    summary = json.loads((run / "run.json").read_text())["summary"]
    assert summary["shards_computed"] == len(todo) and summary["shards_complete"] == SHARDS
    after = _committed(run)
    assert sorted(after) == list(range(SHARDS))
    assert all(after[s]["committed_at"] == r["committed_at"] for s, r in before.items())  # not rewritten

    t2 = time.monotonic()
    _run([*command, "--out", str(clean)], _env(home, token), tmp_path / "clean.log")
    clean_s = time.monotonic() - t2
    got, want = _tables(run), _tables(clean / "r")
    assert len(want["metrics"]) == 10 * 2 and len(want["explanations"]) == 10 * 2
    for table in want:
        assert got[table] == want[table], table
    dupes = duckdb.connect().execute(
        f"SELECT sample_id, method, count(*) FROM read_parquet('{run}/metrics/**/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL HAVING count(*) > 1").fetchall()
    assert dupes == []
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]
    assert _parquet_rows(run) == sum(f["rows"] for r in after.values() for f in r["files"])
    assert _marked(token) == {}
    print(f"{executor}: killed run {killed_s:.1f} s, resume {resume_s:.1f} s, clean run {clean_s:.1f} s")
