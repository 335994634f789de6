"""A plug-in job kind for crash tests (``"tests.integration.crashjob:CrashJob"``): every shard writes one marker file;
the shards named in ``config["crash"]`` kill their actor process the first time they run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xcore.core.shards import Shard, plan_shards
from xcore.pipeline.base import BaseJob


class CrashWorker:
    batch_size = 1

    def __init__(self, job: CrashJob) -> None:
        self.job = job

    def process(self, shard: Shard) -> dict[str, Any]:
        run = Path(self.job.run_dir)
        attempt = run / f"attempted-{shard.shard_id}"
        if shard.shard_id in self.job.config["crash"] and not attempt.exists():
            attempt.write_text(str(os.getpid()))
            os._exit(1)  # the actor process dies mid-shard, as on a segfault or an OOM kill
        (run / f"done-{shard.shard_id}.json").write_text(json.dumps({"pid": os.getpid()}))
        return {"shard_id": shard.shard_id, "samples": shard.size, "pid": os.getpid()}


class CrashJob(BaseJob):
    kind = "tests.integration.crashjob:CrashJob"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.run_dir = config["out"]
        self.run_key = Path(self.run_dir).name
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)

    def shards(self) -> list[Shard]:
        return plan_shards(self.config["n"], 1)

    def is_complete(self, shard: Shard) -> bool:
        return (Path(self.run_dir) / f"done-{shard.shard_id}.json").exists()

    def worker(self, device: str | None = None) -> CrashWorker:
        return CrashWorker(self)

    def reduce(self, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
        return {"done": sorted(s["shard_id"] for s in summaries), "failed": failed}
