"""Jobs the runtime fans out shard by shard; importing this package registers the built-in job kinds."""

from __future__ import annotations

from xcore.core.shards import Shard, plan_shards
from xcore.pipeline import explain_job  # noqa: F401  (registers "explain")
from xcore.pipeline.base import JOBS, Job, Worker, open_job
from xcore.pipeline.explain_job import ExplainJob, explain_config

__all__ = ["JOBS", "ExplainJob", "Job", "Shard", "Worker", "explain_config", "open_job", "plan_shards"]
