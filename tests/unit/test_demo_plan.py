"""The ten-minute demo's plan (``flows/cli_demo.py``): which model each part explains, the order two workers train
the missing models in, the order the parts run in, and the retry of a model trained below its accuracy band."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import xcore.explain
import xcore.metrics
from flows import cli_demo
from xcore.data.base import Dataset
from xcore.datasets import DATASETS, modalities
from xcore.datasets.base import DatasetKind, Demo, companions


def test_every_modality_has_a_quick_demo_of_registered_names() -> None:
    kinds = modalities()
    assert set(kinds) == {"image", "skeleton", "video"}
    for kind in [*kinds.values(), *companions(kinds["image"])]:
        spec = cli_demo.demo_spec(kind, full=False)
        assert spec is kind.quick and spec is not None
        assert set(spec.methods) <= set(xcore.explain.available())
        assert set(spec.metrics) <= set(xcore.metrics.available())
        if kind.quick is not kind.demo:  # an evenly spaced subset (COCO's small set is explained whole)
            assert spec.samples is not None and kind.demo.samples is None
        assert cli_demo.demo_spec(kind, full=True) is kind.demo


def test_the_pointing_game_explains_the_image_demo_model() -> None:
    coco, imagenet = DATASETS.get("coco"), DATASETS.get("imagenet")
    assert companions(imagenet) == [coco]
    assert cli_demo.model_owner(coco, full=False) is imagenet
    assert cli_demo.model_owner(coco, full=True) is imagenet
    assert cli_demo.model_owner(imagenet, full=False) is imagenet


def _kind(name: str, seconds: float, model: Path, **kw: Any) -> DatasetKind:
    spec = Demo(str(model), ("gradcam",), train_seconds=seconds, **kw)
    return DatasetKind(name, Dataset, "image", demo=spec, quick=spec)  # type: ignore[arg-type]


def test_training_order_longest_first_then_shortest_and_parts_by_readiness(tmp_path: Path) -> None:
    present = tmp_path / "present.pt"
    present.write_bytes(b"")
    kinds = [_kind("a", 60, tmp_path / "a.pt"), _kind("b", 240, tmp_path / "b.pt"),
             _kind("c", 90, tmp_path / "c.pt"), _kind("d", 500, present)]
    # d's model is there (nothing to train); b sets the end, then a before c so the first part can start soonest
    assert cli_demo.training_order(kinds, full=False) == ["b", "a", "c"]
    assert [cli_demo.train_seconds(k, False) for k in kinds] == [60, 240, 90, 0]


def test_a_model_below_the_band_is_retrained_once_with_the_next_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seeds: list[int] = []

    def train(root: Path, out: Path, *, progress: Any = None, seed: int = 0, epochs: int = 1) -> dict[str, Any]:
        seeds.append(seed)
        out.write_bytes(b"weights")
        return {"val_accuracy": 0.5 if seed == 3 else 0.95}

    spec = Demo(str(tmp_path / "m.pt"), ("gradcam",), train={"seed": 3, "epochs": 2}, min_accuracy=0.9)
    kind = DatasetKind("fake_demo", Dataset, "image", train=train, generate=lambda: tmp_path,  # type: ignore[arg-type]
                       demo=spec, quick=spec)
    monkeypatch.setitem(DATASETS._items, "fake_demo", kind)
    assert cli_demo.demo_model("fake_demo", full=False) == str(tmp_path / "m.pt")
    assert seeds == [3, 4]
    out = " ".join(capsys.readouterr().out.split())
    assert "retraining the image demo model with seed 4: val accuracy 0.500 is below the demo's band (>= 0.9)" in out
    seeds.clear()
    assert cli_demo.demo_model("fake_demo", full=False) and seeds == []  # present: never retrained


def test_skipping_validation_epochs_leaves_the_weights_and_accuracy_unchanged() -> None:
    import torch

    from xcore.models.train import fit

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    runs = []
    for every in (1, 3):
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                  torch.nn.Linear(8, 3))
        seen: list[Any] = []
        acc = fit(net, (x[:30], y[:30]), (x[30:], y[30:]), prepare=lambda xb, g: xb + 0.1 * torch.randn(
            xb.shape, generator=g), prepare_eval=lambda xb: xb, epochs=5, batch_size=8, lr=1e-2,
            weight_decay=0.0, seed=0, progress=lambda info, seen=seen: seen.append(info["val_accuracy"]),
            val_every=every)
        runs.append((acc, net.state_dict(), seen))
    (acc1, sd1, seen1), (acc3, sd3, seen3) = runs
    assert acc1 == acc3 and all(torch.equal(sd1[k], sd3[k]) for k in sd1)
    assert seen3 == [None, None, seen1[2], None, seen1[4]] and None not in seen1
