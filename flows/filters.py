"""The filter-statistics flow: score the reference (train) split, reduce its per-class distributions, then score the
evaluated split against them — surprise, expectation, β, the filter-ranking experiment and fixing by suppression
(Hartley 2021, §6.2–6.4).

Both steps are the generic pipeline (:func:`flows.explain.run_pipeline`: plan -> dispatch -> reduce -> report) in
their own run directories, so each resumes: a complete reference run with the same key is reused as it is.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.configure()

from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402

from flows.explain import run_chain  # noqa: E402
from tasks.options import RunOptions  # noqa: E402
from xcore.pipeline import FiltersConfig, open_job  # noqa: E402


@flow(name="filters")
def filter_statistics(config: FiltersConfig, options: RunOptions | None = None) -> dict[str, Any]:
    """Per-class filter-score distributions of ``config.model`` on the reference split, then ``config.split``
    scored against them."""
    job = open_job("filter_scores", config.model_dump())
    # job.requires(): the reference split's scores and distributions, then this split's shards on the actors,
    # then the ranking AUCs, the β report, the fixing counts and the figures
    return run_chain(job, options or RunOptions())
