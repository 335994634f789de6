"""Bring your own model (issue 16, part 4): a checkpoint without a hand-written sidecar, described by the job
config's model keys (``--arch``, ``--num-classes``, ``--input-size``, ``--mean``, ``--std``, ``--model-factory``),
with its state dict as saved by plain PyTorch, wrapped in a training checkpoint or by DataParallel.

Every loaded model is compared with the module that was saved: bitwise-equal logits on the same inputs (the same
CPU ops on the same weights and buffers). Messages are compared as whole strings where they are hand-derivable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from typer.testing import CliRunner

from xcore.errors import UsageError
from xcore.models import SmallCNN, save_checkpoint
from xcore.models.checkpoint import load_checkpoint, load_factory, merge_meta, read_meta, read_weights
from xcore.pipeline.base import job_model, model_identity
from xcore.pipeline.config import ExplainConfig, model_overrides, parse_config

ROOT = Path(__file__).resolve().parents[2]
RESNET = {"arch": "resnet18", "num_classes": 6}

NETS = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 6, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class Wrapped(nn.Module):  # its own keys all start with "module."
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.module = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x):
        return self.module(x.flatten(1))


def make(num_classes):
    return Net(num_classes)


def make_fixed():
    return Net(6, width=3)


def make_kw(**kw):
    return Net(**kw)


NOT_CALLABLE = 3


def not_a_module(num_classes):
    return 3


def broken(num_classes):
    raise RuntimeError("no weights\\nhere")
'''


def _randomise_buffers(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics (a fresh model's are 0 / 1), so that loading the buffers is tested too."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor]:
    """A plain torchvision ResNet-18 with 6 classes (seeded weights and BatchNorm statistics) and two inputs."""
    torch.manual_seed(0)
    model = _randomise_buffers(tvm.resnet18(num_classes=6), 1)
    return model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's package ``byo_unit_pkg.nets`` on ``sys.path`` (removed from ``sys.modules`` afterwards)."""
    pkg = tmp_path / "plugins" / "byo_unit_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(pkg.parent))
    yield "byo_unit_pkg.nets"
    for name in ("byo_unit_pkg.nets", "byo_unit_pkg"):
        sys.modules.pop(name, None)


def test_a_plain_state_dict_loads_with_arch_and_num_classes_and_gives_the_same_logits(resnet, tmp_path) -> None:
    model, x = resnet
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"checkpoint metadata {tmp_path / 'mine.json'} does not exist (write it with the arch, num_classes, "
        "input_size, mean and std keys, or give --arch NAME or --model-factory package.module:fn with "
        "--num-classes N; torchvision weight files need none)")
    with pytest.raises(UsageError, match="does not exist"):  # a builder without the class count is not enough
        load_checkpoint(path, "cpu", {"arch": "resnet18"})
    loaded, meta = load_checkpoint(path, "cpu", {**RESNET, "input_size": None})
    assert meta == {**RESNET, "overridden": ["arch", "num_classes"]}
    assert not loaded.training and torch.equal(_logits(loaded, x), _logits(model, x))


WRAPS: dict[str, Callable[[nn.Module], Any]] = {
    "state_dict": lambda m: {"state_dict": m.state_dict(), "epoch": 3, "best_acc": torch.tensor(0.5)},
    "model": lambda m: {"model": m.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
    "model_state_dict": lambda m: {"model_state_dict": m.state_dict(), "epoch": 1},
    "DataParallel": lambda m: nn.DataParallel(m).state_dict(),
}


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_wrapped_and_data_parallel_state_dicts_load_identically(resnet, tmp_path, wrap) -> None:
    model, x = resnet
    path = tmp_path / "wrapped.pt"
    torch.save(WRAPS[wrap](model), path)
    saved = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in saved) == (wrap == "DataParallel")
    loaded, _ = load_checkpoint(path, "cpu", RESNET)
    assert torch.equal(_logits(loaded, x), _logits(model, x))


def test_the_parallel_prefix_is_stripped_only_when_every_key_has_it_and_the_model_does_not(tmp_path) -> None:
    t = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save({"module.a": t, "module.b": t}, path)
    assert list(read_weights(path, ["a", "b"])) == ["a", "b"]
    assert list(read_weights(path)) == ["a", "b"]
    assert list(read_weights(path, ["module.a", "module.b"])) == ["module.a", "module.b"]  # the model's own name
    torch.save({"module.a": t, "b": t}, path)  # not every key: left as it is
    assert list(read_weights(path, ["a", "b"])) == ["module.a", "b"]
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(UsageError) as info:
        read_weights(path)
    assert str(info.value) == (f"checkpoint {path} does not hold a state_dict (nor one under state_dict, "
                               "model_state_dict, model)")


