"""How a job runs (not what it computes): executor, attempts, timeouts, the actor pool. Shared by every job kind.

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
    actors: int | None = Field(None, ge=1, description="most actors to request (default: one per GPU for GPU "
                               "actors, else cluster CPUs // cpus-per-actor)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs each actor reserves (and its torch threads)")
    gpus_per_actor: float | None = Field(None, ge=0, description="GPUs each actor reserves (default: 1 when the "
                                         "cluster reports GPUs at start, else 0; set 1 where an autoscaler adds "
                                         "GPU nodes)")
    min_actors: int = Field(1, ge=1, description="actors that must be ready before the first shard is fed (then "
                            "the pool stays elastic); more than 1 spreads the first shards over that many actors")
    actor_start_timeout: float = Field(900.0, gt=0, description="seconds to wait for a first actor (pending "
                                       "resources, autoscaling) before the run fails")
