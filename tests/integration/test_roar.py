"""ROAR / KAR / ROAD on the embedded shapes data: the default generator at 64 px with 80 train images per class, a
clean SmallCNN trained here, and a reduced retraining recipe (4 epochs, t in {0, 30}, 2 repeats; ROAD's MoRF at
t in {0, 50}), in process (the units on Ray actors: the killed-actor test). Checks the report's values against the
ground truth, that a unit rerun repeats its accuracy exactly, and that an actor killed in a unit leaves exactly
one row per unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_invoke import invoke

from xcore.io.query import connect
from xcore.pipeline import open_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shapes data at 64 px (80 train images per class, 120 val) and a SmallCNN trained on it (~60 % val)."""
    from xcore.data import generate_images
    from xcore.models import train_model

    root = generate_images(tmp_path_factory.mktemp("roar-data") / "shapes", n_train_per_class=80, n_val=120,
                           size=64)
    model = tmp_path_factory.mktemp("roar-model") / "smallcnn.pt"
    train_model(root, model, epochs=20, num_threads=1)
    return root, model


def curve(run: Path) -> dict[tuple[str, str, float], float]:
    report = json.loads((run / "analysis" / "roar.json").read_text())
    return {(c["method"], c["mode"], c["fraction"]): c["mean"] for c in report["curves"]}


def test_roar_kar_and_road_on_shapes(shapes, tmp_path, prefect_harness):
    root, model = shapes
    out = tmp_path / "runs"
    base = ["roar", "--dataset", str(root), "--model", str(model), "--out", str(out), "-m", "oracle", "-m",
            "random", "--shard-size", "128", "--batch-size", "40", "--executor", "local"]
    res = invoke([*base, "--mode", "roar", "--mode", "kar", "-t", "0", "-t", "0.3", "--repeats", "2",
                  "--epochs", "4", "--run-id", "retrain"])
    assert "KAR accuracy" in res.stdout and "ROAR accuracy" in res.stdout
    run = out / "retrain"
    mean = curve(run)
    # KAR at 30 %: the oracle keeps the object (and its surroundings), random a disc around a random point
    assert mean["oracle", "kar", 0.3] > mean["random", "kar", 0.3] + 0.1, mean  # 0.43 against 0.18
    assert (run / "analysis" / "roar.png").stat().st_size > 10_000
    con = connect(run)
    rows = con.execute("SELECT unit, method, mode, fraction, repeat, accuracy, n_test, status FROM roar "
                       "ORDER BY unit").fetchall()
    con.close()
    assert [r[0] for r in rows] == list(range(16)) and {r[7] for r in rows} == {"ok"}
    assert {r[6] for r in rows} == {120}
    summary = invoke(["summary", str(run)])
    assert "KAR accuracy" in summary.stdout and "AUC" in summary.stdout
    query = invoke(["query", str(run), "SELECT count(*) AS n, count(DISTINCT unit) AS units FROM roar"])
    assert "16" in query.stdout

    # a unit rerun after its row was deleted gives the same accuracy (same device, same thread count)
    job = open_job("roar", json.loads((run / "run.json").read_text())["config"])
    unit = next(u for u in job.units if (u.method, u.mode, u.fraction, u.repeat) == ("oracle", "kar", 0.3, 0))
    shard = job.shards()[unit.unit]
    before = rows[unit.unit][5]
    (run / "_shards" / f"{shard.name}.json").unlink()
    assert not job.is_complete(shard)
    again = job.worker("cpu").process(shard)
    assert again["accuracy"] == before and job.is_complete(shard)

    # ROAD: the original model on the noisy-linear imputed test split (MoRF = roar, LeRF), no retraining
    invoke([*base, "--no-retrain", "--mode", "roar", "-t", "0", "-t", "0.5", "--run-id", "road"])
    road = curve(out / "road")
    clean = clean_accuracy(root, model)
    assert road["oracle", "roar", 0.0] == road["random", "roar", 0.0] == pytest.approx(clean, abs=1e-12)
    assert road["oracle", "roar", 0.5] < road["random", "roar", 0.5] - 0.05, road  # 0.158 against 0.283
    info = json.loads((out / "road" / "run.json").read_text())
    assert info["config"]["imputation"] == "noisy_linear" and info["config"]["repeats"] == 1


def clean_accuracy(root: Path, model_path: Path) -> float:
    """The original model's accuracy on the undegraded val split, computed directly."""
    from xcore.data import ImageNetReader
    from xcore.datasets.imagenet import image_options
    from xcore.models import load_checkpoint

    model, meta = load_checkpoint(model_path)
    reader = ImageNetReader(root, "val", **image_options(meta))
    x = torch.stack([reader.load(i).x for i in range(len(reader))])
    y = torch.tensor([reader.label(i) for i in range(len(reader))])
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def test_an_actor_killed_in_a_unit_leaves_one_row_per_unit(tiny_data, tiny_model, tmp_path, ray_session):
    """The unit's actor dies (os._exit) after computing, before committing: Ray reports it, the driver replaces the
    actor and reruns that unit; every unit ends with exactly one committed row."""
    from tasks.driver import dispatch, make_executor, plan

    cfg = {"dataset": str(tiny_data), "model": str(tiny_model), "out": str(tmp_path), "run_id": "crash",
           "methods": {"oracle": {}}, "retrain": False, "fractions": [0.0, 0.5, 0.9], "modes": ["roar"],
           "crash": [1]}
    job = open_job("tests.integration.crashroar:CrashRoarJob", cfg)
    todo, _ = plan(job)
    executor = make_executor(job, "ray", actors=1)
    try:
        summaries, failed = dispatch(job, todo, executor, max_attempts=3, backoff=0.0)
    finally:
        executor.close()
    assert failed == [] and (tmp_path / "crash" / "attempted-1").is_file()
    job.reduce(summaries, failed)
    con = connect(tmp_path / "crash")
    per_unit = con.execute("SELECT unit, count(*) FROM roar GROUP BY unit ORDER BY unit").fetchall()
    con.close()
    assert per_unit == [(0, 1), (1, 1), (2, 1)]
    assert len(list((tmp_path / "crash" / "roar").glob("*.parquet"))) == 3
