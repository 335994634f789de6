"""infra/prefect/prefect.yaml against a real Prefect server: deploy, list, the scheduler, a process worker.

One ``prefect server start`` for the module (own PREFECT_HOME and SQLite database, telemetry off, scheduler loop
2 s), the work pool ``xcore-process`` created with the CLI as the file's header says. The shipped file is
deployed as is; a copy (one deployment, the tiny data and model, executor ray on a 1-CPU Ray head the test
starts, its own work queue) is run by a ``prefect worker start`` process: once through a schedule the server's
scheduler turns into a flow run, once by ``prefect deployment run``. The worker runs the flows from this
checkout through the shipped pull steps (``XCORE_APP_DIR`` in the worker's environment). The temporary server of
laptop mode is tested elsewhere (``prefect_harness`` in tests/integration/test_runtime.py).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect_server import PREFECT, PrefectServer
from ray_nodes import RayCluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.engine]

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "infra" / "prefect" / "prefect.yaml"
FLOW, POOL, QUEUE, NAME = "explain-dataset", "xcore-process", "xcore-test", "xcore-test"
XAI = str(Path(sys.executable).with_name("xai"))
TIMES: dict[str, float] = {}


def ok(res: subprocess.CompletedProcess[str], server: PrefectServer) -> str:
    """The output of a CLI call that must exit 0 (else an AssertionError with its output and the logs)."""
    assert res.returncode == 0, f"{res.args} exited {res.returncode}:\n{res.stdout[-4000:]}\n{server.logs()}"
    return res.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The module's server, with the work pool the deployments name."""
    srv = PrefectServer(tmp_path_factory.mktemp("prefect"))
    try:
        srv.start()
        TIMES["server_startup_s"] = srv.startup_s
        ok(srv.cli("work-pool", "create", POOL, "--type", "process"), srv)
        yield srv
    finally:
        srv.stop()
        print(f"\nprefect server test times: {TIMES}")


@pytest.fixture(scope="module")
def shipped(server: PrefectServer) -> dict[str, Any]:
    """``prefect deploy --all`` of the shipped file from the repository root; the file's bytes before and after."""
    before = SHIPPED.read_bytes()
    res = server.cli("deploy", "--all", "--prefect-file", str(SHIPPED), cwd=REPO, timeout=240)
    return {"result": res, "before": before, "after": SHIPPED.read_bytes(), "spec": yaml.safe_load(before)}


FLOWS = {"explain-nightly": FLOW, "explain-weekly-baselines": FLOW, "road-daily": "roar", "filters-weekly": "filters"}
ENTRYPOINTS = {FLOW: "flows/explain.py:explain_dataset", "roar": "flows/roar.py:roar_dataset",
               "filters": "flows/filters.py:filter_statistics"}


def test_shipped_file_deploys_every_deployment_with_its_environment(server: PrefectServer,
                                                                    shipped: dict[str, Any]) -> None:
    ok(shipped["result"], server)
    assert shipped["after"] == shipped["before"], "prefect deploy rewrote infra/prefect/prefect.yaml"
    wanted = {d["name"]: d for d in shipped["spec"]["deployments"]}
    assert set(wanted) == set(FLOWS)
    for name, spec in wanted.items():
        flow = FLOWS[name]
        dep = json.loads(ok(server.cli("deployment", "inspect", f"{flow}/{name}", "--output", "json"), server))
        assert dep["entrypoint"] == ENTRYPOINTS[flow]
        assert dep["work_pool_name"] == POOL
        assert dep["job_variables"] == {"env": {"RAY_ADDRESS": "auto", "RAY_USAGE_STATS_ENABLED": "0"}}, name
        assert dep["parameters"] == spec["parameters"]
        assert dep["parameters"]["config"]["dataset"] == "/data/imagenet"
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == [spec["schedules"][0]["cron"]]
        assert dep["pull_steps"] == shipped["spec"]["pull"]


def test_scheduler_plans_the_shipped_cron_schedules(server: PrefectServer, shipped: dict[str, Any]) -> None:
    ok(shipped["result"], server)
    wanted = {"explain-nightly": (None, 2), "explain-weekly-baselines": (6, 4),
              "road-daily": (None, 5), "filters-weekly": (6, 3)}  # (weekday or any, hour), Berlin
    berlin = ZoneInfo("Europe/Berlin")
    deadline = time.monotonic() + 60
    for name, (weekday, hour) in wanted.items():
        dep = server.deployment(FLOWS[name], name)
        while not (runs := [r for r in server.flow_runs(dep["id"]) if r["auto_scheduled"]]):
            assert time.monotonic() < deadline, f"the scheduler made no run of {name} in 60 s\n{server.logs()}"
            time.sleep(1)
        for run in runs:
            at = datetime.fromisoformat(run["expected_start_time"]).astimezone(berlin)
            wall = at.replace(hour=hour, minute=0, second=0, microsecond=0)  # 02:00 is 03:00 on a spring-forward day
            assert at == wall.astimezone(UTC).astimezone(berlin) and weekday in (None, at.weekday()), (name, at)
            assert run["state_type"] == "SCHEDULED"


