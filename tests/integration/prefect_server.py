"""A real Prefect server (``prefect server start``) and process workers for the deployment tests.

Every process is a subprocess of the test in its own session (``start_new_session=True``), with the
environment of :meth:`PrefectServer.env`: its own ``PREFECT_HOME`` (so its own SQLite database), the API URL,
telemetry off and the scheduler's loop shortened. Stopping terminates the process group the test started
(SIGTERM, then SIGKILL) and any descendant that left it; nothing else is touched. The test process talks to
the server over plain HTTP (``urllib``), so it never imports Prefect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_nodes import descendants, free_port, kill_survivors

from flows.prefect_env import TELEMETRY_OFF

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
SETTINGS = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # default 60: the main scheduling pass
    "PREFECT_WORKER_QUERY_SECONDS": "2",                    # default 10: how often a worker polls
    "PREFECT_UI_ENABLED": "false",                          # nothing reads the UI; skips building it
    "PREFECT_LOGGING_LEVEL": "INFO",
    "COLUMNS": "250",                                       # CLI tables untruncated
}


@dataclass
class Proc:
    """One process the test started (in its own session), with its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    known: set[int] = field(default_factory=set)

    def tail(self, n: int = 3000) -> str:
        """The end of the log, for assertion messages."""
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s, then any descendant that left the group."""
        if self.proc.poll() is None:
            self.known.update(descendants(self.proc.pid))
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        kill_survivors(self.known)


@dataclass
class PrefectServer:
    """``prefect server start`` on 127.0.0.1 with its own home; :meth:`cli` and :meth:`api` talk to it."""

    root: Path
    port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    startup_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every Prefect process of the test (no inherited PREFECT_* or RAY_ADDRESS)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RAY_ADDRESS"}
        env.update(TELEMETRY_OFF)
        env.update(SETTINGS, PREFECT_HOME=str(self.root / "home"), PREFECT_API_URL=self.url,
                   RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_AUTO_CONNECT="0")
        env.update(extra)
        return env

    def spawn(self, name: str, args: list[str], **extra: str) -> Proc:
        """Start ``args`` in its own session, output to ``<root>/<name>.log``."""
        log = self.root / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env(**extra), start_new_session=True)
        self.procs.append(Proc(proc, log))
        return self.procs[-1]

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait for ``/api/health`` (AssertionError with the log tail if it never answers)."""
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        server = self.spawn("server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)])
        while time.monotonic() - t0 < timeout and server.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        self.startup_s = time.monotonic() - t0
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise AssertionError(f"Prefect server not healthy after {timeout:.0f} s (exit code {server.proc.poll()}); "
                             f"log tail:\n{server.tail()}")

    def stop(self) -> None:
        """Stop every process this server object started, newest first."""
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        """The tails of every log (server, workers), for assertion messages."""
        return "\n".join(f"--- {p.log.name} ---\n{p.tail()}" for p in self.procs)

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 120.0,
            **extra: str) -> subprocess.CompletedProcess[str]:
        """Run ``prefect ARGS`` against this server; the result carries stdout + stderr as ``stdout``."""
        return subprocess.run([PREFECT, *args], cwd=cwd, env=self.env(**extra), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET ``path`` (or POST ``body`` as JSON) on the REST API; the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def deployment(self, flow: str, name: str) -> dict[str, Any]:
        """The deployment ``flow/name`` as the server stores it."""
        return self.api(f"/deployments/name/{flow}/{name}")

    def flow_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every flow run of a deployment."""
        return self.api("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})

    def wait_run(self, deployment_id: str, timeout: float, **match: Any) -> dict[str, Any]:
        """The first flow run of the deployment whose fields equal ``match`` once it is in a final state
        (AssertionError with the runs seen and the log tails after ``timeout`` s)."""
        deadline, runs = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            runs = [r for r in self.flow_runs(deployment_id) if all(r.get(k) == v for k, v in match.items())]
            final = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            if final:
                return final[0]
            time.sleep(1)
        seen = [(r["name"], r["state_type"], r["auto_scheduled"], r["expected_start_time"]) for r in runs]
        raise AssertionError(f"no finished flow run matching {match} within {timeout:.0f} s; runs: {seen}\n"
                             f"{self.logs()}")
