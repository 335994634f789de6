"""The four recipes of docs/extending.md, each done from this test module alone (no file of the package edited):
a method, a metric, a dataset kind and a job kind, run end to end through the ``run_job`` flow, local executor.

Everything registered here has a ``toy`` name, so it cannot collide with the package's own registrations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import Tensor, nn

from tasks.options import RunOptions
from xcore.core.shards import Shard, plan_shards
from xcore.core.targets import Target
from xcore.data.base import Sample
from xcore.datasets import DatasetKind, register
from xcore.explain.base import register as register_method
from xcore.io.parquet import decode_heatmap
from xcore.io.query import connect
from xcore.io.runs import RunLayout, read_json
from xcore.metrics.base import register as register_metric
from xcore.models import build_model, save_checkpoint
from xcore.pipeline import JOBS, BaseJob


# --- recipe 1: a method -------------------------------------------------------------------------------------
@register_method("toy_input_energy")
def toy_input_energy(model: nn.Module, x: Tensor, target: Target, *, power: float = 2.0) -> Tensor:
    """``Σ_c |x_c|^power``: a map that ignores the model (a known answer for the test).

    ``power``: the exponent (default 2).
    """
    return x.abs().pow(power).sum(dim=1)


# --- recipe 2: a metric -------------------------------------------------------------------------------------
@register_metric("toy_peak", keys=("toy_peak", "toy_row_max"), list_keys=("toy_row_max",))
def toy_peak(model: nn.Module, x: Tensor, maps: Tensor, targets: Any = None, *, scale: float = 1.0
             ) -> dict[str, Tensor]:
    """Per sample: ``scale · max(map)`` and the maximum of each map row (a list column).

    ``scale``: multiplies the peak (default 1).
    """
    return {"toy_peak": scale * maps.flatten(1).amax(dim=1), "toy_row_max": maps.amax(dim=-1)}


# --- recipe 3: a dataset kind -------------------------------------------------------------------------------
class ToyNpyReader:
    """``<root>/<split>/<label>_<id>.npy`` arrays (3, 8, 8), already normalised."""

    def __init__(self, root: Path, split: str = "val", scale: float = 1.0) -> None:
        self.files = sorted((root / split).glob("*.npy"))
        self.name, self.classes, self.scale = "toy", ["zero", "one"], scale

    def __len__(self) -> int:
        return len(self.files)

    def sample_id(self, index: int) -> str:
        return self.files[index].stem

    def label(self, index: int) -> int:
        return int(self.files[index].stem.split("_")[0])

    def load(self, index: int) -> Sample:
        x = torch.from_numpy(np.load(self.files[index])) * self.scale
        corner = [np.int64(index), np.float32(0.5)]  # numpy leaves, as readers of real formats produce
        return Sample(self.sample_id(index), x, self.label(index), {"source": self.files[index].name,
                                                                    "corner": corner})


TOY_KIND = register(DatasetKind("toy_npy", ToyNpyReader, "image",
                                options=lambda meta: {"scale": float(meta.get("toy_scale", 1.0))}))


# --- recipe 4: a job kind -----------------------------------------------------------------------------------
class ToySquaresWorker:
    batch_size = 1

    def __init__(self, job: ToySquaresJob) -> None:
        self.job = job

    def process(self, shard: Shard) -> dict[str, Any]:
        idx = list(range(shard.start, shard.stop))
        table = pa.table({"index": pa.array(idx, pa.int64()), "square": pa.array([i * i for i in idx], pa.int64())})
        summary = {"shard_id": shard.shard_id, "samples": shard.size, "total": sum(i * i for i in idx)}
        self.job.layout.write_shard(shard, self.job.run_key, {self.job.layout.table_path("squares", shard): table},
                                    summary)
        return summary


@JOBS.register("toy_squares")
class ToySquaresJob(BaseJob):
    """Squares of ``0 … n-1``, ``shard_size`` per shard, under ``<out>/toy-<n>``."""

    kind = "toy_squares"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = {"n": int(config["n"]), "shard_size": int(config.get("shard_size", 4)), "out": config["out"]}
        self.run_key = f"toy-{self.config['n']}"
        self.run_dir = str(Path(self.config["out"]) / self.run_key)
        self.layout = RunLayout(self.run_dir)

    def shards(self) -> list[Shard]:
        return plan_shards(self.config["n"], self.config["shard_size"])

    def is_complete(self, shard: Shard) -> bool:
        return self.layout.is_complete(shard, self.run_key)

    def worker(self, device: str | None = None) -> ToySquaresWorker:
        return ToySquaresWorker(self)

    def reduce(self, summaries: list[dict[str, Any]], failed: list[int]) -> dict[str, Any]:
        records = self.layout.commit_records()
        return {"total": sum(r["summary"]["total"] for r in records), "shards": len(records), "failed": failed}


# --- the runs -----------------------------------------------------------------------------------------------
@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "toy" / "val").mkdir(parents=True)
    for i in range(5):
        np.save(tmp_path / "toy" / "val" / f"{i % 2}_{i:03d}.npy", rng.normal(size=(3, 8, 8)).astype(np.float32))
    return tmp_path / "toy"


@pytest.fixture
def toy_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("smallcnn", 2, width=4, blocks=2)
    return save_checkpoint(tmp_path / "toy.pt", model, {"arch": "smallcnn", "num_classes": 2,
                                                        "arch_kwargs": {"width": 4, "blocks": 2},
                                                        "dataset_kind": "toy_npy", "toy_scale": 2.0})


@pytest.mark.slow
def test_toy_method_metric_and_dataset_kind_run_through_run_job(toy_data, toy_model, tmp_path, prefect_harness):
    from flows.explain import run_job

    config = {"dataset": str(toy_data), "model": str(toy_model), "out": str(tmp_path / "runs"),
              "methods": {"toy_input_energy": {"power": 1.0}}, "metrics": {"toy_peak": {"scale": 3.0}},
              "shard_size": 2, "batch_size": 2}
    result = run_job("explain", config, RunOptions(executor="local"))
    summary = result["summary"]
    assert (summary["samples"], summary["shards_complete"], summary["ok_rows"], summary["errors"]) == (5, 3, 5, 0)
    con = connect(summary["run_dir"])
    metas = [json.loads(r[0]) for r in con.execute("SELECT meta FROM metrics ORDER BY sample_id").fetchall()]
    assert [m["corner"] for m in metas] == [[i, 0.5] for i in range(5)]  # kept in the meta JSON, not a load error
    rows = con.execute("SELECT e.sample_id, e.heatmap, e.scale, e.shape, e.dtype, m.toy_peak, m.toy_row_max "
                       "FROM explanations e JOIN metrics m USING (sample_id, method) ORDER BY sample_id").fetchall()
    assert len(rows) == 5
    reader = ToyNpyReader(toy_data, "val", scale=2.0)  # the checkpoint's toy_scale reached the reader
    for i, (sid, heat, scale, shape, dtype, peak, row_max) in enumerate(rows):
        want = reader.load(i).x.abs().sum(dim=0).numpy()  # power=1 from the config
        got = decode_heatmap({"heatmap": heat, "scale": scale, "shape": shape, "dtype": dtype})
        assert sid == reader.sample_id(i)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * want.max())  # float16 storage
        assert peak == pytest.approx(3.0 * want.max(), rel=1e-6)  # metric on the full-precision map
        np.testing.assert_allclose(row_max, want.max(axis=1), rtol=1e-6)
    info = read_json(Path(summary["run_dir"]) / "run.json")
    assert info["resolved"]["modality"] == "image" and info["config"]["dataset_kind"] == "toy_npy"


@pytest.mark.slow
def test_toy_job_kind_runs_through_run_job_and_resumes(tmp_path, prefect_harness):
    from flows.explain import run_job

    config = {"n": 10, "shard_size": 4, "out": str(tmp_path)}
    result = run_job("toy_squares", config, RunOptions(executor="local"))
    assert result["summary"] == {"total": sum(i * i for i in range(10)), "shards": 3, "failed": []}
    assert result["report"] == []  # BaseJob: no report
    squares = pa.concat_tables(
        [pq.read_table(p) for p in sorted((tmp_path / "toy-10" / "squares").glob("*.parquet"))])
    assert squares.column("square").to_pylist() == [i * i for i in range(10)]
    again = run_job("toy_squares", config, RunOptions(executor="local"))  # every shard complete: none recomputed
    assert again["summary"]["total"] == result["summary"]["total"]
    assert read_json(tmp_path / "toy-10" / "_manifests" / "plan.json")["todo"] == []


@pytest.mark.slow
def test_xai_job_runs_a_registered_kind_from_a_yaml_config(tmp_path, prefect_harness):
    from typer.testing import CliRunner

    from flows.cli import app

    cfg = tmp_path / "squares.yaml"
    cfg.write_text(f"n: 6\nshard_size: 4\nout: {tmp_path}\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["job", "toy_squares", "--config", str(cfg), "--executor", "local",
                                   "--set", "n=7"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "total: 91" in res.stdout  # Σ i² for i < 7: the --set override won; BaseJob.describe printed it
    assert read_json(tmp_path / "toy-7" / "_manifests" / "plan.json")["total"] == 2
    for args, needle in ((["job", "toy_nosuch", "--config", str(cfg)], "toy_nosuch"),
                         (["job", "toy_squares", "--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
                         (["job", "toy_squares", "--config", str(cfg), "--executor", "slurm"], "slurm")):
        bad = CliRunner().invoke(app, args)
        lines = bad.stderr.strip().splitlines()
        assert bad.exit_code == 2 and len(lines) == 1 and needle in lines[0], (args, bad.stderr)
