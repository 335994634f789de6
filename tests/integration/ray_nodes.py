"""Real Ray nodes on this host for the cluster tests: a head and worker nodes started with ``ray start --block``.

Every node is a ``ray start --block`` subprocess in its own session (``start_new_session=True``) with its own
short temp dir (``--temp-dir``: its session files and its ``ray_current_cluster`` stay there, ``/tmp/ray`` is not
touched) and explicit free ports for every service that would otherwise take a fixed default (GCS, object
manager, dashboard agent, runtime-env agent, metrics, Ray client), so clusters of concurrent tests on one host
never collide. ``--node-ip-address 127.0.0.1`` is passed, but Ray replaces a loopback address by the host's
routable one (``services.resolve_ip_for_localhost``); ``RAY_ADDRESS=127.0.0.1:<port>`` still works (Ray resolves
it the same way). Stopping a node terminates the process group of what the test started (SIGTERM, then SIGKILL) and
then any of its descendants that left the group; ``ray stop`` is never used, no other process is touched.

Token auth is never left to chance: Ray 2.60 turns it on for ``ray start --head`` whenever ``~/.ray/auth_token``
exists, so every node gets ``RAY_AUTH_MODE`` explicitly (``disabled`` unless the cluster is made with a token).
Node state is read by a short-lived subprocess (:meth:`RayCluster.query`), so the test process never imports or
initialises Ray (other tests' in-process Ray session is left alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE = 80 * 1024**2
NODES_SCRIPT = """
import json, sys, time
from ray._private.state import GlobalState
from ray._raylet import GcsClientOptions
address, want, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
state = GlobalState()
state._initialize_global_state(GcsClientOptions.create(address, None, allow_cluster_id_nil=True,
                                                       fetch_cluster_id_if_nil=False))
while True:
    try:
        nodes = [{"node_id": n["NodeID"], "alive": n["Alive"], "resources": n.get("Resources", {}),
                  "head": bool(n.get("Resources", {}).get("node:__internal_head__"))} for n in state.node_table()]
    except Exception as err:  # GCS not up yet
        nodes = None
    alive = [n for n in nodes or [] if n["alive"]]
    if want < 0 or len(alive) == want or time.monotonic() > deadline:
        print(json.dumps(nodes))
        break
    time.sleep(0.5)
"""
CONNECT_SCRIPT = """
import sys, ray
from tasks.ray_connect import connect
from xcore.errors import UsageError
inits, init = [], ray.init
ray.init = lambda *a, **k: inits.append(1) or init(*a, **k)  # counts entries into Ray's own (slow) retries
try:
    connect(sys.argv[1])
    print("CONNECTED", ray.cluster_resources().get("CPU"))
except UsageError as err:
    print("USAGE", err)
