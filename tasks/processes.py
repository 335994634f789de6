"""What a driver started, recorded per run directory, so nothing it started outlives it (issue 12, finding 6).

``<run_dir>/_manifests/processes.json`` names the host and boot, the driver (pid, start time, command line) and
every process it started, found as its descendants through ``/proc`` parent links: the temporary Prefect server
(uvicorn), the local Ray instance (gcs_server, raylet, dashboard, monitors, the dashboard and runtime-env agents,
the actors). It is written when the driver takes the directory, refreshed once Ray has started and then every
``REFRESH_S`` s by a thread (a scan of ``/proc``, rewritten only when a process appeared), and kept afterwards: it
describes the directory's last driver.

- :func:`own_run`: the owner lock (:mod:`xcore.io.lock`) and the record, re-entrant within one process (``xai``
  takes it before Prefect starts; the flow's ``run_pipeline`` takes it again, so a Prefect deployment holds it
  too). On entry it stops what a dead driver of the directory left (:func:`stop_left`); a block left by a signal
  (a ``BaseException`` that is not an ``Exception``: ``KeyboardInterrupt``, Prefect's ``TerminationSignal``)
  shuts the local Ray instance down before the lock is released.
- :func:`stop_left`: when the recorded driver is gone, every recorded process that is still the same process (pid
  and start time) gets SIGTERM, then SIGKILL after ``GRACE_S``; one line each.
- :func:`start_ray`: ``init_ray()`` keeping this process's SIGTERM / SIGINT handlers (``ray.init`` installs its
  own SIGTERM handler), then a refresh of the record.
Without ``/proc`` (not Linux) only the driver is recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xcore.io.lock import RunLock, RunOwnedError, boot_id, pid_alive, process_start
from xcore.io.runs import read_json, write_json_atomic

RECORD = "processes.json"
GRACE_S = 3.0
REFRESH_S = 2.0
Log = Callable[[str], None]
PREFECT_SERVER = "prefect server"
ROLES = (("uvicorn", PREFECT_SERVER), ("gcs_server", "ray gcs_server"), ("raylet/raylet", "ray raylet"),
         ("DashboardAgent", "ray dashboard agent"), ("dashboard/agent.py", "ray dashboard agent"),
         ("RuntimeEnvAgent", "ray runtime-env agent"), ("runtime_env/agent", "ray runtime-env agent"),
         ("dashboard/dashboard.py", "ray dashboard"), ("log_monitor.py", "ray log monitor"),
         ("monitor.py", "ray monitor"), ("ray::", "ray worker"), ("default_worker.py", "ray worker"))


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def role(command: str) -> str:
    """A short name for what a recorded process is (``prefect server``, ``ray raylet``, ...)."""
    for needle, name in ROLES:
        if needle in command:
            return name
    return Path(command.split(" ")[0]).name if command else "?"


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...), from ``/proc`` parent links."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return sorted(out)


def entry(pid: int) -> dict[str, Any]:
    command = cmdline(pid)
    return {"pid": pid, "start": process_start(pid), "cmdline": command[:300], "role": role(command)}


def stop(entries: list[dict[str, Any]], log: Log, whose: str, grace: float = GRACE_S) -> list[dict[str, Any]]:
    """SIGTERM every entry still running as the same process, SIGKILL those left after ``grace`` s; one line
    each; return the entries that were running."""
    live = [e for e in entries if pid_alive(e["pid"], e.get("start"))]
    for e in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(e["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(e["pid"], e.get("start")) for e in live):
        time.sleep(0.1)
    for e in live:
        how = "SIGTERM"
        if pid_alive(e["pid"], e.get("start")):
            how = "SIGKILL"
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(e["pid"], signal.SIGKILL)
        log(f"stopped pid {e['pid']} ({e.get('role')}) {whose} ({how})")
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(e["pid"], e.get("start")) for e in live):
        time.sleep(0.1)
    return live


def stop_left(run_dir: Path | str, log: Log) -> list[dict[str, Any]]:
    """Stop what the directory's last driver started if that driver is gone (module docstring)."""
    record = read_json(Path(run_dir) / "_manifests" / RECORD)
    if not record or not record.get("driver"):
        return []
    driver = record["driver"]
    if record.get("host") != socket.gethostname() or record.get("boot_id") != boot_id():
        if record.get("host") != socket.gethostname():
            log(f"processes of driver pid {driver['pid']} were recorded on host {record.get('host')}: "
                f"run `xai clean {run_dir}` there")
        return []
    if driver["pid"] == os.getpid() or pid_alive(driver["pid"], driver.get("start")):
        return []
    return stop(record.get("processes", []), log, f"left by driver pid {driver['pid']}")


