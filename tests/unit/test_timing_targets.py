"""The explain worker times explanations and metrics apart (thesis §3.5.5, §5.4.5) and explains random targets
(thesis §3.6.4): ``explain_ms`` excludes metric time, each metric has its own ``<metric>_ms``, the warm-up is
untimed, and a random target is never the prediction while the metrics still score the prediction.

Time comes from a fake clock that only the patched explainer and metric advance, so every value is exact and
nothing depends on the machine's speed or load."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import xcore.core.timing as timing
import xcore.explain
import xcore.metrics
from xcore.core.targets import random_target
from xcore.metrics.base import METRICS, Metric
from xcore.pipeline import ExplainJob

EXPLAIN_S = 0.010  # fake seconds per explained sample
METRIC_S = 2.5  # fake seconds per metric call (a "sleeping" metric)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 synthetic 32 px images and an untrained SmallCNN checkpoint (no training)."""
    from xcore.data import generate_images
    from xcore.models import save_checkpoint
    from xcore.models.smallcnn import SmallCNN

    tmp = tmp_path_factory.mktemp("timing")
    data = generate_images(tmp / "shapes", n_train_per_class=1, n_val=8, size=32)
    torch.manual_seed(0)
    model = save_checkpoint(tmp / "m.pt", SmallCNN(6, width=4, blocks=2).eval(), {
        "arch": "smallcnn", "num_classes": 6, "arch_kwargs": {"width": 4, "blocks": 2}, "input_size": 32,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    return {"dataset": str(data), "model": str(model), "out": str(tmp / "runs"),
            "methods": {"gradient": {}}, "metrics": {"deletion_insertion": {"steps": 4}},
            "shard_size": 8, "batch_size": 3}


def _run(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> tuple[list[dict], list[int],
                                                                                       list[int]]:
    """Process the single shard under the fake clock: the metrics rows in sample order, the explained batch sizes
    and the classes the metric was asked to track."""
    from xcore.io.query import connect

    clock = FakeClock()
    monkeypatch.setattr(timing, "clock", clock)
    real_run, calls, tracked = xcore.explain.run, [], []

    def explain(name: str, model: Any, x: torch.Tensor, targets: Any = None, **kw: Any) -> Any:
        calls.append(x.shape[0])
        clock.now += EXPLAIN_S * x.shape[0]
        return real_run(name, model, x, targets, **kw)

    metric = METRICS.get("deletion_insertion")

    def sleepy(model: Any, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, **kw: Any) -> dict[str, Any]:
        clock.now += METRIC_S
        tracked.extend(int(t) for t in targets)
        return metric.fn(model, x, maps, targets, **kw)

    monkeypatch.setattr(xcore.explain, "run", explain)
    monkeypatch.setitem(METRICS._items, "deletion_insertion", Metric(
        metric.name, sleepy, metric.defaults, metric.per_sample_keys, metric.list_keys, metric.needs))
    job = ExplainJob({**cfg, "out": str(tmp_path / "runs")})
    worker = job.worker("cpu")
    worker.process(job.shards()[0])
    rows = connect(job.run_dir).execute("SELECT * FROM metrics ORDER BY index").fetchall()
    cols = [d[0] for d in connect(job.run_dir).execute("SELECT * FROM metrics").description]
    return [dict(zip(cols, r, strict=True)) for r in rows], calls, tracked


def test_explain_ms_excludes_metric_time_and_the_warm_up(small_run, monkeypatch, tmp_path) -> None:
    rows, calls, _ = _run(small_run, monkeypatch, tmp_path)
    assert calls == [1, 3, 3, 2]  # one untimed warm-up sample, then the batches of 3, 3, 2
    assert [r["explain_batch"] for r in rows] == [3, 3, 3, 3, 3, 3, 2, 2]
    for r in rows:
        assert r["explain_ms"] == pytest.approx(EXPLAIN_S * 1000, rel=1e-9)  # not the 2.5 s the metric slept
        assert r["deletion_insertion_ms"] == pytest.approx(METRIC_S * 1000 / r["explain_batch"], rel=1e-9)
        assert r["device"] == "cpu"
        assert "elapsed_ms" not in r


def test_random_targets_differ_from_the_prediction_and_metrics_score_the_prediction(small_run, monkeypatch,
                                                                                      tmp_path) -> None:
    rows, _, tracked = _run({**small_run, "target": "random"}, monkeypatch, tmp_path)
    for r in rows:
        assert r["target"] == random_target(0, r["index"], r["pred"], 6) != r["pred"]
    assert tracked == [r["pred"] for r in rows]  # deletion still tracks the predicted class (Table 3.5)


def test_random_target_is_uniform_over_the_other_classes_and_seeded() -> None:
    draws = [random_target(3, i, pred=2, num_classes=5) for i in range(4000)]
    assert 2 not in draws
    counts = [draws.count(k) for k in (0, 1, 3, 4)]
    assert all(abs(c - 1000) < 120 for c in counts)  # ±3.8 binomial σ: a property of the fixed draws
    assert draws == [random_target(3, i, pred=2, num_classes=5) for i in range(4000)]
    assert draws != [random_target(4, i, pred=2, num_classes=5) for i in range(4000)]


def test_pointing_game_smooths_gradient_maps_only_unless_told(small_run, tmp_path) -> None:
    """TorchRay's convention (thesis §5.4.4.1): σ = 0.02·max(H, W) for gradient-type maps, none for CAMs; a
    user's ``smooth`` wins for every method."""
    cfg = {**small_run, "out": str(tmp_path / "runs"), "methods": {"gradient": {}, "gradcam": {}}}
    job = ExplainJob({**cfg, "metrics": {"pointing_game": {}}})
    assert job.metric_params("gradient", "pointing_game")["smooth"] == 0.02
    assert job.metric_params("gradcam", "pointing_game")["smooth"] == 0.0
    job = ExplainJob({**cfg, "out": str(tmp_path / "runs2"), "metrics": {"pointing_game": {"smooth": 0.0}}})
    assert job.metric_params("gradient", "pointing_game") == {"tolerance": 15.0, "smooth": 0.0}