def test_a_model_whose_own_keys_start_with_module_keeps_them(nets, tmp_path) -> None:
    torch.manual_seed(3)
    model = load_factory(f"{nets}:Wrapped")(num_classes=4).eval()
    path = tmp_path / "wrapped_own.pt"
    torch.save(model.state_dict(), path)
    loaded, meta = load_checkpoint(path, "cpu", {"model_factory": f"{nets}:Wrapped", "num_classes": 4})
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert torch.equal(_logits(loaded, x), _logits(model, x)) and meta["model_factory"] == f"{nets}:Wrapped"


def test_a_mismatch_lists_missing_unexpected_and_shapes_on_one_line(resnet, tmp_path) -> None:
    model, _ = resnet
    state = model.state_dict()
    path = tmp_path / "bad.pt"
    bad = {k: v for k, v in state.items() if k != "fc.bias"} | {"extra.weight": torch.zeros(2),
                                                                  "extra.bias": state["fc.bias"]}
    torch.save(bad, path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path, "cpu", RESNET)
    assert str(info.value) == (f"checkpoint {path} does not match ResNet: missing (1): fc.bias; "
                               "unexpected (2): extra.bias, extra.weight")
    torch.save(state, path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path, "cpu", {**RESNET, "num_classes": 10})
    assert str(info.value) == (f"checkpoint {path} does not match ResNet: shape of file vs model (2): "
                               "fc.bias (6,) vs (10,), fc.weight (6, 512) vs (10, 512)")
    # another architecture: first three + counts; ResNet-18 has 102 entries besides its 20 num_batches_tracked
    # (conv1 + bn1: 5, 8 basic blocks: 8 x 10, 3 downsamples: 3 x 5, fc: 2), this SmallCNN 20 (3 convs, 3 BatchNorms
    # with num_batches_tracked, classifier weight and bias): nothing in common
    torch.save(SmallCNN(6, width=4, blocks=2).state_dict(), path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path, "cpu", RESNET)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"checkpoint {path} does not match ResNet: missing (102): bn1.bias, bn1.running_mean, bn1.running_var, "
        "...; unexpected (20): classifier.bias, classifier.weight, features.0.weight, ...")


@pytest.mark.parametrize(("spec", "expected"), [
    ("nocolon", "model factory 'nocolon': use package.module:function"),
    ("byo_unit_pkg.nets:", "model factory 'byo_unit_pkg.nets:': use package.module:function"),
    ("bad name:make", "model factory 'bad name:make': use package.module:function"),
    ("byo_no_such_module:make",
     "cannot load model factory 'byo_no_such_module:make': ModuleNotFoundError: No module named 'byo_no_such_module'"),
    ("byo_unit_pkg.nets:nosuch", "cannot load model factory 'byo_unit_pkg.nets:nosuch': AttributeError: module "
     "'byo_unit_pkg.nets' has no attribute 'nosuch'"),
    ("byo_unit_pkg.nets:NOT_CALLABLE", "model factory 'byo_unit_pkg.nets:NOT_CALLABLE' is a int, not a function"),
    ("byo_unit_pkg.nets:not_a_module",
     "model factory 'byo_unit_pkg.nets:not_a_module' returned a int, not a torch nn.Module"),
    ("byo_unit_pkg.nets:broken", "model factory 'byo_unit_pkg.nets:broken' failed: RuntimeError: no weights here"),
])
def test_a_bad_factory_is_a_one_line_usage_error(nets, tmp_path, spec, expected) -> None:
    path = tmp_path / "any.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path, "cpu", {"model_factory": spec, "num_classes": 6})
    assert str(info.value) == expected


def test_factories_get_num_classes_and_the_sidecars_arch_kwargs_when_they_take_them(nets, tmp_path) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    for spec, built, meta in ((f"{nets}:make", lambda: load_factory(f"{nets}:make")(6), None),
                              (f"{nets}:make_fixed", lambda: load_factory(f"{nets}:make_fixed")(), None),
                              (f"{nets}:make_kw", lambda: load_factory(f"{nets}:make_kw")(num_classes=5, width=2),
                               {"model_factory": f"{nets}:make_kw", "num_classes": 5, "arch_kwargs": {"width": 2}})):
        model = _randomise_buffers(built(), 7)
        path = tmp_path / f"{spec.rpartition(':')[2]}.pt"
        torch.save({"state_dict": model.state_dict()}, path)
        if meta is None:  # no sidecar: the overrides alone
            loaded, _ = load_checkpoint(path, "cpu", {"model_factory": spec, "num_classes": 6})
        else:  # a sidecar naming the factory and its keyword arguments
            path.with_suffix(".json").write_text(json.dumps(meta))
            loaded, _ = load_checkpoint(path)
        assert torch.equal(_logits(loaded, x), _logits(model, x)), spec


