"""Bring your own model through ``xai run`` (issue 16, part 4, acceptance): a user's plain torchvision ResNet-18
``state_dict`` and a plug-in model factory run over the tiny shapes data without a hand-written sidecar, and every
row's ``pred`` is the saved module's own argmax on the same preprocessed inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from typer.testing import CliRunner

from flows.cli import app
from xcore.data import ImageTransform
from xcore.datasets import DATASETS
from xcore.io.query import connect
from xcore.pipeline.config import ExplainConfig, parse_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

NETS = '''
from torch import nn


class Net(nn.Module):
    """The user's architecture, outside the zoo: conv, BatchNorm, ReLU, conv, global average pool, linear."""

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def make(num_classes: int) -> nn.Module:
    return Net(num_classes)
'''


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics too (a fresh model's are 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _split(data: Path, split: str, transform: ImageTransform) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sample ids, inputs and labels of ``split``, read by the reader and preprocessing the run uses."""
    ds = DATASETS.get("imagenet").open(str(data), split, transform=transform)
    return ([ds.sample_id(i) for i in range(len(ds))], torch.stack([ds.load(i).x for i in range(len(ds))]),
            torch.tensor([ds.label(i) for i in range(len(ds))]))


def _own_argmax(model: nn.Module, data: Path, transform: ImageTransform) -> dict[str, int]:
    """The module's argmax per val sample on the same inputs as the run's."""
    ids, x, _ = _split(data, "val", transform)
    with torch.no_grad():
        return dict(zip(ids, model.eval()(x).argmax(1).tolist(), strict=True))


def _fit_briefly(model: nn.Module, data: Path, transform: ImageTransform, steps: int = 5) -> nn.Module:
    """A few full-batch Adam steps on the train split: a freshly initialised net of this shape predicts one class
    everywhere, which would make the pred check vacuous."""
    _, x, y = _split(data, "train", transform)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _run(args: list[str], run: Path) -> list[tuple[Any, ...]]:
    res = CliRunner().invoke(app, ["run", *args, "--out", str(run.parent), "--run-id", run.name, "-m", "gradient",
                                   "-m", "gradcam", "-p", "deletion_insertion.steps=4", "--shard-size", "5",
                                   "--batch-size", "5", "--executor", "local"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    con = connect(run)
    assert con.execute("SELECT count(*) FROM errors").fetchall() == [(0,)]
    return con.execute("SELECT sample_id, method, status, pred FROM metrics ORDER BY 1, 2").fetchall()


def test_a_plain_torchvision_state_dict_runs_with_arch_and_num_classes(tiny_data, tmp_path, prefect_harness) -> None:
    torch.manual_seed(0)
    model = _seeded(tvm.resnet18(num_classes=6), 1)
    ckpt = tmp_path / "resnet18_shapes.pt"
    torch.save(model.state_dict(), ckpt)
    assert not ckpt.with_suffix(".json").exists()
    run = tmp_path / "runs" / "plain"
    rows = _run(["--dataset", str(tiny_data), "--model", str(ckpt), "--arch", "resnet18", "--num-classes", "6",
                 "--input-size", "32"], run)
    expected = _own_argmax(model, tiny_data, ImageTransform(32))  # ImageNet mean / std: no sidecar names others
    assert len(rows) == 2 * len(expected) == 20 and {r[2] for r in rows} == {"ok"}
    assert {(r[0], r[3]) for r in rows} == set(expected.items())
    assert len(set(expected.values())) > 1  # the check can fail: the model does not predict one class everywhere
    info = json.loads((run / "run.json").read_text())
    assert info["resolved"]["model"] == {"arch": "resnet18", "num_classes": 6, "input_size": 32,
                                         "overridden": ["arch", "input_size", "num_classes"]}


def test_a_plug_in_model_factory_runs_without_a_sidecar(tiny_data, tmp_path, monkeypatch, prefect_harness) -> None:
    transform = ImageTransform(32, None, (0.5,) * 3, (0.25,) * 3)  # what --input-size, --mean and --std say
    plugins = tmp_path / "plugins"
    (plugins / "mypkg").mkdir(parents=True)
    (plugins / "mypkg" / "__init__.py").write_text("")
    (plugins / "mypkg" / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p))
    try:
        from mypkg.nets import make  # type: ignore[import-not-found]

        torch.manual_seed(2)
        model = _fit_briefly(make(num_classes=6), tiny_data, transform)
        ckpt = tmp_path / "mine.pt"
        torch.save({"state_dict": nn.DataParallel(model).state_dict(), "epoch": 7}, ckpt)  # as a training loop saves
        run = tmp_path / "runs" / "factory"
        rows = _run(["--dataset", str(tiny_data), "--model", str(ckpt), "--model-factory", "mypkg.nets:make",
                     "--num-classes", "6", "--input-size", "32", "--mean", "0.5,0.5,0.5", "--std", "0.25",
                     "--std", "0.25", "--std", "0.25"], run)
    finally:
        for name in ("mypkg.nets", "mypkg"):
            sys.modules.pop(name, None)
    expected = _own_argmax(model, tiny_data, transform)
    assert len(rows) == 2 * len(expected) == 20 and {r[2] for r in rows} == {"ok"}
    assert {(r[0], r[3]) for r in rows} == set(expected.items())
    assert len(set(expected.values())) > 1  # the check can fail: the model does not predict one class everywhere
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["model_factory"] == "mypkg.nets:make" and info["config"]["std"] == [0.25] * 3


ACTOR = """
import json, sys
sys.path[:] = [p for p in sys.path if p not in ("", sys.argv[3])]  # the module's folder is only the cwd
import torch
from xcore.pipeline import open_job
kind, config = json.loads(sys.argv[1])
worker = open_job(kind, config).worker("cpu")  # what tasks.runtime.ShardActor does with (kind, config)
with torch.no_grad():
    print(json.dumps(worker.model(torch.load(sys.argv[2], weights_only=True)).tolist()))
"""


def test_a_fresh_process_rebuilds_the_factory_model_from_the_plain_config(tiny_data, tmp_path) -> None:
    """What an actor gets is ``(kind, config dict)``; in a fresh interpreter whose working directory holds the
    factory's module (as ``xai`` from the user's folder, whose ``sys.path`` lacks it), the job imports the module by
    name (working-directory fallback; Ray's workers have the driver's working directory on ``sys.path``) and
    rebuilds the same model."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "byo_actor_nets.py").write_text(NETS)
    sys.path.insert(0, str(work))
    try:
        from byo_actor_nets import make  # type: ignore[import-not-found]

        torch.manual_seed(4)
        model = _seeded(make(6), 5)
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("byo_actor_nets", None)
    torch.save({"model": model.state_dict()}, tmp_path / "net.pt")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    torch.save(x, tmp_path / "x.pt")
    config = parse_config(ExplainConfig, {"dataset": str(tiny_data), "model": str(tmp_path / "net.pt"),
                                          "out": str(tmp_path / "runs"), "methods": {"gradient": {}},
                                          "model_factory": "byo_actor_nets:make", "num_classes": 6}).model_dump()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(ACTOR), json.dumps(["explain", config]),
                           str(tmp_path / "x.pt"), str(work)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = torch.tensor(json.loads(proc.stdout.splitlines()[-1]))  # another process: its own thread count
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-6)
