"""decord behind a guard: one long-lived helper *process* per Python process, with a per-video timeout.

decord (dmlc/decord) is fast but has known hangs: ``get_batch`` spins forever holding the GIL when ``len()`` is
too high (dmlc/decord issue #373), and a thread cannot be interrupted while it holds the GIL. So decord only runs in
a helper process; on a timeout the helper is killed and the next request starts a fresh one. Used by
:func:`xcore.data.video_decode.read_clip`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from xcore.errors import SampleError

# The decord helper: stdin/stdout carry pickled (path, indices) requests and ("ok", array) / (kind, reason) replies.
# It imports only numpy and decord, so it starts fast; fd 1 is pointed at stderr so library chatter cannot corrupt
# the reply stream.
_DECORD_HELPER = r"""
import os, sys
from multiprocessing.connection import Connection
out = Connection(os.dup(1), readable=False)
os.dup2(2, 1)
inp = Connection(0, writable=False)
try:
    import decord
except Exception as err:
    decord, missing = None, f"decord unavailable: {type(err).__name__}: {err}"
while True:
    try:
        path, indices = inp.recv()
    except EOFError:
        break
    if decord is None:
        out.send(("missing", missing))
        continue
    try:
        vr = decord.VideoReader(path, num_threads=1)
        n = len(vr)
        if indices and max(indices) >= n:
            out.send(("short", n))
            continue
        out.send(("ok", vr.get_batch(list(indices)).asnumpy() if indices else None))
    except Exception as err:
        out.send(("error", f"{type(err).__name__}: {err}"))
"""


def decode_error(path: Path | str, reason: str) -> SampleError:
    """A one-line :class:`SampleError` naming the file."""
    return SampleError("load", f"{Path(path).name}: {' '.join(str(reason).split())}")


class DecordHelper:
    """One long-lived decord process per Python process, used under a lock, killed after a per-read timeout."""

    def __init__(self, script: str = _DECORD_HELPER) -> None:
        self.script = script
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None

    def _start(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", self.script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None and proc.stdout is not None
        self._send = Connection(os.dup(proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(proc.stdout.fileno()), writable=False)
        proc.stdin.close()
        proc.stdout.close()
        self._proc = proc

    def stop(self) -> None:
        """Kill the helper (if running) and forget it; the next request starts a fresh one."""
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = self._send = self._recv = None

    def request(self, path: str, indices: list[int], timeout: float) -> tuple[str, Any]:
        """(kind, payload) for one read; ("timeout", seconds) when decord did not answer in time."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.stop()
                self._start()
            assert self._send is not None and self._recv is not None
            try:
                self._send.send((path, indices))
                if self._recv.poll(timeout):
                    return self._recv.recv()
            except (EOFError, OSError) as err:
                self.stop()
                return "error", f"decord helper died: {type(err).__name__}"
            self.stop()
            return "timeout", timeout


_HELPER = DecordHelper()
atexit.register(_HELPER.stop)


def decord_read(path: Path, indices: list[int], timeout: float | None) -> np.ndarray:
    """Decode ``indices`` (sorted, unique) with decord; in-process when ``timeout`` is None (no hang guard)."""
    if timeout is None:
        try:
            import decord
        except ImportError as err:
            raise decode_error(path, f"decord unavailable: {err}") from None
        try:
            vr = decord.VideoReader(str(path), num_threads=1)
            n = len(vr)
            batch = vr.get_batch(indices).asnumpy() if indices[-1] < n else None
        except (RuntimeError, ValueError, decord.DECORDError) as err:  # decord raises RuntimeError on open
            raise decode_error(path, f"decord cannot read: {err}") from None
        if batch is None:
            raise decode_error(path, f"too short: frame {indices[-1]} requested, video has {n} frames")
        return batch
    kind, payload = _HELPER.request(str(path), indices, timeout)
    if kind == "ok":
        return payload
    if kind == "short":
        raise decode_error(path, f"too short: frame {indices[-1]} requested, video has {payload} frames")
    if kind == "timeout":
        raise decode_error(path, f"decord timed out after {payload:g} s")
    raise decode_error(path, f"decord cannot read: {payload}")
