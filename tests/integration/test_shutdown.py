"""Nothing a driver started outlives it (issue 12, finding 6).

- SIGTERM / SIGINT of ``xai run --executor ray`` mid-run: it exits 143 / 130 within a deadline, and no process it
  started survives (its descendants, recorded by pid and start time just before the signal: the temporary Prefect
  server, the local Ray instance's gcs_server, raylet, dashboard, monitors and agents, the actors).
- SIGKILL of the driver alone (not its process group): the actors die with the local Ray instance, whose raylet is
  fate-shared with the driver, so they take no more shards; what survives it (the temporary Prefect server, Ray's
  dashboard and runtime-env agents) is found by ``xai clean RUN_DIR`` from ``_manifests/processes.json`` and
  stopped, one line each; the rerun (in process: a run resumes on any executor) completes, to tables equal to an
  uninterrupted run.

The signal lands at a known point without timing: the actor is paused at the write of shard 1 (:mod:`pause_gate`)
and the test waits for that and for Ray in the driver's process record. Processes are identified by pid and start
time, so a reused pid is never taken for a survivor; whatever the test started is killed by pid at the end.
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

import pytest
from pause_gate import XAI, pause_env, resume, wait_paused
from test_killed_driver import _env, _tables

from tasks.processes import RECORD, descendants, entry
from xcore.io.lock import LOCK_NAME, pid_alive

SHARDS = 5  # 10 samples, 2 per shard
CONFIG = {"methods": {"gradient": {}, "gradcam": {"layer": "features"}},
          "metrics": {"deletion_insertion": {"steps": 8}}, "shard_size": 2, "batch_size": 2, "run_id": "r"}


def _command(data: Path, model: Path, out: Path) -> list[str]:
    return [XAI, "run", "--dataset", str(data), "--model", str(model), "-m", "gradient", "-m", "gradcam",
            "-p", "gradcam.layer=features", "--metric", "deletion_insertion", "-p", "deletion_insertion.steps=8",
            "--shard-size", "2", "--batch-size", "2", "--executor", "ray", "--actors", "1", "--run-id", "r",
            "--out", str(out)]


def _alive(started: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in started if pid_alive(e["pid"], e["start"])]


def _wait_gone(started: list[dict[str, Any]], deadline_s: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + deadline_s
    while (left := _alive(started)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _wait_recorded(record: Path, started: list[dict[str, Any]], deadline_s: float = 60.0) -> bool:
    """Whether the driver's process record names every process in ``started`` (it is refreshed after each finished
    shard, so shortly after the pause at shard 1); waits up to a deadline, asserts nothing."""
    want = {(e["pid"], e["start"]) for e in started}
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if want <= {(e["pid"], e["start"]) for e in json.loads(record.read_text())["processes"]}:
                return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def _paused_run(data: Path, model: Path, tmp_path: Path, home: Path):
    """``xai run --executor ray`` paused in its actor at shard 1; yields the process, its descendants (pid, start
    time, role) at that point and its log; kills by pid whatever is left."""
    gate, log = tmp_path / "gate", tmp_path / "run.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(_command(data, model, tmp_path / "runs"), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=_env(home, uuid.uuid4().hex, **pause_env(gate, 1)))
    started: list[dict[str, Any]] = []
    try:
        wait_paused(gate, proc, log)
        started = [entry(pid) for pid in descendants(proc.pid)]
        roles = {e["role"] for e in started}
        assert {"prefect server", "ray gcs_server", "ray raylet", "ray worker"} <= roles, roles
        yield proc, started, log
    finally:
        resume(gate)
        for e in _alive(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(e["pid"], signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_driver_stops_everything_it_started(tiny_data, tiny_model, tmp_path, home, sig):
    with _paused_run(tiny_data, tiny_model, tmp_path, home) as (proc, started, log):
        os.kill(proc.pid, sig)
        code = proc.wait(90)
        survivors = _wait_gone(started)
    text = log.read_text(errors="replace")
    assert code == 128 + sig, text[-4000:]
    assert survivors == [], survivors
    assert not (tmp_path / "runs" / "r" / "_manifests" / LOCK_NAME).exists()
    assert f"error: interrupted by {sig.name}: stopped the actors, Ray" in text


def _reference(data: Path, model: Path, out: Path) -> tuple[str, Path]:
    """An uninterrupted run of the same configuration, in this process (one torch thread, as an actor)."""
    import torch

    from tasks.driver import dispatch, plan
    from tasks.executors import LocalExecutor
    from xcore.pipeline import open_job

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = open_job("explain", {**CONFIG, "dataset": str(data), "model": str(model), "out": str(out)})
        todo, _ = plan(job)
        summaries, failed = dispatch(job, todo, LocalExecutor(job))
        assert failed == [] and len(summaries) == SHARDS
    finally:
        torch.set_num_threads(threads)
    return job.run_key, Path(job.run_dir)


@pytest.mark.slow
@pytest.mark.engine
def test_a_killed_drivers_leftovers_are_stopped_by_xai_clean(tiny_data, tiny_model, tmp_path, home):
    run = tmp_path / "runs" / "r"
    with _paused_run(tiny_data, tiny_model, tmp_path, home) as (proc, started, _log):
        recorded = _wait_recorded(run / "_manifests" / RECORD, started)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        workers = [e for e in started if e["role"] in ("ray worker", "ray raylet", "ray gcs_server")]
        assert _wait_gone(workers) == []  # the actors died with the local instance: no more shards taken
        left = _alive(started)
        assert "prefect server" in {e["role"] for e in left}, left  # what SIGKILL leaves behind
        committed = sorted(json.loads(p.read_text())["shard_id"] for p in (run / "_shards").glob("shard-*.json"))
        clean = subprocess.run([XAI, "clean", str(run)], capture_output=True, text=True, timeout=120,
                               env=_env(home, uuid.uuid4().hex), stdin=subprocess.DEVNULL)
        survivors = _wait_gone(started, 10.0)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"took over {run} from driver pid {proc.pid}" in " ".join(clean.stdout.split())
    for e in left:
        assert f"stopped pid {e['pid']} ({e['role']}) left by driver pid {proc.pid}" in clean.stdout, clean.stdout
    assert survivors == [], survivors
    assert recorded, "the driver's process record did not name every process it started before the kill"
    assert not (run / "_manifests" / LOCK_NAME).exists()
    assert committed == [0]  # shard 1 was paused before any file of it; the actor held shard 2 behind it

    command = [*_command(tiny_data, tiny_model, tmp_path / "runs"), "--executor", "local"]  # resumes on any executor
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env(home, uuid.uuid4().hex),
                           stdin=subprocess.DEVNULL)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads((run / "run.json").read_text())
    assert summary["summary"]["shards_computed"] == SHARDS - len(committed)
    key, reference = _reference(tiny_data, tiny_model, tmp_path / "reference")
    assert summary["run_key"] == key
    got, want = _tables(run), _tables(reference)
    assert len(want["metrics"]) == 10 * 2
    for table in want:
        assert got[table] == want[table], table
