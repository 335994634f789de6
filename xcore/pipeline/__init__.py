"""Jobs the runtime fans out shard by shard; importing this package registers the built-in job kinds."""

from __future__ import annotations

from xcore.pipeline.base import JOBS, BaseJob, Job, Worker, open_job
from xcore.pipeline.config import ExplainConfig, FiltersConfig, RoarConfig, parse_config
from xcore.pipeline.explain_job import ExplainJob
from xcore.pipeline.filters_job import FiltersJob
from xcore.pipeline.roar_job import RoarJob

__all__ = ["JOBS", "BaseJob", "ExplainConfig", "ExplainJob", "FiltersConfig", "FiltersJob", "Job", "RoarConfig",
           "RoarJob", "Worker", "open_job", "parse_config"]
