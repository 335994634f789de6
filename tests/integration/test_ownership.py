"""One driver per run directory (issue 12, finding 1): while a driver runs, a second ``xai run`` on the same
``--run-id`` exits 2 with one line naming the owner, before it computes or writes anything, whatever its parameters
(another run key: the run would be lost; the same key: the work would be done twice); the first run completes as
if alone. A driver that finds the lock of a dead driver takes it over (one line) and stops what that driver left.

Order without timing: driver A is paused at the write of its first shard by a ``sitecustomize`` hook
(:mod:`pause_gate`): it holds the directory and has committed nothing, which is when the old per-directory run-key
check saw an empty directory and let both drivers run. Both orders of the race are covered by swapping the
parameters of A and B.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pause_gate import XAI, pause_env, resume, wait_paused
from test_killed_driver import _env

from tasks.processes import RECORD, entry
from xcore.io.lock import LOCK_NAME, Owner, process_start


def _command(data: Path, model: Path, out: Path, steps: int) -> list[str]:
    return [XAI, "run", "--dataset", str(data), "--model", str(model), "-m", "gradient", "--metric",
            "deletion_insertion", "-p", f"deletion_insertion.steps={steps}", "--shard-size", "2", "--batch-size", "2",
            "--executor", "local", "--run-id", "shared", "--out", str(out)]


def _files(run: Path) -> dict[str, str]:
    """Every file under the run but the driver's process record: relative path -> sha256."""
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != RECORD}


def _plant_dead_driver(run: Path, leftover: int) -> int:
    """The lock and process record of a driver that died (SIGKILL) while ``leftover`` ran for it; its pid."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    manifests = run / "_manifests"
    manifests.mkdir(parents=True)
    dead = Owner.me("0" * 16).__dict__ | {"pid": proc.pid, "start": None}
    (manifests / LOCK_NAME).write_text(json.dumps(dead))
    (manifests / RECORD).write_text(json.dumps({
        "host": socket.gethostname(), "boot_id": dead["boot_id"], "driver": {"pid": proc.pid, "start": None},
        "processes": [entry(leftover)]}))
    return proc.pid


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.parametrize(("first", "second"), [(8, 10), (10, 8)])
def test_a_second_driver_exits_2_naming_the_owner(tiny_data, tiny_model, tmp_path, home, first, second):
    out, gate, token = tmp_path / "runs", tmp_path / "gate", uuid.uuid4().hex
    run = out / "shared"
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    dead = _plant_dead_driver(run, leftover.pid)
    log = tmp_path / "a.log"
    with log.open("wb") as fh:
        a = subprocess.Popen(_command(tiny_data, tiny_model, out, first), stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             env=_env(home, token, **pause_env(gate, 0)))
    try:
        wait_paused(gate, a, log)
        assert not (run / "_shards").exists() or not any((run / "_shards").iterdir())  # nothing committed yet
        before = _files(run)
        for steps in (second, first):  # another run key, then A's own
            b = subprocess.run(_command(tiny_data, tiny_model, out, steps), capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, env=_env(home, token), timeout=180)
            lines = b.stderr.strip().splitlines()
            assert b.returncode == 2, b.stdout[-3000:] + b.stderr[-3000:]
            assert len(lines) == 1, b.stderr
            assert f"is in use by driver pid {a.pid} on host {socket.gethostname()} since " in lines[0]
            assert ("needs another --run-id" in lines[0]) == (steps != first), lines[0]
            assert "temporary server" not in b.stdout + b.stderr  # no Prefect server, nothing computed
            assert _files(run) == before
            assert json.loads((run / "_manifests" / RECORD).read_text())["driver"]["pid"] == a.pid
        resume(gate)
        assert a.wait(180) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        resume(gate)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(a.pid, signal.SIGKILL)
        a.wait(30)
        leftover.kill()
    text = log.read_text(errors="replace")
    assert f"took over {run} from driver pid {dead} on host {socket.gethostname()}" in " ".join(text.split())
    assert f"stopped pid {leftover.pid} (sleep) left by driver pid {dead} (SIGTERM)" in text
    assert leftover.wait(10) == -signal.SIGTERM and process_start(leftover.pid) is None
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["metrics"]["deletion_insertion"]["steps"] == first
    assert info["summary"]["shards_complete"] == info["summary"]["shards_computed"] == 5  # each shard once, by A
    records = [json.loads(p.read_text()) for p in sorted((run / "_shards").glob("shard-*.json"))]
    assert {r["run_key"] for r in records} == {info["run_key"]} and len(records) == 5
    assert not (run / "_manifests" / LOCK_NAME).exists()
