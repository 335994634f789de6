"""Pause an ``xai`` run at a known point without timing: a ``sitecustomize`` on the run's ``PYTHONPATH`` (the driver,
and with Ray every actor, inherit it) wraps ``RunLayout.write_shard`` so that the write of shard
``$XCORE_TEST_PAUSE_SHARD`` first writes ``$XCORE_TEST_PAUSE_DIR/paused`` (holding its pid) and then waits until
``$XCORE_TEST_PAUSE_DIR/resume`` exists. Nothing of that shard is written before it resumes; the shards before it
are committed. Used by test_ownership (a first driver holds the directory while others try it) and test_shutdown
(a driver is signalled mid-run).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PAUSE = '''"""Test pause of tests/integration/pause_gate.py."""
import os
import time
from pathlib import Path

SHARD = os.environ.get("XCORE_TEST_PAUSE_SHARD")


def _patch(module):
    real = module.RunLayout.write_shard

    def write_shard(self, shard, *args, **kwargs):
        if shard.shard_id == int(SHARD):
            folder = Path(os.environ["XCORE_TEST_PAUSE_DIR"])
            (folder / ".paused").write_text(str(os.getpid()))
            os.replace(folder / ".paused", folder / "paused")
            while not (folder / "resume").exists():
                time.sleep(0.1)
        return real(self, shard, *args, **kwargs)

    module.RunLayout.write_shard = write_shard


'''


# The shared tail of every test sitecustomize: a finder that runs the head's ``_patch(module)`` on
# ``xcore.io.runs`` as it is imported, when the head's ``SHARD`` is set.
FINDER = '''
import importlib.abc
import sys


class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "xcore.io.runs":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = patched
        return spec


if SHARD is not None:
    sys.meta_path.insert(0, _Patch())
'''


def sitecustomize(head: str) -> str:
    """A ``sitecustomize`` source: ``head`` (defines ``SHARD`` and ``_patch(module)``) and :data:`FINDER`."""
    return head + FINDER


SITECUSTOMIZE = sitecustomize(PAUSE)


def pause_env(folder: Path, shard: int) -> dict[str, str]:
    """Environment entries that pause a run at the write of ``shard`` (``folder`` gets the ``sitecustomize``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "XCORE_TEST_PAUSE_SHARD": str(shard), "XCORE_TEST_PAUSE_DIR": str(folder)}


def wait_paused(folder: Path, proc: object, log: Path, deadline_s: float = 180.0) -> int:
    """Wait (a deadline, not a sleep) until the run paused; the pid of the paused process."""
    deadline = time.monotonic() + deadline_s
    while not (folder / "paused").exists():
        code = proc.poll()  # type: ignore[attr-defined]
        assert code is None, f"the run exited {code} before its pause:\n{log.read_text(errors='replace')[-4000:]}"
        assert time.monotonic() < deadline, f"the run never paused:\n{log.read_text(errors='replace')[-4000:]}"
        time.sleep(0.2)
    return int((folder / "paused").read_text())


def resume(folder: Path) -> None:
    (folder / "resume").write_text("")


XAI = str(Path(sys.executable).parent / "xai")