def test_list_commands_exit_0(server: PrefectServer, shipped: dict[str, Any]) -> None:
    ok(shipped["result"], server)
    listed = ok(server.cli("deployment", "ls"), server)
    assert all(f"{FLOWS[name]}/{name}" in listed for name in FLOWS), listed
    runs = server.flow_runs(server.deployment(FLOW, "explain-nightly")["id"])
    listed = ok(server.cli("flow-run", "ls"), server)
    assert any(r["name"] in listed for r in runs), listed


@pytest.fixture(scope="module")
def ray_head() -> Any:
    """A 1-CPU Ray head on 127.0.0.1 that the test deployment's job variables point the flow runs at."""
    cluster: RayCluster = start_cluster([1])
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def deployed(server: PrefectServer, shipped: dict[str, Any], ray_head: RayCluster, tiny_data: Path,
             tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shipped nightly deployment, copied with the tiny data, its own queue and RAY_ADDRESS; deployed, and a
    worker polling its queue (the flow runs find this checkout through the shipped pull steps)."""
    tmp = tmp_path_factory.mktemp("deployment")
    spec = copy.deepcopy(shipped["spec"])
    dep = spec["deployments"][0]
    env = {**dep["work_pool"]["job_variables"]["env"], "RAY_ADDRESS": ray_head.address}
    dep.update(name=NAME, schedules=[], work_pool={**dep["work_pool"], "work_queue_name": QUEUE,
                                                     "job_variables": {"env": env}})
    dep["parameters"]["config"] = {
        "dataset": str(tiny_data), "model": str(tiny_model), "out": str(tmp / "runs"),
        "methods": {"gradient": {}, "random": {}}, "metrics": {"deletion_insertion": {"steps": 8}},
        "shard_size": 4, "batch_size": 3}
    spec["deployments"] = [dep]
    (tmp / "prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.monotonic()
    ok(server.cli("deploy", "--all", "--prefect-file", str(tmp / "prefect.yaml"), cwd=REPO, timeout=240), server)
    ray_env = {k: v for k, v in ray_head.env.items() if k.startswith("RAY_")}  # auth mode etc., never the address
    assert "RAY_ADDRESS" not in server.env(**ray_env)  # so only the job variables can point a flow run at the head
    worker = server.spawn("worker", [PREFECT, "worker", "start", "--pool", POOL, "--work-queue", QUEUE],
                          XCORE_APP_DIR=str(REPO), **ray_env)
    yield {"id": server.deployment(FLOW, NAME)["id"], "config": dep["parameters"]["config"], "t0": t0,
           "address": ray_head.address}
    worker.stop()


@pytest.fixture(scope="module")
def scheduled_run(server: PrefectServer, deployed: dict[str, Any]) -> dict[str, Any]:
    """A one-shot schedule (interval 1 h, anchored 20 s ahead: the next run is an hour later) on the test
    deployment; the flow run the server's scheduler makes of it, once final."""
    anchor = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    ok(server.cli("deployment", "schedule", "create", f"{FLOW}/{NAME}", "--interval", "3600",
                  "--anchor-date", anchor.isoformat()), server)
    run = server.wait_run(deployed["id"], 300, auto_scheduled=True)
    TIMES["deploy_to_scheduled_run_final_s"] = time.monotonic() - deployed["t0"]
    return {"run": run, "anchor": anchor, "dir": run_dir(deployed["config"]["out"])}


def run_dir(out: Path | str, run_id: str | None = None) -> Path:
    """The one run directory under ``out`` (or ``out/run_id``) that holds a run.json."""
    found = [p.parent for p in Path(out).glob("*/run.json") if run_id in (None, p.parent.name)]
    assert len(found) == 1, f"run.json files under {out}: {found}"
    return found[0]


def test_scheduler_creates_a_run_the_worker_completes(server: PrefectServer, deployed: dict[str, Any],
                                                      scheduled_run: dict[str, Any]) -> None:
    run = scheduled_run["run"]
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{server.logs()}"
    assert datetime.fromisoformat(run["expected_start_time"]) == scheduled_run["anchor"]
    run_path = scheduled_run["dir"]
    assert sorted(p.name for p in (run_path / "metrics").iterdir()) == ["method=gradient", "method=random"]
    assert list((run_path / "metrics").glob("*/shard-*.parquet"))
    summary = subprocess.run([XAI, "summary", str(run_path)], capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stdout + summary.stderr
    assert "gradient" in summary.stdout and "random" in summary.stdout, summary.stdout


def test_manual_run_of_the_deployment_completes(server: PrefectServer, deployed: dict[str, Any],
                                                scheduled_run: dict[str, Any]) -> None:
    config = {**deployed["config"], "run_id": "manual"}  # --params replaces config: the documented override
    out = ok(server.cli("deployment", "run", f"{FLOW}/{NAME}", "--params", json.dumps({"config": config})), server)
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert run_id, out
    run = server.wait_run(deployed["id"], 240, id=run_id.group(1))
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{server.logs()}"
    assert run["auto_scheduled"] is False
    assert run_dir(deployed["config"]["out"], "manual").name == "manual"


def test_job_variables_env_reaches_the_flow_run(server: PrefectServer, deployed: dict[str, Any],
                                                scheduled_run: dict[str, Any]) -> None:
    assert scheduled_run["run"]["state_type"] == "COMPLETED", server.logs()
    record = json.loads((scheduled_run["dir"] / "run.json").read_text())
    assert record["executor"]["kind"] == "ray"
    assert record["executor"]["address"] == deployed["address"]  # RAY_ADDRESS from work_pool.job_variables.env
