"""One driver per run directory: the owner lock ``<run_dir>/_manifests/owner.lock`` (issue 12, finding 1).

The lock file is one JSON record: the owner's ``host``, ``boot_id``, ``pid``, process ``start`` (clock ticks since
boot, ``/proc/<pid>/stat`` field 22), ``since`` (epoch seconds), ``run_key`` and a random ``token``. It is published
atomically: written whole to a private temp file in ``_manifests`` and then hard-linked to ``owner.lock``.
``link(2)`` fails with ``EEXIST`` when the name exists, atomically on a local file system and on NFS (it is the
recipe ``open(2)`` gives for ``O_CREAT | O_EXCL`` on NFS; a lost NFS reply is caught by checking the temp file's
link count), so two drivers, on one host or on several hosts sharing the directory, never both own it, and the
lock never exists half-written.

A lock is **stale** when its owner is gone. On the owner's host (same host name and boot id): the pid is not
running, is a zombie, or runs a process with another start time (the pid was reused). Same host name and another
boot id: the host rebooted. On another host the pid cannot be checked: the owner touches the file every
``HEARTBEAT_S`` s, and a lock not touched for ``stale_after`` s (``XCORE_LOCK_STALE_S``, default 600, compared with
the file system's own clock) is stale. A stale lock is taken over (the caller logs one line) under
``fcntl.flock`` of ``_manifests/.owner.guard`` where ``fcntl`` exists, so two drivers never both take it over.

The run key recorded in the directory (``run.json``, the shards' commit records) is checked after the lock is
held (:func:`refuse_foreign`), so "another configuration already lives here" is decided without a race between
the check and the first write.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xcore.errors import UsageError
from xcore.io.runs import RunLayout, read_json

LOCK_NAME = "owner.lock"
HEARTBEAT_S = 30.0
STALE_S = 600.0


class RunOwnedError(UsageError):
    """The run directory is owned by a live driver, or holds another run key (exit code 2)."""


def boot_id() -> str | None:
    """This boot's id (Linux), so a pid recorded before a reboot is never taken for a live process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22); ``None`` when it is
    not running, is a zombie, or ``/proc`` is missing (then :func:`pid_alive` decides alone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` is a live process and, when ``start`` is given and ``/proc`` exists, the same process."""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        now = process_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Owner:
    """One lock record (module docstring)."""

    host: str
    boot_id: str | None
    pid: int
    start: int | None
    since: float
    run_key: str | None
    token: str

    @classmethod
    def me(cls, run_key: str | None) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), boot_id(), pid, process_start(pid), time.time(), run_key, uuid.uuid4().hex)

    @classmethod
    def read(cls, path: Path) -> Owner | None:
        """The record at ``path``; ``None`` when it is missing or not a lock record."""
        data = read_json(path)
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__}) if data else None
        except (KeyError, TypeError):
            return None

    def describe(self) -> str:
        """``pid 123 on host h since 2026-12-03 01:36:22 (run key abc)``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        what = f"run key {self.run_key}" if self.run_key else "xai clean"
        return f"pid {self.pid} on host {self.host} since {since} ({what})"

    def stale_reason(self, age: float, stale_after: float) -> str | None:
        """Why the owner is gone (module docstring), or ``None`` while it may be alive."""
        if self.host == socket.gethostname():
            if self.boot_id != boot_id():
                return "its host rebooted"
            if not pid_alive(self.pid, self.start):
                return "the process is gone" if process_start(self.pid) is None else "the pid now runs another process"
            return None
        return f"its lock was not refreshed for {age:.0f} s" if age > stale_after else None


def refuse_foreign(run_dir: Path | str, run_key: str) -> None:
    """:class:`RunOwnedError` when ``run_dir`` holds another run key (``run.json`` or the first commit record):
    its shards would mix with this run's. Checked when a job is built, and again once the lock is held."""
    layout = RunLayout(run_dir)
    info = read_json(layout.run_json)
    keys = {info.get("run_key")} if info else set()
    keys |= {r.get("run_key") for r in layout.commit_records()[:1]}
    other = sorted(k for k in keys if k and k != run_key)
    if other:
        raise RunOwnedError(f"{run_dir} holds run {other[0]}, not {run_key}; choose another --run-id")


class RunLock:
    """The owner lock of one run directory (module docstring): ``acquire()`` / ``release()``."""

    def __init__(self, run_dir: Path | str, run_key: str | None, stale_after: float | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_key = run_key
        self.path = self.run_dir / "_manifests" / LOCK_NAME
        self.stale_after = float(stale_after or os.environ.get("XCORE_LOCK_STALE_S") or STALE_S)
        self.owner: Owner | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Own the directory; after taking over a stale lock, return one line saying from whom and why.

        Raises :class:`RunOwnedError` naming the owner when a live driver holds it, and when the directory holds
        another run key (checked once the lock is held; the lock is released again).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = Owner.me(self.run_key)
        taken: str | None = None
        for _ in range(5):
            fs_now = self._publish(me)
            if fs_now is None:
                break
            held = Owner.read(self.path)
            if held is None and not self.path.exists():
                continue  # released meanwhile: try again
            why = held.stale_reason(fs_now - self._mtime(), self.stale_after) if held else "it is unreadable"
            if why is None and held is not None:
                raise RunOwnedError(f"{self.run_dir} is in use by driver {held.describe()}; " + (
                    "rerun when it has finished" if held.run_key == self.run_key or self.run_key is None
                    else f"this run (key {self.run_key}) needs another --run-id"))
            if self._remove_stale(held):
                taken = f"took over {self.run_dir} from driver {held.describe() if held else '?'}: {why}"
        else:
            raise RunOwnedError(f"{self.run_dir}: could not take over its stale owner lock {self.path}")
        self.owner = me
        if self.run_key:
            try:
                refuse_foreign(self.run_dir, self.run_key)
            except RunOwnedError:
                self.release()
                raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="xcore-run-lock", daemon=True)
        self._beat.start()
        return taken

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours (never another driver's)."""
        self._stop.set()
        if self.owner is not None:
            held = Owner.read(self.path)
            if held is not None and held.token == self.owner.token:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        self.owner = None

    def _publish(self, me: Owner) -> float | None:
        """Link a complete record to the lock name; ``None`` on success, else the file system's "now"."""
        tmp = self.path.with_name(f".{LOCK_NAME}.{me.token}.tmp")
        tmp.write_text(json.dumps(asdict(me), sort_keys=True) + "\n")
        try:
            try:
                os.link(tmp, self.path)
                return None
            except FileExistsError:
                return tmp.stat().st_mtime
            except OSError:
                if tmp.stat().st_nlink == 2:  # NFS: the link was made but its reply was lost
                    return None
                raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return time.time()

    def _remove_stale(self, held: Owner | None) -> bool:
        """Remove the lock if it still holds the stale record ``held`` (under the guard); whether it was removed."""
        guard = self.path.with_name(".owner.guard")
        with open(guard, "a") as fh:
            with contextlib.suppress(ImportError):
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            now = Owner.read(self.path)
            if (now.token if now else None) != (held.token if held else None):
                return False  # another driver took it over first
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            held = Owner.read(self.path)
            if self.owner is None or held is None or held.token != self.owner.token:
                return  # released, or taken over by a driver that found it stale
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def describe(self) -> dict[str, Any]:
        return asdict(self.owner) if self.owner else {}
