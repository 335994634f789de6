"""The ROAR / KAR / ROAD flow: explain the train and test splits, then one retraining (or evaluation) unit per
(method, mode, t, repeat) on the Ray actors, then the curves, AUCs and figure.

Each step is the generic pipeline (:func:`flows.explain.run_pipeline`: plan -> dispatch -> reduce -> report) in its
own run directory, so every step resumes: a complete explain run with the same key is reused as it is, and a rerun
of the ROAR run computes only the units without a committed row.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.configure()

from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402

from flows.explain import run_chain  # noqa: E402
from tasks.options import RunOptions  # noqa: E402
from xcore.pipeline import RoarConfig, open_job  # noqa: E402


@flow(name="roar")
def roar_dataset(config: RoarConfig, options: RunOptions | None = None) -> dict[str, Any]:
    """ROAR / KAR (or ROAD without retraining) of ``config.methods`` on ``config.dataset`` with ``config.model``."""
    job = open_job("roar", config.model_dump())
    # job.requires(): the explain runs of the train and test splits (the maps), then the units on the actors,
    # then the curves and AUCs
    return run_chain(job, options or RunOptions())
