"""Surprise / expectation (thesis §6.2.4, eq 6.7), β (§6.2.5, eq 6.8) and the §6.3.1 β report, on hand-built stats
with hand-computed answers, plus identities on stats built by filter_stats from the same samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xcore.errors import UsageError
from xcore.filters.stats import STATS_SCHEMA, filter_stats
from xcore.filters.surprise import THESIS_BETA, ClassStats, beta_report, surprise

# class 0: μ = [1, 2, 3, 6], mean 3 → guard [F, F, F (3 is not > 3), T]
# class 2: μ = [0, 0, 4, −4], mean 0 → guard [F, F, T, F]; class 1 has no rows
HAND = {0: {"mean": [1.0, 2.0, 3.0, 6.0], "p001": [0.5, 1.0, 2.0, 4.0], "p999": [1.5, 3.0, 4.0, 8.0]},
        2: {"mean": [0.0, 0.0, 4.0, -4.0], "p001": [-1.0, -1.0, 3.0, -5.0], "p999": [1.0, 1.0, 5.0, -3.0]}}


def hand_table() -> pa.Table:
    rows = [{"label": c, "filter": n, "count": 10, "mean": v["mean"][n], "p001": v["p001"][n], "p999": v["p999"][n],
             "lo": -10.0, "hi": 10.0, "hist": [10]} for c, v in HAND.items() for n in range(4)]
    return pa.Table.from_pylist(rows[::-1], schema=STATS_SCHEMA)  # row order must not matter


@pytest.fixture()
def stats() -> ClassStats:
    return ClassStats.from_table(hand_table(), n_classes=3)


def test_from_table_dense_arrays_and_mean_guard(stats: ClassStats) -> None:
    assert stats.mean.shape == (3, 4) and stats.n_classes == 3 and stats.n_filters == 4
    np.testing.assert_array_equal(stats.mean[2], HAND[2]["mean"])
    np.testing.assert_array_equal(stats.p_high[0], HAND[0]["p999"])
    assert np.isnan(stats.mean[1]).all() and (stats.count[1] == 0).all()
    np.testing.assert_array_equal(stats.known(), [True, False, True])
    np.testing.assert_array_equal(stats.guard(), [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]])
    assert ClassStats.from_table(hand_table()).n_classes == 3


def test_hand_built_surprise_expectation_and_beta(stats: ClassStats) -> None:
    scores = np.array([
        [0.25, 3.5, 2.5, 3.0],   # c0: f1 surprising; f0 < P0.1 but fails the guard; f3 expected
        [2.0, 3.25, 5.0, 8.0],   # c0: f0 (+.5), f1 (+.25), f2 (+1) surprising; f3 = P99.9 is not
        [0.0, 0.5, 2.0, -6.0],   # c2: f2 expected; f3 < P0.1 fails the guard (μ = −4 < 0)
        [0.5, 1.0, 2.0, 4.0],    # c0: every score = P0.1 exactly: nothing expected
        [9.0, 9.0, 9.0, 9.0],    # class 1: absent from the stats
        [9.0, 9.0, 9.0, 9.0],    # class 7: outside [0, C)
        [9.0, 9.0, 9.0, 9.0],    # class −1
    ], dtype=np.float32)
    out = surprise(scores, np.array([0, 0, 2, 0, 1, 7, -1]), stats)
    np.testing.assert_array_equal(out["n_surprising"], [1, 3, 0, 0, 0, 0, 0])  # = the list lengths
    np.testing.assert_array_equal(out["n_expected"], [1, 0, 1, 0, 0, 0, 0])
    assert [s.tolist() for s in out["surprising"]] == [[1], [0, 1, 2], [], [], [], [], []]
    assert [e.tolist() for e in out["expected"]] == [[3], [], [2], [], [], [], []]
    np.testing.assert_array_equal(out["most_surprising"], [1, 2, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(out["known"], [True, True, True, True, False, False, False])
    # β = mean(α − μ): (−.75 + 1.5 − .5 − 3)/4, (1 + 1.25 + 2 + 2)/4, (0 + .5 − 2 − 2)/4, (−.5 − 1 − 1 − 2)/4
    np.testing.assert_array_equal(out["beta"][:4], [-0.6875, 1.5625, -0.875, -1.125])
    assert np.isnan(out["beta"][4:]).all()
    assert out["beta"].dtype == np.float64 and out["n_surprising"].dtype == np.int64


def test_most_surprising_tie_takes_the_lowest_filter(stats: ClassStats) -> None:
    out = surprise(np.array([[2.5, 4.0, 5.0, 0.0]]), np.array([0]), stats)  # excess 1, 1, 1 over f0, f1, f2
    assert out["most_surprising"].tolist() == [0] and out["n_surprising"].tolist() == [3]


def test_bad_input_is_a_usage_error(stats: ClassStats) -> None:
    for call in (lambda: surprise(np.zeros((2, 3)), np.zeros(2, int), stats),
                 lambda: surprise(np.zeros((2, 4)), np.zeros(3, int), stats),
                 lambda: surprise(np.zeros((2, 4)), np.zeros(2), stats),
                 lambda: ClassStats.from_table(hand_table(), n_classes=2),
                 lambda: ClassStats.from_table(pa.concat_tables([hand_table(), hand_table()])),
                 lambda: ClassStats.from_table(hand_table().drop_columns(["p999"])),
                 lambda: ClassStats.from_table(STATS_SCHEMA.empty_table()),
                 lambda: beta_report(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3)),
                 lambda: beta_report(*[np.zeros(3)] * 5, min_per_class=1)):
        with pytest.raises(UsageError):
            call()


def test_identities_on_the_training_samples_themselves(tmp_path: Path) -> None:
    """Stats from filter_stats over samples, applied to the same samples: per class the mean β is 0 (eq 6.8 sums
    α − μ_cn), and with 2 ≤ n ≤ 1000 samples P99.9 lies strictly between the two largest values (linear rule),
    so exactly one sample — the largest — is surprising at each (class, filter) with distinct top values; likewise
    exactly the smallest is below P0.1 (flagged where the guard holds)."""
    rng = np.random.default_rng(5)
    n_per, k = [30, 7, 2], 6
    labels = np.repeat(np.arange(3), n_per)
    scores = rng.gamma(2.0, 1.0, size=(len(labels), k)).astype(np.float32) + labels[:, None].astype(np.float32)
    lists = pa.array([s.tolist() for s in scores], pa.list_(pa.float32()))
    pq.write_table(pa.table({"label": pa.array(labels, pa.int64()), "scores": lists}), tmp_path / "shard-0.parquet")
    stats = ClassStats.from_table(filter_stats([tmp_path / "shard-0.parquet"]))
    out = surprise(scores, labels, stats)
    for c in range(3):
        m = labels == c
        assert out["beta"][m].mean() == pytest.approx(0.0, abs=1e-12)
        surprised = np.stack([np.isin(np.arange(k), s) for s, keep in zip(out["surprising"], m, strict=True) if keep])
        expected = np.stack([np.isin(np.arange(k), e) for e, keep in zip(out["expected"], m, strict=True) if keep])
        np.testing.assert_array_equal(surprised, scores[m] == scores[m].max(axis=0))
        np.testing.assert_array_equal(expected, (scores[m] == scores[m].min(axis=0)) & stats.guard()[c])
    assert stats.guard().any() and not stats.guard().all()


def test_beta_report_hand_counted() -> None:
    # class 0: β = 2·logit − 5 (increasing affine) → ρ_logit = 1; prob in the same order → ρ_prob = 1
    # class 1: β = 0.5·logit + 1 → ρ_logit = 1; prob reversed → ρ_prob = −1
    # class 2: β = 3·logit → ρ_logit = 1; prob with ranks 1 and 2 swapped → ρ_prob = 1 − 6·2/(6·35) = 1 − 2/35
    # class 3: 2 samples < min_per_class; class 4: constant β; class 5: unknown (β NaN); class 6: constant prob
    logit = {0: [1.0, 2, 3, 4, 5, 6], 1: [-3.0, -1, 0, 2, 5, 9], 2: [-2.0, -1, 0.5, 1, 2, 3], 3: [1.0, 2],
             4: [1.0, 2, 3], 5: [1.0, 2, 3], 6: [4.0, 5, 6]}
    beta = {0: [2 * x - 5 for x in logit[0]], 1: [0.5 * x + 1 for x in logit[1]], 2: [3 * x for x in logit[2]],
            3: [-1.0, 1.0], 4: [0.5] * 3, 5: [np.nan] * 3, 6: [-1.0, 0.0, 1.0]}
    prob = {0: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1: [0.6, 0.5, 0.4, 0.3, 0.2, 0.1], 2: [0.2, 0.1, 0.3, 0.4, 0.5, 0.6],
            3: [0.1, 0.2], 4: [0.1, 0.2, 0.3], 5: [0.1, 0.2, 0.3], 6: [0.5] * 3}
    labels = np.concatenate([[c] * len(v) for c, v in logit.items()])
    b = np.concatenate(list(beta.values()))
    # misclassified: the first sample of every class (7), + the last of class 1; all others correct
    first = np.r_[0, np.cumsum([len(v) for v in logit.values()])[:-1]]
    wrong = np.zeros(len(labels), bool)
    wrong[first] = True
    wrong[first[1] + 5] = True
    preds = np.where(wrong, labels + 100, labels)
    out = beta_report(b, labels, preds, np.concatenate(list(logit.values())), np.concatenate(list(prob.values())))
    assert out["classes_logit"] == 4 and out["classes_prob"] == 3  # classes 0, 1, 2 (+ 6 for the logit)
    assert out["spearman_logit"] == pytest.approx(1.0, abs=1e-12)
    assert out["spearman_prob"] == pytest.approx((1 - 1 + (1 - 2 / 35)) / 3, abs=1e-12)
    # finite β: 29 − 3 (class 5) = 26 samples; misclassified (class 5 left out): 6 firsts + 1 = 7
    # misclassified β: c0 −3, c1 −0.5 and 5.5, c2 −6, c3 −1, c4 0.5, c6 −1 → 5 of 7 negative
    # correct β < 0: c0 −1 (x=2); c1 0.5·(−1)+1 = .5, 1, 2 → none; c2 −3 → 1; c3 none; c4 none; c6 0, 1 → none → 2/19
    assert (out["n"], out["n_misclassified"], out["n_correct"]) == (26, 7, 19)
    assert out["misclassified_beta_neg"] == pytest.approx(5 / 7, abs=1e-15)
    assert out["correct_beta_neg"] == pytest.approx(2 / 19, abs=1e-15)


def test_beta_report_spearman_is_one_for_any_increasing_affine_map() -> None:
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(50), 20)
    logit = rng.normal(0, 3, size=labels.size)
    slope, shift = rng.uniform(0.01, 5, 50), rng.normal(0, 10, 50)
    beta = slope[labels] * logit + shift[labels]
    out = beta_report(beta, labels, labels, logit, 1 / (1 + np.exp(-logit)))
    assert out["classes_logit"] == out["classes_prob"] == 50
    assert out["spearman_logit"] == pytest.approx(1.0, abs=1e-12)
    assert out["spearman_prob"] == pytest.approx(1.0, abs=1e-12)  # a monotone map of the logit
    assert np.isnan(out["misclassified_beta_neg"]) and out["n_misclassified"] == 0


def test_thesis_numbers() -> None:
    """§6.3.1 as printed: Spearman 0.998 / 0.999 (pre-softmax), 0.782 / 0.801 (softmax); β < 0 for 86.60 % /
    90.20 % of misclassified and 45.88 % / 47.67 % of correct images (VGG16 / ResNet50)."""
    assert THESIS_BETA["vgg16"] == {"spearman_logit": 0.998, "spearman_prob": 0.782,
                                    "misclassified_beta_neg": 0.8660, "correct_beta_neg": 0.4588}
    assert THESIS_BETA["resnet50"] == {"spearman_logit": 0.999, "spearman_prob": 0.801,
                                       "misclassified_beta_neg": 0.9020, "correct_beta_neg": 0.4767}
