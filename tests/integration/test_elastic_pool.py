"""The elastic actor pool: the default layout, shards fed only to ready workers, a pending actor that blocks
nothing, and a request no node can hold failing in one line instead of hanging."""

from __future__ import annotations

import pytest

from tasks.driver import dispatch, plan
from tasks.executors import LocalExecutor
from xcore.pipeline import open_job

CRASH = "tests.integration.crashjob:CrashJob"


@pytest.mark.parametrize(("resources", "kw", "want"), [
    ({"CPU": 4.0}, {}, (4, 1.0, 0.0)),                        # 1 + 1 + 2 CPU nodes: one 1-CPU actor per CPU
    ({"CPU": 2.0}, {"cpus_per_actor": 2.0}, (1, 2.0, 0.0)),
    ({"CPU": 3.0}, {"cpus_per_actor": 2.0}, (1, 2.0, 0.0)),
    ({"CPU": 2.0, "GPU": 1.0}, {}, (1, 1.0, 1.0)),            # a GPU in the cluster: one actor per GPU
    ({"CPU": 8.0, "GPU": 4.0}, {"gpus_per_actor": 2.0}, (2, 1.0, 2.0)),
    ({"CPU": 2.0, "GPU": 1.0}, {"gpus_per_actor": 0.0}, (2, 1.0, 0.0)),
    ({"CPU": 0.0}, {"gpus_per_actor": 1.0}, (1, 1.0, 1.0)),   # no GPU yet, GPUs expected (autoscaler)
    ({"CPU": 4.0}, {"actors": 7}, (7, 1.0, 0.0)),
])
def test_pool_layout(resources, kw, want):
    from tasks.actor_pool import pool_layout

    n, options = pool_layout(resources, kw.get("actors"), kw.get("cpus_per_actor", 1.0), kw.get("gpus_per_actor"))
    assert (n, options["num_cpus"], options["num_gpus"]) == want


class LateExecutor(LocalExecutor):
    """Three slots: 0 is up at once, 1 comes up after slot 0 finished two shards, 2 never does."""

    size = 3

    def __init__(self, job) -> None:
        super().__init__(job)
        self.slot_of: dict[int, int] = {}
        self.finished = 0

    def ready_slots(self) -> list[int]:
        return [0, 1] if self.finished >= 2 else [0]

    def submit(self, slot, shard, hints):
        self.slot_of[shard.shard_id] = slot
        return super().submit(slot, shard, hints)

    def result(self, handle):
        self.finished += 1
        return super().result(handle)


def test_driver_feeds_only_ready_workers_and_takes_late_ones(tmp_path):
    job = open_job(CRASH, {"out": str(tmp_path / "late"), "n": 8, "crash": []})
    todo, _ = plan(job)
    ex = LateExecutor(job)
    summaries, failed = dispatch(job, todo, ex, backoff=0.0, per_worker=1)
    assert failed == [] and sorted(s["shard_id"] for s in summaries) == list(range(8))
    assert [ex.slot_of[i] for i in (0, 1)] == [0, 0]           # only slot 0 was up
    assert 1 in ex.slot_of.values() and 2 not in ex.slot_of.values()  # the late one took shards, the absent none


def run_on_pool(out, n: int, **options):
    """``n`` one-shard crash-job shards on a Ray pool built with ``options``: summaries, failed ids, its record."""
    from tasks.driver import make_executor

    job = open_job(CRASH, {"out": str(out), "n": n, "crash": []})
    todo, _ = plan(job)
    ex = make_executor(job, "ray", **options)
    try:
        summaries, failed = dispatch(job, todo, ex, backoff=0.0)
        return summaries, failed, ex.describe()
    finally:
        ex.close()


@pytest.mark.slow
def test_a_pending_actor_blocks_nothing(ray_session, tmp_path):
    """Three 1-CPU actors on a 2-CPU instance: two run every shard, the third stays pending."""

    summaries, failed, record = run_on_pool(tmp_path / "pending", 6, actors=3)
    assert failed == [] and sorted(s["shard_id"] for s in summaries) == list(range(6))
    assert record["actors_requested"] == 3 and len(record["actors"]) <= 2
    assert sum(a["shards"] for a in record["actors"]) == 6
    assert len({s["pid"] for s in summaries}) == len(record["actors"])


@pytest.mark.slow
def test_an_actor_no_node_can_hold_fails_in_one_line(ray_session, tmp_path):
    """The old pool asked for cluster CPUs - 1 per actor and hung; a request nothing can hold now ends the run."""
    from tasks.driver import make_executor

    job = open_job(CRASH, {"out": str(tmp_path / "big"), "n": 2, "crash": []})
    todo, _ = plan(job)
    ex = make_executor(job, "ray", cpus_per_actor=3.0, actor_start_timeout=2.0)
    try:
        with pytest.raises(TimeoutError, match=r"no actor became ready in 2 s: each needs \{'CPU': 3.0\}"):
            dispatch(job, todo, ex, backoff=0.0)
    finally:
        ex.close()


@pytest.mark.slow
def test_min_actors_spreads_the_first_shards(ray_session, tmp_path):
    """``min_actors=2``: no shard is fed before both actors are up, so each of them runs some of the 4 shards."""

    summaries, failed, record = run_on_pool(tmp_path / "spread", 4, actors=2, min_actors=2)
    assert failed == [] and len({s["pid"] for s in summaries}) == 2
    assert sorted(a["shards"] for a in record["actors"]) == [2, 2]  # round robin over the two ready actors