print(len(inits))
"""


def connect_in_subprocess(address: str, env: dict[str, str]) -> tuple[str, int]:
    """``tasks.ray_connect.connect(address)`` in a fresh process: its one-line outcome and its ``ray.init`` calls."""
    proc = subprocess.run([sys.executable, "-c", CONNECT_SCRIPT, address], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return lines[-2], int(lines[-1])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, parents before children (one pass over ``/proc``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' when it is gone)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return False


def kill_survivors(pids: set[int]) -> None:
    """SIGKILL each of ``pids`` (processes the test started or their descendants) that is still alive."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def spawn(cmd: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    """``cmd`` in its own session (text mode), so :func:`kill_group` also ends what it started."""
    return subprocess.Popen(cmd, env=env, text=True, start_new_session=True, **kwargs)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL what is left of the process group of ``proc`` (a process the test started) and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class RayNode:
    """One ``ray start --block`` process the test started, its temp dir and its log."""

    proc: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path
    known: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[int]:
        """The ``ray start`` process's live descendants (remembered, so stop() finds any that left the group)."""
        pids = descendants(self.pid)
        self.known.update(pids)
        return pids

    def raylet_pid(self) -> int:
        """The pid of this node's raylet: the child of the ``ray start`` process running ``.../raylet``."""
        for pid in self.processes():
            if cmdline(pid).split(" ")[0].endswith("/raylet"):
                return pid
        raise LookupError(f"no raylet among the children of {self.pid}: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        """The end of this node's ``ray start`` output (for assertion messages)."""
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the node's process group (remembering its processes first)."""
        if self.proc.poll() is None:
            self.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the node's process group, SIGKILL it after ``timeout`` s, then any straggling descendant."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.known) and time.monotonic() < deadline:
            time.sleep(0.2)
        kill_survivors(self.known)


@dataclass
class RayCluster:
    """A head node on 127.0.0.1 and the worker nodes added to it; ``env`` is what drivers must run with."""

    root: Path
    token: str | None = None
    nodes: list[RayNode] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that should reach this cluster (auth settings included)."""
        return node_env(self.token)

    def start_head(self, num_cpus: int, num_gpus: int = 0, extra_env: dict[str, str] | None = None) -> RayNode:
        self.port = free_port()
        head = ["--head", "--port", str(self.port), "--ray-client-server-port", str(free_port()),
                "--include-dashboard", "false", "--dashboard-port", str(free_port())]
        return self._start(head, num_cpus, num_gpus, extra_env)

    def add_node(self, num_cpus: int, num_gpus: int = 0, env: dict[str, str] | None = None) -> RayNode:
        """A worker node; ``env`` replaces the cluster's environment (e.g. to join without the token)."""
        return self._start(["--address", self.address, "--include-log-monitor", "false"], num_cpus, num_gpus,
                           None, env)

    def _start(self, args: list[str], num_cpus: int, num_gpus: int, extra_env: dict[str, str] | None,
               env: dict[str, str] | None = None) -> RayNode:
        tmp = Path(tempfile.mkdtemp(prefix="n", dir=self.root))
        cmd = [RAY, "start", "--block", *args, "--node-ip-address", "127.0.0.1", "--temp-dir", str(tmp),
               "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus), "--disable-usage-stats",
               "--object-store-memory", str(OBJECT_STORE), "--object-manager-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
               "--min-worker-port", "0", "--max-worker-port", "0"]
        log = tmp / "ray-start.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**(env or self.env), **(extra_env or {})}, start_new_session=True)
        node = RayNode(proc, tmp, log)
        self.nodes.append(node)
        return node

    def query(self, want: int = -1, timeout: float = 0.0) -> list[dict[str, Any]] | None:
        """The GCS node table (``None`` when the GCS does not answer); waits up to ``timeout`` s for ``want``
        alive nodes."""
        proc = subprocess.run([sys.executable, "-c", NODES_SCRIPT, self.address, str(want), str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 60, env=self.env)
        lines = proc.stdout.strip().splitlines()
        return json.loads(lines[-1]) if proc.returncode == 0 and lines else None

    def wait_alive(self, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Wait until the cluster has ``count`` alive nodes; return them (AssertionError with the logs if not)."""
        nodes = self.query(count, timeout) or []
        up = [n for n in nodes if n["alive"]]
        dead = [n for n in self.nodes if n.proc.poll() is not None]
        assert len(up) == count and not dead, (
            f"{len(up)} of {count} Ray nodes alive; exited: {[n.pid for n in dead]}\n"
            + "\n".join(n.tail() for n in self.nodes))
        return up

    def stop(self) -> None:
        """Stop every node (all signalled at once, then waited for) and remove the temp dirs."""
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def node_env(token: str | None = None) -> dict[str, str]:
    """The environment for Ray processes of a test: usage stats off, no auto-connect, auth explicit
    (``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN`` when ``token`` is given, else ``disabled``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_AUTO_CONNECT="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               RAY_AUTH_MODE="token" if token else "disabled")
    if token:
        env["RAY_AUTH_TOKEN"] = token
    return env


def start_cluster(cpus: list[int], gpus: list[int] | None = None, token: str | None = None,
                  head_env: dict[str, str] | None = None, timeout: float = 120.0) -> RayCluster:
    """A head with ``cpus[0]`` CPUs and one worker node per further entry (``gpus`` declared per node), all
    alive; stopped again if they do not come up."""
    gpus = gpus or [0] * len(cpus)
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="xr", dir="/tmp")), token)
    try:
        cluster.start_head(cpus[0], gpus[0], head_env)
        cluster.wait_alive(1, timeout)
        for c, g in zip(cpus[1:], gpus[1:], strict=True):
            cluster.add_node(c, g)
        cluster.wait_alive(len(cpus), timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