def test_a_factory_module_in_the_working_directory_is_found_as_ray_workers_find_it(tmp_path, monkeypatch) -> None:
    (tmp_path / "byo_cwd_nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        fn = load_factory("byo_cwd_nets:make")
        assert fn(3).head.out_features == 3 and sys.path[-1] == str(tmp_path)
    finally:
        sys.modules.pop("byo_cwd_nets", None)


def test_overrides_replace_the_sidecars_keys(tmp_path) -> None:
    torch.manual_seed(8)
    model = _randomise_buffers(SmallCNN(6, width=4, blocks=2), 9)
    path = tmp_path / "small.pt"
    sidecar = {"arch": "smallcnn", "num_classes": 6, "arch_kwargs": {"width": 4, "blocks": 2}, "input_size": 48,
               "resize": 56, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5], "dataset_kind": "imagenet"}
    save_checkpoint(path, model, sidecar)
    saved = read_meta(path)
    assert {k: saved[k] for k in sidecar} == sidecar and "overridden" not in saved
    meta = read_meta(path, {"input_size": 32, "mean": [0.4, 0.4, 0.4], "std": None})
    assert {k: meta.get(k) for k in (*sidecar, "overridden")} == {
        **sidecar, "input_size": 32, "resize": None, "mean": [0.4, 0.4, 0.4], "overridden": ["input_size", "mean"]}
    same = read_meta(path, {"arch": "smallcnn", "num_classes": 6})  # the same builder keeps its keyword arguments
    assert same["arch_kwargs"] == {"width": 4, "blocks": 2} and same["resize"] == 56
    other = read_meta(path, {"arch": "resnet18"})
    assert (other["arch"], "arch_kwargs" in other, other["num_classes"]) == ("resnet18", False, 6)
    plug = read_meta(path, {"model_factory": "pkg.mod:fn"})
    assert ("arch" in plug, "arch_kwargs" in plug, plug["model_factory"]) == (False, False, "pkg.mod:fn")
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(10))
    loaded, meta = load_checkpoint(path, "cpu", {"mean": [0.4, 0.4, 0.4], "num_classes": 6})
    assert torch.equal(_logits(loaded, x), _logits(model, x)) and meta["mean"] == [0.4, 0.4, 0.4]
    with pytest.raises(UsageError, match=r"does not match ResNet: missing \(102\)"):  # the builder was replaced
        load_checkpoint(path, "cpu", {"arch": "resnet18"})
    assert merge_meta({"arch": "a", "x": 1}, None) == {"arch": "a", "x": 1}


def test_torchvision_weight_files_keep_their_metadata_and_take_overrides(tmp_path) -> None:
    path = tmp_path / "resnet18-f37072fd.pth"
    path.write_bytes(b"")
    imagenet = {"arch": "resnet18", "num_classes": 1000, "input_size": 224, "resize": 256,
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "source": "torchvision"}
    assert read_meta(path) == imagenet
    assert read_meta(path, {"num_classes": 6, "input_size": 32}) == {
        **{k: v for k, v in imagenet.items() if k != "resize"}, "num_classes": 6, "input_size": 32,
        "overridden": ["input_size", "num_classes"]}


BASE = {"dataset": "d", "model": "m.pt", "methods": {"gradient": {}}}


