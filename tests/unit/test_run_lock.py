"""The run directory's owner lock (xcore.io.lock) and the record of what a driver started (tasks.processes).

Other drivers are played by real processes of this test (a ``sleep`` child is a live owner; one that has exited is
a dead one) and by lock records written as another driver would write them; no timing is asserted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tasks.processes import RECORD, descendants, entry, own_run, stop_left
from xcore.io.lock import LOCK_NAME, Owner, RunLock, RunOwnedError, pid_alive, process_start

LINUX = Path("/proc/self/stat").exists()


def _plant(run_dir: Path, owner: Owner) -> Path:
    """Write ``owner``'s lock record as that driver would have."""
    path = run_dir / "_manifests" / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(owner)))
    return path


def _other(pid: int, run_key: str | None = "k1", **changes: object) -> Owner:
    """A lock record of process ``pid`` on this host, as its driver would have written it."""
    return replace(Owner.me(run_key), **{"pid": pid, "start": process_start(pid), **changes})


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_acquire_writes_the_owner_and_release_removes_it(tmp_path):
    lock = RunLock(tmp_path / "run", "k1")
    assert lock.acquire() is None
    held = Owner.read(lock.path)
    assert held is not None and (held.pid, held.host, held.run_key) == (os.getpid(), socket.gethostname(), "k1")
    assert held.start == process_start(os.getpid())
    assert [p.name for p in lock.path.parent.iterdir() if p.name.endswith(".tmp")] == []
    lock.release()
    assert not lock.path.exists()


@pytest.mark.parametrize("key", ["k1", "k2"])
def test_a_live_owner_is_named_and_nothing_is_taken(tmp_path, sleeper, key):
    path = _plant(tmp_path, _other(sleeper.pid, "k1"))
    before = path.read_bytes()
    with pytest.raises(RunOwnedError) as err:
        RunLock(tmp_path, key).acquire()
    message = str(err.value)
    assert f"in use by driver pid {sleeper.pid} on host {socket.gethostname()} since " in message
    assert "(run key k1)" in message and "\n" not in message
    assert ("needs another --run-id" in message) == (key != "k1")
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("case", "why"), [("dead", "the process is gone"),
                                           ("reused", "the pid now runs another process"),
                                           ("rebooted", "its host rebooted"),
                                           ("other host, silent", "its lock was not refreshed for"),
                                           ("unreadable", "it is unreadable")])
def test_a_stale_lock_is_taken_over_with_one_line(tmp_path, case, why):
    if case in ("dead", "reused") and not LINUX:
        pytest.skip("needs /proc")
    me = os.getpid()
    owners = {"dead": _other(_dead_pid()), "reused": _other(me, start=(process_start(me) or 0) + 1),
              "rebooted": _other(me, boot_id="another-boot"), "other host, silent": _other(me, host="elsewhere")}
    path = tmp_path / "_manifests" / LOCK_NAME
    if case == "unreadable":
        path.parent.mkdir(parents=True)
        path.write_text("{not json")
    else:
        _plant(tmp_path, owners[case])
    if case == "other host, silent":
        os.utime(path, (time.time() - 700, time.time() - 700))
    lock = RunLock(tmp_path, "k1", stale_after=600)
    line = lock.acquire()
    assert line is not None and line.startswith(f"took over {tmp_path} from driver ") and why in line
    assert Owner.read(path).token == lock.owner.token  # type: ignore[union-attr]
    lock.release()


def test_another_hosts_lock_is_live_while_refreshed(tmp_path):
    _plant(tmp_path, _other(os.getpid(), host="elsewhere"))
    with pytest.raises(RunOwnedError, match="on host elsewhere"):
        RunLock(tmp_path, "k1", stale_after=600).acquire()


