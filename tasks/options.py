"""How a job runs (not what it computes): executor, attempts, timeouts, actors. Shared by every job kind.

Like the job configs (:mod:`xcore.pipeline.config`), the CLI options and the flow signatures derive from this one
model, and it is not part of a run's key: the same run may be resumed with other options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RunOptions(BaseModel):
    """Runtime options of the plan -> dispatch -> reduce pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: Literal["ray", "local"] = Field("ray", description="ray (actor pool) or local (in process)")
    max_attempts: int = Field(3, ge=1, description="attempts per shard before it is recorded as failed")
    shard_timeout: float | None = Field(None, gt=0, description="seconds without progress before a worker is replaced")
    actors: int | None = Field(None, ge=1, description="actor count (default: one per GPU, else one)")
