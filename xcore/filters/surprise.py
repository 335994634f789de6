"""Surprise, expectation and β of unseen images against the per-(class, filter) distributions (Hartley, *An
Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis"
— §6.2.4, eq 6.7; §6.2.5, eq 6.8; §6.3.1).

For an image of ground-truth class c with filter scores ``α_n`` (n = 1..N filters of the final conv layer):

- filter n is **surprising** if ``α_n > P_cn(99.9)``;
- filter n is **expected** (the network expected it and it is missing) if ``α_n < P_cn(0.1)`` and the mean guard of
  eq 6.7 holds, ``μ_cn > (1/N) Σ_n' μ_cn'``: filters that barely score for the class are never flagged (eq 6.7
  prints only the right-hand side; the text says the filter's class mean must exceed the mean over all filters);
- ``β = (1/N) Σ_n (α_n − μ_cn)`` (eq 6.8): large for typical images of the class, negative for atypical ones.

``μ_cn`` and ``P_cn`` come from a :func:`xcore.filters.stats.filter_stats` table (training images, thesis §6.2.3).
:func:`beta_report` condenses β over a data set as §6.3.1 does; :data:`THESIS_BETA` holds the thesis's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.stats import spearmanr

from xcore.errors import UsageError

# §6.3.1, ImageNet validation set (50,000 images); shares are fractions (the thesis prints 86.60 % etc.).
THESIS_BETA: dict[str, dict[str, float]] = {
    "vgg16": {"spearman_logit": 0.998, "spearman_prob": 0.782, "misclassified_beta_neg": 0.8660,
              "correct_beta_neg": 0.4588},
    "resnet50": {"spearman_logit": 0.999, "spearman_prob": 0.801, "misclassified_beta_neg": 0.9020,
                 "correct_beta_neg": 0.4767},
}
_COLUMNS = ("label", "filter", "count", "mean", "p001", "p999")


@dataclass(frozen=True)
class ClassStats:
    """Dense (C classes, N filters) arrays of a stats table: ``mean`` μ_cn, ``p_low`` P_cn(0.1), ``p_high``
    P_cn(99.9) (NaN where the table has no row) and ``count`` (0 there)."""

    mean: np.ndarray
    p_low: np.ndarray
    p_high: np.ndarray
    count: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table, n_classes: int | None = None) -> ClassStats:
        """The arrays of a :data:`xcore.filters.stats.STATS_SCHEMA` table; ``n_classes`` (default: largest label
        + 1) sets C. Raises :class:`xcore.errors.UsageError` on missing columns, an empty table, a label outside
        ``[0, n_classes)`` or a repeated (label, filter) row."""
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            raise UsageError(f"ClassStats: the stats table lacks columns {missing}")
        if table.num_rows == 0:
            raise UsageError("ClassStats: the stats table is empty")
        label = table.column("label").to_numpy().astype(np.int64)
        filt = table.column("filter").to_numpy().astype(np.int64)
        c = int(label.max()) + 1 if n_classes is None else int(n_classes)
        k = int(filt.max()) + 1
        if label.min() < 0 or label.max() >= c or filt.min() < 0:
            raise UsageError(f"ClassStats: labels must lie in [0, {c}) and filters be >= 0")
        if len(np.unique(label * k + filt)) != len(label):
            raise UsageError("ClassStats: the stats table repeats a (label, filter) pair; tables of two runs mixed?")

        def dense(name: str, fill: float, dtype: type) -> np.ndarray:
            out = np.full((c, k), fill, dtype=dtype)
            out[label, filt] = table.column(name).to_numpy()
            return out

        return cls(mean=dense("mean", np.nan, np.float64), p_low=dense("p001", np.nan, np.float64),
                   p_high=dense("p999", np.nan, np.float64), count=dense("count", 0, np.int64))

    @property
    def n_classes(self) -> int:
        return self.mean.shape[0]

    @property
    def n_filters(self) -> int:
        return self.mean.shape[1]

    def known(self) -> np.ndarray:
        """(C,) bool: the class has a distribution for every filter."""
        return (self.count > 0).all(axis=1)

    def guard(self) -> np.ndarray:
        """(C, N) bool: the mean guard of eq 6.7, ``μ_cn > (1/N) Σ_n' μ_cn'`` (False for unknown classes)."""
        with np.errstate(invalid="ignore"):
            return (self.mean > self.mean.mean(axis=1, keepdims=True)) & self.known()[:, None]


def surprise(scores: np.ndarray, labels: np.ndarray, stats: ClassStats) -> dict[str, np.ndarray]:
    """Surprise, expectation (eq 6.7) and β (eq 6.8) of N samples with filter scores ``scores`` (N, K) for their
    ground-truth class ``labels`` (N,), against ``stats`` (K filters).

    Returns ``n_surprising`` / ``n_expected`` (N,) int64, ``beta`` (N,) float64, ``surprising`` / ``expected``
    (lists of N int arrays of filter indices, ascending), ``most_surprising`` (N,) int64 — the surprising filter with
    the largest ``α_n − P_cn(99.9)`` (lowest index on ties), −1 if none — and ``known`` (N,) bool. A sample whose
    class is absent from the stats (or outside ``[0, C)``) gets ``known`` False, β NaN, ``most_surprising`` −1,
    empty lists and counts 0 (so counts always equal the list lengths; filter on ``known`` or a finite β before
    averaging them); it never raises. Comparisons are strict (a score equal to a percentile is neither surprising
    nor expected); a NaN score is neither and makes β NaN.
    """
    a = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if a.ndim != 2 or lab.shape != (a.shape[0],):
        raise UsageError(f"surprise: need scores (N, K) and labels (N,), got {a.shape} and {lab.shape}")
    if a.shape[1] != stats.n_filters:
        raise UsageError(f"surprise: scores have {a.shape[1]} filters, the stats {stats.n_filters}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise UsageError(f"surprise: labels must be integers, got {lab.dtype}")
    in_range = (lab >= 0) & (lab < stats.n_classes)
    c = np.where(in_range, lab, 0).astype(np.int64)
    known = in_range & stats.known()[c]
    with np.errstate(invalid="ignore"):
        surprising = (a > stats.p_high[c]) & known[:, None]
        expected = (a < stats.p_low[c]) & stats.guard()[c] & known[:, None]
    beta = np.where(known, (a - stats.mean[c]).mean(axis=1), np.nan)
    excess = np.where(surprising, a - stats.p_high[c], -np.inf)
    most = np.where(surprising.any(axis=1), excess.argmax(axis=1), -1)
    n_s, n_e = surprising.sum(axis=1).astype(np.int64), expected.sum(axis=1).astype(np.int64)
    return {"n_surprising": n_s, "n_expected": n_e, "beta": beta.astype(np.float64),
            "surprising": _rows(surprising, n_s), "expected": _rows(expected, n_e),
            "most_surprising": most.astype(np.int64), "known": known}


def _rows(mask: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """The column indices of the True entries of each row of ``mask``."""
    return np.split(np.nonzero(mask)[1].astype(np.int64), np.cumsum(counts)[:-1]) if len(mask) else []


def beta_report(beta: np.ndarray, labels: np.ndarray, preds: np.ndarray, label_logit: np.ndarray,
                label_prob: np.ndarray, *, min_per_class: int = 3) -> dict[str, float]:
    """β over a data set as thesis §6.3.1 reports it (compare with :data:`THESIS_BETA`).

    - ``spearman_logit`` / ``spearman_prob``: the mean over classes of the within-class Spearman rank correlation
      (``scipy.stats.spearmanr``) of β with the GT-class logit / softmax; a class counts when it has at least
      ``min_per_class`` samples and neither β nor that score is constant in it (``classes_logit`` /
      ``classes_prob`` classes counted; NaN when none).
    - ``misclassified_beta_neg`` / ``correct_beta_neg``: the share (fraction) of misclassified (``preds != labels``)
      / correct samples with β < 0 (NaN when there are none); ``n``, ``n_misclassified``, ``n_correct``: counts.

    Keyword parameters: ``min_per_class`` = 3 (at least 2). Samples with a non-finite β (class unknown to the
    stats) are left out of everything.
    """
    b = np.asarray(beta, dtype=np.float64)
    arrays = [np.asarray(x) for x in (labels, preds, label_logit, label_prob)]
    if b.ndim != 1 or any(x.shape != b.shape for x in arrays):
        raise UsageError(f"beta_report: need 1-D arrays of one length, got {[b.shape, *[x.shape for x in arrays]]}")
    if min_per_class < 2:
        raise UsageError(f"beta_report: min_per_class must be >= 2, got {min_per_class}")
    ok = np.isfinite(b)
    lab, pred, logit, prob = (x[ok] for x in arrays)
    b = b[ok]
    correct = pred == lab
    out: dict[str, float] = {}
    order = np.argsort(lab, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(lab[order])) + 1) if len(lab) else []
    for name, score in (("logit", np.asarray(logit, np.float64)), ("prob", np.asarray(prob, np.float64))):
        rhos = [float(spearmanr(b[g], score[g]).statistic) for g in groups
                if len(g) >= min_per_class and np.ptp(b[g]) > 0 and np.ptp(score[g]) > 0]
        out[f"spearman_{name}"] = float(np.mean(rhos)) if rhos else float("nan")
        out[f"classes_{name}"] = len(rhos)
    out["misclassified_beta_neg"] = float(np.mean(b[~correct] < 0)) if (~correct).any() else float("nan")
    out["correct_beta_neg"] = float(np.mean(b[correct] < 0)) if correct.any() else float("nan")
    out.update(n=int(ok.sum()), n_misclassified=int((~correct).sum()), n_correct=int(correct.sum()))
    return out