def test_another_run_key_in_the_directory_is_refused_under_the_lock(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"run_key": "k0"}))
    lock = RunLock(tmp_path, "k1")
    with pytest.raises(RunOwnedError, match="holds run k0, not k1; choose another --run-id"):
        lock.acquire()
    assert not lock.path.exists()  # released again
    RunLock(tmp_path, "k0").acquire()


def test_release_never_removes_another_drivers_lock(tmp_path, sleeper):
    lock = RunLock(tmp_path, "k1")
    lock.acquire()
    _plant(tmp_path, _other(sleeper.pid))  # as if a driver took it over meanwhile
    lock.release()
    assert Owner.read(lock.path).pid == sleeper.pid  # type: ignore[union-attr]


def _race(run_dir: str, key: str, out: multiprocessing.Queue, done: object) -> None:
    try:
        lock = RunLock(run_dir, key)
        out.put(("won", lock.acquire()))
        done.wait(60)  # type: ignore[attr-defined]  # hold the lock until every contender has tried
        lock.release()
    except RunOwnedError as err:
        out.put(("lost", str(err)))


@pytest.mark.parametrize("stale", [False, True])
def test_one_of_many_concurrent_drivers_wins(tmp_path, stale):
    if stale:
        _plant(tmp_path, _other(_dead_pid()))
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    done = ctx.Event()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), "k1", out, done)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    done.set()
    for p in procs:
        p.join(60)
    assert sorted(r[0] for r in results) == ["lost"] * 5 + ["won"]
    won = next(r[1] for r in results if r[0] == "won")
    assert (won is not None) == stale  # the stale lock was taken over exactly once, by the winner
    assert all("in use by driver pid" in r[1] for r in results if r[0] == "lost")


def test_own_run_is_reentrant_and_records_the_driver(tmp_path):
    run = tmp_path / "run"
    lines: list[str] = []
    with own_run(run, "k1", lines.append) as book:
        with own_run(run, "k1", lines.append) as inner:
            assert inner is book and book.depth == 2
            with pytest.raises(RunOwnedError, match="held by this process for run k1"), \
                    own_run(run, "k2", lines.append):
                pass
        assert (run / "_manifests" / LOCK_NAME).exists()
        record = json.loads((run / "_manifests" / RECORD).read_text())
        assert record["driver"]["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not (run / "_manifests" / LOCK_NAME).exists() and lines == []


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_descendants_are_found_through_parent_links():
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        deadline = time.monotonic() + 30
        while len(descendants(proc.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = descendants(os.getpid())
        assert proc.pid in kids and set(descendants(proc.pid)) <= set(kids) and descendants(proc.pid)
    finally:
        for pid in [*descendants(proc.pid), proc.pid]:
            os.kill(pid, 9)
        proc.wait()


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_stop_left_stops_what_a_dead_driver_started_and_nothing_else(tmp_path):
    left = subprocess.Popen(["sleep", "60"], start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        reused = {**entry(other.pid), "start": process_start(other.pid) + 1}  # its pid, another process
        record = {"host": socket.gethostname(), "boot_id": Owner.me(None).boot_id,
                  "driver": {"pid": os.getpid(), "start": process_start(os.getpid())},
                  "processes": [entry(left.pid), reused]}
        (tmp_path / "_manifests").mkdir()
        (tmp_path / "_manifests" / RECORD).write_text(json.dumps(record))
        lines: list[str] = []
        assert stop_left(tmp_path, lines.append) == []  # its driver (this process) is alive
        record["driver"] = {"pid": _dead_pid(), "start": None}
        (tmp_path / "_manifests" / RECORD).write_text(json.dumps(record))
        stopped = stop_left(tmp_path, lines.append)
        assert [e["pid"] for e in stopped] == [left.pid] and left.wait(10) == -15
        assert lines == [f"stopped pid {left.pid} (sleep) left by driver pid {record['driver']['pid']} (SIGTERM)"]
        assert pid_alive(other.pid, process_start(other.pid))
    finally:
        for p in (left, other):
            p.kill()
            p.wait()
