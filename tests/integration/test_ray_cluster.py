"""``xai run --executor ray`` on real multi-node Ray clusters started on this host (:mod:`ray_nodes`), compared
table by table with the same run in process (``--executor local``).

The runs are ``xai`` subprocesses, as users run them, joined to a cluster by ``RAY_ADDRESS``, over the tiny image
set with one truncated JPEG (one ``errors`` row) in 5 shards of 2. Both sides use one torch thread
(``OMP_NUM_THREADS=1`` in process, ``--cpus-per-actor 1`` on Ray) and the same batches, so every value agrees
exactly. Cheap tests first: connection checks, token auth, two nodes, three nodes, a node lost mid-run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pytest
from ray_nodes import RayCluster, cmdline, connect_in_subprocess, free_port, kill_group, node_env, spawn, start_cluster

from xcore.pipeline.tables import is_timing

pytestmark = [pytest.mark.slow, pytest.mark.engine]
XAI = str(Path(sys.executable).with_name("xai"))
RUN_ARGS = ["-m", "gradient", "-m", "gradcam", "-p", "gradcam.layer=features", "--metric", "deletion_insertion",
            "-p", "deletion_insertion.steps=8", "--shard-size", "2", "--batch-size", "2"]
SHARDS = 5


@pytest.fixture(scope="module")
def data(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny image set with its 4th val image truncated: every run has one ``errors`` row to compare."""
    root = tmp_path_factory.mktemp("cluster-data") / "shapes"
    shutil.copytree(tiny_data, root)
    victim = sorted((root / "val").glob("*.JPEG"))[3]
    victim.write_bytes(victim.read_bytes()[:40])
    return root


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of every ``xai`` run: one Prefect home for the module, one torch thread, no RAY_ADDRESS, auth
    explicitly off (a token file in ~/.ray must not switch it on)."""
    return {**node_env(), "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")), "OMP_NUM_THREADS": "1",
            "COLUMNS": "200"}


def xai_command(data: Path, model: Path, run_dir: Path, *extra: str) -> list[str]:
    """``xai run`` over ``data`` into ``run_dir`` with :data:`RUN_ARGS` and ``extra`` options."""
    return [XAI, "run", "--dataset", str(data), "--model", str(model), *RUN_ARGS, "--out", str(run_dir.parent),
            "--run-id", run_dir.name, *extra]


def xai_run(data: Path, model: Path, run_dir: Path, env: dict[str, str], *extra: str,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run :func:`xai_command` to completion in its own session (the group killed after ``timeout`` s)."""
    cmd = xai_command(data, model, run_dir, *extra)
    proc = spawn(cmd, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def tables(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``explanations``, ``metrics`` and ``errors`` rows of a run, without the timing columns
    (:func:`xcore.pipeline.tables.is_timing`), in a canonical order."""
    out = {}
    for name in ("explanations", "metrics", "errors"):
        rows = pads.dataset(str(run_dir / name), format="parquet", partitioning="hive").to_table().to_pylist()
        rows = [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]
        out[name] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


def assert_same_tables(run_dir: Path, ref_dir: Path) -> None:
    """Same rows with the same values in every table, and no row twice."""
    got, ref = tables(run_dir), tables(ref_dir)
    for name in ref:
        keys = [(r["sample_id"], r.get("method"), r.get("part"), r.get("stage")) for r in got[name]]
        assert len(keys) == len(set(keys)), f"{name}: duplicated rows"
        assert len(got[name]) == len(ref[name]), f"{name}: {len(got[name])} rows, in process {len(ref[name])}"
        for g, r in zip(got[name], ref[name], strict=True):
            assert g == r, f"{name} row {r['sample_id']} differs"


def assert_ok(proc: subprocess.CompletedProcess[str], run_dir: Path) -> dict[str, Any]:
    """Exit 0 and every shard complete; the run's ``run.json``."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["summary"]["shards_complete"] == SHARDS and info["summary"]["shards_failed"] == []
    return info


def assert_executor(info: dict[str, Any], cluster: RayCluster, requested: int, per_actor: dict[str, float]
                    ) -> dict[str, Any]:
    """The executor record: the request as laid out, actors on the cluster's nodes, every shard counted once."""
    ex = info["executor"]
    assert ex["kind"] == "ray" and ex["address"] == cluster.address
    assert ex["actors_requested"] == requested and ex["per_actor"] == per_actor
    node_ids = {n["node_id"] for n in cluster.query() or []}  # dead nodes included
    assert {a["node_id"] for a in ex["actors"]} <= node_ids and set(ex["nodes"]) <= node_ids
    assert sum(ex["nodes"].values()) == sum(a["shards"] for a in ex["actors"]) == SHARDS
    return ex


@pytest.fixture(scope="module")
def local_run(data: Path, tiny_model: Path, base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
              ) -> Path:
    """The reference: the same run in process."""
    run_dir = tmp_path_factory.mktemp("local") / "local"
    info = assert_ok(xai_run(data, tiny_model, run_dir, base_env, "--executor", "local"), run_dir)
    assert info["executor"]["kind"] == "local"
    got = tables(run_dir)
    assert len(got["errors"]) == 1 and len(got["metrics"]) == 20 and len(got["explanations"]) == 18
    return run_dir


def test_connect_fails_in_one_line_without_a_cluster(base_env):
    """No cluster needed: a port nothing listens on, addresses that are not one; each a UsageError naming the
    cause, found before ``ray.init`` (whose retries take 20 s, 40 s for a host that does not answer)."""
    port = free_port()
    cases = {
        f"127.0.0.1:{port}": ["no Ray cluster answers", f"RAY_ADDRESS=127.0.0.1:{port}", "Connection refused"],
        "not-an-address": ["is not a Ray address"],
        f"127.0.0.1:{port}x": ["is not a Ray address"],
    }
    for address, needles in cases.items():
        line, inits = connect_in_subprocess(address, base_env)
        assert line.startswith("USAGE ") and all(n in line for n in needles) and inits == 0, (address, line)


@pytest.fixture
def token_cluster() -> Iterator[RayCluster]:
    """A 1-CPU head with token auth (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN)."""
    cluster = start_cluster([1], token=secrets.token_hex(32))
    yield cluster
    cluster.stop()


def test_token_auth_mismatch_is_one_line_and_exit_2(token_cluster, data, tiny_model, base_env, tmp_path):
    """A driver without the cluster's token, or with another, stops at once with one line naming the mismatch and
    what to set; with the token it connects; a node without the token cannot join."""
    address, t0 = token_cluster.address, time.monotonic()
    proc = xai_run(data, tiny_model, tmp_path / "runs" / "noauth", {**base_env, "RAY_ADDRESS": address})
    seconds = time.monotonic() - t0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert len(errors) == 1 and "auth mismatch" in errors[0] and "RAY_AUTH_MODE=token" in errors[0], proc.stderr
    assert "Failed to connect" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert seconds < 120, seconds  # a deadline only
    line, inits = connect_in_subprocess(address, node_env("0" * 64))
    assert line.startswith("USAGE Ray auth token mismatch") and "RAY_AUTH_TOKEN" in line and inits == 0, line
    home = tempfile.mkdtemp(prefix="xh")  # token mode, no token anywhere: Ray's C++ token loader would abort
    try:
        line, inits = connect_in_subprocess(address, {**node_env(), "RAY_AUTH_MODE": "token", "HOME": home})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert line.startswith("USAGE RAY_AUTH_MODE=token but no Ray auth token") and inits == 0, line
    assert connect_in_subprocess(address, token_cluster.env) == ("CONNECTED 1.0", 1)
    # a worker node without the token: `ray start` exits non-zero naming the invalid token (2 GCS attempts)
    node = token_cluster.add_node(1, env={**node_env(), "RAY_gcs_server_port_wait_time_s": "2"})
    assert node.proc.wait(120) != 0
    assert "InvalidAuthToken: Authentication token is missing or incorrect" in node.tail(20000), node.tail()
    assert len([n for n in token_cluster.query() or [] if n["alive"]]) == 1


@pytest.fixture(scope="class")
def two_nodes() -> Iterator[RayCluster]:
    """Head with 1 CPU, a second node with 1 CPU and one declared GPU (there is none)."""
    cluster = start_cluster([1, 1], [0, 1])
    yield cluster
    cluster.stop()


class TestTwoNodes:
    """The tests sharing :func:`two_nodes` (stopped after them)."""

    def test_two_nodes_cpu_actors(self, two_nodes, data, tiny_model, base_env, local_run, tmp_path):
        """--gpus-per-actor 0 --actors 2 on 1 CPU + 1 CPU: one actor per node (only one fits on each), every shard
        counted once on the cluster's nodes, tables equal to the run in process."""
        run_dir = tmp_path / "runs" / "two"
        env = {**base_env, "RAY_ADDRESS": two_nodes.address}
        info = assert_ok(xai_run(data, tiny_model, run_dir, env, "--executor", "ray", "--gpus-per-actor", "0",
                                 "--actors", "2", "--min-actors", "2"), run_dir)
        ex = assert_executor(info, two_nodes, 2, {"num_cpus": 1.0, "num_gpus": 0.0})
        assert all(a["device"] == "cpu" and a["gpu_ids"] == [] and a["warning"] is None for a in ex["actors"])
        assert len({a["node_id"] for a in ex["actors"]}) == len(ex["actors"])  # never two on one 1-CPU node
        # both actors were up before the first shard (--min-actors 2), so the shards ran on both nodes
        alive = {n["node_id"] for n in two_nodes.query() or [] if n["alive"]}
        assert set(ex["nodes"]) == alive and len(alive) == 2 and all(v >= 1 for v in ex["nodes"].values())
        assert_same_tables(run_dir, local_run)

    def test_declared_gpu_that_torch_cannot_use(self, two_nodes, data, tiny_model, base_env, local_run, tmp_path):
        """Defaults on a cluster that reports a GPU: one GPU actor, placed on the node that declares it; torch sees no
        CUDA there, so it runs on the CPU and says so, in run.json and in the command's output."""
        run_dir = tmp_path / "runs" / "gpu"
        proc = xai_run(data, tiny_model, run_dir, {**base_env, "RAY_ADDRESS": two_nodes.address}, "--executor", "ray")
        info = assert_ok(proc, run_dir)
        ex = assert_executor(info, two_nodes, 1, {"num_cpus": 1.0, "num_gpus": 1.0})
        gpu_node = [n["node_id"] for n in two_nodes.query() or [] if n["alive"] and n["resources"].get("GPU")]
        assert [a["node_id"] for a in ex["actors"]] == gpu_node and ex["nodes"] == {gpu_node[0]: SHARDS}
        actor = ex["actors"][0]
        assert actor["device"] == "cpu" and actor["gpu_ids"] == ["0"]
        assert actor["warning"] and "GPU" in actor["warning"] and "CPU" in actor["warning"]
        said = " ".join((proc.stdout + proc.stderr).split())
        assert " ".join(actor["warning"].split(";")[0].split()) in said  # logged too, not only recorded
        assert_same_tables(run_dir, local_run)

    def test_local_mode_beside_a_running_cluster(self, two_nodes, data, tiny_model, base_env, local_run):
        """RAY_ADDRESS unset, a head running on this host and Ray's current-cluster file naming it: the run starts its
        own instance (never joins that head, never fails with "num_cpus and num_gpus must not be provided")."""
        ray_tmp = Path(tempfile.mkdtemp(prefix="xt"))  # short: Ray's socket paths live under it
        try:
            (ray_tmp / "ray").mkdir()
            current = (two_nodes.nodes[0].temp_dir / "ray_current_cluster").read_text()
            (ray_tmp / "ray" / "ray_current_cluster").write_text(current)
            run_dir = ray_tmp / "runs" / "local-ray"
            proc = xai_run(data, tiny_model, run_dir, {**base_env, "RAY_TMPDIR": str(ray_tmp)}, "--executor", "ray")
            assert "must not be provided" not in proc.stderr
            info = assert_ok(proc, run_dir)
            assert info["executor"]["kind"] == "ray" and info["executor"]["address"] == "local"
            cluster_nodes = {n["node_id"] for n in two_nodes.query() or []}
            assert not {a["node_id"] for a in info["executor"]["actors"]} & cluster_nodes
            assert_same_tables(run_dir, local_run)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)


def test_heterogeneous_nodes_default_layout(data, tiny_model, base_env, local_run, tmp_path):
    """Nodes of 1, 1 and 2 CPUs: the default layout asks for one CPU per actor and as many actors as CPUs, so every
    actor fits somewhere (the old layout asked for cluster CPUs - 1 per actor, which no node had, and hung)."""
    cluster = start_cluster([1, 1, 2])
    try:
        run_dir = tmp_path / "runs" / "hetero"
        proc = xai_run(data, tiny_model, run_dir, {**base_env, "RAY_ADDRESS": cluster.address}, "--executor", "ray",
                       "--min-actors", "4", timeout=240)
        info = assert_ok(proc, run_dir)
        ex = assert_executor(info, cluster, 4, {"num_cpus": 1.0, "num_gpus": 0.0})
        assert all(a["threads"] == 1 for a in ex["actors"])
        # the four actors (one per CPU) were up before the first shard: every node ran shards
        alive = {n["node_id"] for n in cluster.query() or [] if n["alive"]}
        assert len(ex["actors"]) == 4 and set(ex["nodes"]) == alive and len(alive) == 3
        assert all(v >= 1 for v in ex["nodes"].values())
        assert_same_tables(run_dir, local_run)
    finally:
        cluster.stop()


def shard_actor(cluster: RayCluster) -> tuple[int, int] | None:
    """``(worker node index, actor pid)`` of the ``ray::ShardActor`` process among the worker nodes, if any."""
    for i, node in enumerate(cluster.nodes[1:], 1):
        for pid in node.processes():
            if cmdline(pid).startswith("ray::ShardActor"):
                return i, pid
    return None


def test_lost_node_costs_only_its_inflight_shards(data, tiny_model, base_env, local_run, tmp_path):
    """A 0-CPU head (the driver's node) and two 1-CPU nodes, one actor. Once two shards are committed the actor
    is frozen (SIGSTOP: its shards stay in flight), its node's raylet SIGKILLed, then the actor (the node is lost).
    The run still exits 0, the lost shards ran on the other node, the tables equal the run in process."""
    cluster = start_cluster([0, 1, 1])
    run_dir, log = tmp_path / "runs" / "lost", tmp_path / "xai.log"
    with log.open("w") as fh:
        proc = spawn(xai_command(data, tiny_model, run_dir, "--executor", "ray", "--actors", "1"),
                     {**base_env, "RAY_ADDRESS": cluster.address}, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline, found, done = time.monotonic() + 240, None, 0
        while done < 2 and proc.poll() is None and time.monotonic() < deadline:
            found = found or shard_actor(cluster)  # known before the commits are watched: no delay after them
            done = len(list((run_dir / "_shards").glob("shard-*.json"))) if found else 0
            time.sleep(0.01)
        assert found and done >= 2 and proc.poll() is None, log.read_text()[-3000:]
        index, actor_pid = found
        os.kill(actor_pid, signal.SIGSTOP)
        done = len(list((run_dir / "_shards").glob("shard-*.json")))
        os.kill(cluster.nodes[index].raylet_pid(), signal.SIGKILL)
        os.kill(actor_pid, signal.SIGKILL)
        proc.wait(max(1.0, deadline - time.monotonic()))
        assert done < SHARDS  # the freeze left shards in flight on the lost node
        info = assert_ok(subprocess.CompletedProcess([], proc.returncode, log.read_text(), ""), run_dir)
        ex = assert_executor(info, cluster, 1, {"num_cpus": 1.0, "num_gpus": 0.0})
        lost = [a for a in ex["actors"] if a["pid"] == actor_pid]
        others = [a for a in ex["actors"] if a["pid"] != actor_pid]
        assert len(lost) == 1 and sum(a["shards"] for a in others) >= SHARDS - done
        assert lost[0]["node_id"] not in {a["node_id"] for a in others}
        assert_same_tables(run_dir, local_run)
    finally:
        kill_group(proc)
        cluster.stop()
