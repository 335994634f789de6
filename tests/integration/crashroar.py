"""A plug-in job kind for the killed-actor test (``"tests.integration.crashroar:CrashRoarJob"``): the roar job whose
units named in ``config["crash"]`` kill their actor process (``os._exit``, as on a segfault or an OOM kill) the first
time they run, after the unit's row has been computed but before it is committed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xcore.core.shards import Shard
from xcore.pipeline.roar_job import RoarJob


class CrashRoarJob(RoarJob):
    kind = "tests.integration.crashroar:CrashRoarJob"

    def __init__(self, config: dict[str, Any]) -> None:
        crash = list(config.get("crash", []))
        super().__init__({k: v for k, v in config.items() if k != "crash"})
        self.config = {**self.config, "crash": crash}  # actors rebuild the job from this config

    def worker(self, device: str | None = None) -> Any:
        worker = super().worker(device)
        write_shard = self.layout.write_shard

        def dying_write(shard: Shard, *args: Any, **kw: Any) -> dict[str, Any]:
            marker = Path(self.run_dir) / f"attempted-{shard.shard_id}"
            if shard.shard_id in self.config["crash"] and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return write_shard(shard, *args, **kw)

        self.layout.write_shard = dying_write  # type: ignore[method-assign]
        return worker
