"""Filter importance (Hartley 2021, *An Investigation into Explanations for Convolutional Neural Networks*, PhD
thesis, Cardiff University, chapter 6): one score per filter of a layer and sample (:mod:`~xcore.filters.scorers`,
eqs 6.1–6.6, on one tapped forward + backward, :mod:`~xcore.filters.tap`), per-class distributions
(:mod:`~xcore.filters.stats`), surprise / expectation / β (:mod:`~xcore.filters.surprise`, eqs 6.7–6.8), the
filter-ranking experiment (:mod:`~xcore.filters.ranking`, §6.2.2) and visualising / fixing by suppression
(:mod:`~xcore.filters.suppression`, §6.3.2, §6.4.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xcore.filters.scorers import SCORERS, score, score_many
from xcore.filters.tap import FilterPass, filter_pass

__all__ = ["SCORERS", "FilterPass", "filter_pass", "primary_scorer", "score", "score_many"]


def primary_scorer(scorers: Mapping[str, Any]) -> str:
    """The scorer whose surprise drives the fixing sweep and the surprise figure: Grad-AMap when scored (the
    thesis' choice, §6.3), else the first one configured."""
    return "gradamap" if "gradamap" in scorers else next(iter(scorers))