def test_config_model_keys_parse_lists_and_are_the_overrides() -> None:
    cfg = parse_config(ExplainConfig, {**BASE, "arch": "resnet18", "num_classes": 6, "input_size": 32,
                                       "mean": "0.485, 0.456,0.406", "std": ["0.229", "0.224,0.225"]})
    assert (cfg.mean, cfg.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert model_overrides(cfg.model_dump()) == {"arch": "resnet18", "num_classes": 6, "input_size": 32,
                                                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert model_overrides(parse_config(ExplainConfig, BASE).model_dump()) == {}
    assert parse_config(ExplainConfig, {**BASE, "mean": []}).mean is None


@pytest.mark.parametrize(("extra", "expected"), [
    ({"arch": "resnet18", "model_factory": "a.b:c"},
     "model_factory: give --arch or --model-factory, not both (got 'a.b:c')"),
    ({"std": "0.2,0,0.2"}, "std: every std must be positive (got '0.2,0,0.2')"),
    ({"mean": "0.5,0.5,0.5", "std": "0.2,0.2"}, "std: 2 std values for 3 mean values (got '0.2,0.2')"),
    ({"num_classes": 0}, "num_classes: Input should be greater than or equal to 1 (got 0)"),
])
def test_config_model_key_problems_are_one_line(extra, expected) -> None:
    with pytest.raises(UsageError) as info:
        parse_config(ExplainConfig, {**BASE, **extra})
    assert str(info.value) == expected


def test_the_cli_offers_the_model_keys_and_parses_list_options(tmp_path) -> None:
    from flows.cli import app

    runner = CliRunner()
    for command in ("run", "roar", "filters"):
        text = runner.invoke(app, [command, "--help"], terminal_width=200).stdout
        assert all(f"--{o}" in text for o in ("arch", "model-factory", "num-classes", "input-size", "mean", "std"))
    res = runner.invoke(app, ["run", "--dataset", str(tmp_path), "--model", str(tmp_path / "m.pt"), "-m", "gradient",
                              "--mean", "0.5,0.5", "--mean", "0.5", "--std", "0.2", "--std", "0.2"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: std: 2 std values for 3 mean values (got ['0.2', '0.2'])"


def test_jobs_load_with_the_overrides_and_the_overrides_are_part_of_the_run_key(tiny_data, tmp_path) -> None:
    """Explain, filters (and its reference split's job) and roar (and its explain jobs) all load through
    ``job_model`` with the config's keys; a plain SmallCNN state dict stands in for the user's model (cheap)."""
    from xcore.pipeline.explain_job import ExplainJob
    from xcore.pipeline.filters_job import FiltersJob
    from xcore.pipeline.roar_job import RoarJob

    torch.manual_seed(14)
    model = _randomise_buffers(SmallCNN(6, width=4, blocks=2), 15)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(16))
    given = {"arch": "smallcnn", "num_classes": 6, "input_size": 32, "mean": [0.5, 0.5, 0.5],
             "std": [0.25, 0.25, 0.25]}
    with pytest.raises(UsageError, match="does not match SmallCNN"):  # width 16, blocks 4 by default
        ExplainJob({"dataset": str(tiny_data), "model": str(plain), "methods": {"gradient": {}}, **given})
    cfg = {"dataset": str(tiny_data), "model": str(plain), "out": str(tmp_path / "runs"),
           "methods": {"gradient": {}}, **given}
    (tmp_path / "plain.json").write_text(json.dumps({"arch_kwargs": {"width": 4, "blocks": 2}}))  # a partial sidecar
    job = ExplainJob(cfg)
    transform = job.reader_kwargs["transform"]
    assert (transform.size, transform.mean, transform.std) == (32, (0.5,) * 3, (0.25,) * 3)
    assert torch.equal(_logits(job.worker("cpu").model, x), _logits(model, x))  # what every actor runs
    assert model_identity(job.config, job.model_meta)["overrides"] == given
    # the same checkpoint described by a full sidecar instead: same model, but another run key (the keys are in it)
    with_sidecar = tmp_path / "sidecar.pt"
    with_sidecar.write_bytes(plain.read_bytes())
    with_sidecar.with_suffix(".json").write_text(json.dumps({**given, "arch_kwargs": {"width": 4, "blocks": 2}}))
    plain_job = ExplainJob({**{k: v for k, v in cfg.items() if k not in given}, "model": str(with_sidecar)})
    assert plain_job.model_meta["arch"] == "smallcnn" and "overrides" not in model_identity(plain_job.config,
                                                                                            plain_job.model_meta)
    assert torch.equal(_logits(plain_job.worker("cpu").model, x), _logits(model, x))
    assert plain_job.run_key != job.run_key
    filters = FiltersJob({**cfg, "methods": {"gradamap": {}}, "reference_split": "train"})
    assert filters.reference is not None and model_overrides(filters.reference.config) == given
    assert torch.equal(_logits(job_model(filters.reference.config)[0], x), _logits(model, x))
    roar = {**cfg, "methods": {"gradient": {}}, "epochs": 1, "train_batch_size": 4, "lr": 0.1, "weight_decay": 0.0}
    assert all(model_overrides(j.config) == given for j in RoarJob(roar).explain.values())
    # the retrain-free check evaluates the same overridden model; retraining rebuilds the same architecture fresh
    from xcore.models.checkpoint import build_from_meta
    from xcore.pipeline.roar_worker import RoarWorker

    no_retrain = RoarJob({**roar, "retrain": False})
    assert torch.equal(_logits(RoarWorker(no_retrain, "cpu").clean, x), _logits(model, x))
    fresh = build_from_meta(RoarJob(roar).model_meta)
    assert [k for k, _ in fresh.state_dict().items()] == list(model.state_dict())