class Book:
    """The record of one held run directory (module docstring); ``depth`` counts nested :func:`own_run`."""

    def __init__(self, run_dir: Path, lock: RunLock) -> None:
        self.path = run_dir / "_manifests" / RECORD
        self.lock, self.depth = lock, 0
        self.entries: dict[tuple[int, int | None], dict[str, Any]] = {}
        self._mutex = threading.Lock()
        self._written = False
        self._stop = threading.Event()

    def watch(self) -> None:
        """Refresh the record every ``REFRESH_S`` s in a daemon thread until :meth:`close`."""
        def loop() -> None:
            while not self._stop.wait(REFRESH_S):
                with contextlib.suppress(OSError):
                    self.refresh()

        threading.Thread(target=loop, name="xcore-process-record", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def refresh(self, *_: Any) -> None:
        """Add this process's current descendants to the record (rewritten only when something new appeared)."""
        with self._mutex:
            fresh = [entry(p) for p in descendants(os.getpid())]
            new = {(e["pid"], e["start"]): e for e in fresh if e["start"] is not None}
            if self._written and set(new) <= set(self.entries):
                return
            self.entries.update(new)
            me = entry(os.getpid())
            write_json_atomic(self.path, {"host": socket.gethostname(), "boot_id": boot_id(), "driver": me,
                                          "processes": list(self.entries.values()), "updated_at": time.time()})
            self._written = True

    def started(self) -> list[dict[str, Any]]:
        """The recorded processes this driver started."""
        return list(self.entries.values())


_HELD: dict[Path, Book] = {}


@contextlib.contextmanager
def own_run(run_dir: Path | str, run_key: str | None, log: Log) -> Iterator[Book]:
    """Hold ``run_dir`` for this driver (module docstring); :class:`RunOwnedError` when another driver holds it."""
    key = Path(run_dir).resolve()
    book = _HELD.get(key)
    if book is None:
        lock = RunLock(run_dir, run_key)
        taken = lock.acquire()
        try:
            if taken:
                log(taken)
            stop_left(run_dir, log)
            book = Book(Path(run_dir), lock)
            book.refresh()
            book.watch()
        except BaseException:
            lock.release()
            raise
        _HELD[key] = book
    elif book.lock.run_key not in (run_key, None):
        raise RunOwnedError(f"{run_dir} is held by this process for run {book.lock.run_key}, not {run_key}")
    book.depth += 1
    try:
        yield book
    except BaseException as err:
        if not isinstance(err, Exception):
            stop_ray()
        raise
    finally:
        book.depth -= 1
        if book.depth == 0:
            del _HELD[key]
            book.close()
            book.lock.release()


def start_ray(book: Book | None = None) -> None:
    """``init_ray()`` with this process's SIGTERM / SIGINT handlers kept, then record Ray's processes."""
    from tasks.runtime import init_ray

    main = threading.current_thread() is threading.main_thread()
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        init_ray()
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)
    if book is not None:
        book.refresh()


def stop_ray() -> None:
    """Shut down this process's Ray (the local instance it started, or its connection to a cluster)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
