"""Jobs the runtime fans out shard by shard; importing this package registers the built-in job kinds."""

from __future__ import annotations

from xcore.pipeline.base import JOBS, BaseJob, Job, Worker, open_job
from xcore.pipeline.config import ExplainConfig, parse_config
from xcore.pipeline.explain_job import ExplainJob

__all__ = ["JOBS", "BaseJob", "ExplainConfig", "ExplainJob", "Job", "Worker", "open_job", "parse_config"]
