"""Jobs the runtime fans out shard by shard; importing this package registers the built-in job kinds."""

from __future__ import annotations

from xcore.pipeline import explain_job  # noqa: F401  (registers "explain")
from xcore.pipeline.base import JOBS, Job, Shard, Worker, open_job, plan_shards
from xcore.pipeline.explain_job import ExplainJob, explain_config

__all__ = ["JOBS", "ExplainJob", "Job", "Shard", "Worker", "explain_config", "open_job", "plan_shards"]
