"""A clean stop of ``xai run`` / ``job`` / ``demo`` on SIGTERM or SIGINT (issue 12, finding 6).

:func:`interrupts` turns both signals into :class:`Interrupted` in the main thread: a ``BaseException`` that is not
an ``Exception``, so Prefect marks the flow run Crashed and retries no task, and not a ``KeyboardInterrupt``, which
Ray's waits swallow and replace by a plain one (a stray ``KeyboardInterrupt`` still counts as SIGINT). Inside a flow
run Prefect's own SIGTERM bridge raises first; once the run is reported crashed, Prefect sends the signal again to
the handler it found, this one. What unwinds, in this order: the dispatch task closes the actor pool (its actors
are killed), ``own_run`` in ``run_pipeline`` shuts the local Ray instance down, :func:`stop_after_interrupt` stops
any other process this driver recorded that still runs, the run directory's lock is released, the command exits
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), and on that exit Prefect stops its temporary server. Ray's wait
returns to Python at least once a second (:meth:`tasks.actor_pool.RayExecutor.wait`), so the handler runs while
shards are in flight.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from tasks.processes import PREFECT_SERVER, Book, Log, stop, stop_ray

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the driver."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise :class:`Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_after_interrupt(book: Book, log: Log) -> None:
    """Stop what this driver started (module docstring); further signals are ignored meanwhile.

    Ray goes first (its actors, then the local instance); then any other recorded process that still runs. The
    temporary Prefect server is left to Prefect's own exit hook, which stops it once Prefect's log and event
    workers have drained into it (stopped earlier, they retry against a dead server and the exit hangs)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    stop_ray()
    stop([e for e in book.started() if e.get("role") != PREFECT_SERVER], log, "started by this driver")
