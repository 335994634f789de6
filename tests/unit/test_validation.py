"""Input validated up front (issue 12, findings 7, 8 and 10): ``--out`` writable and no file, ``-p`` values of the
declared type, a NaN / inf model output one ``predict`` error, checkpoint errors that name what was refused.

The CLI's one line and exit code 2 before Ray or Prefect for these cases: ``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import xcore.explain as E
import xcore.metrics as M
from flows.cli_options import parse_params
from xcore.errors import UsageError
from xcore.pipeline.config import ExplainConfig, parse_config

# --- finding 7: --out --------------------------------------------------------------------------------------


def _config(out: Path) -> dict[str, Any]:
    return {"dataset": "data", "model": "model.pt", "methods": {"gradient": {}}, "out": str(out)}


def _refused(out: Path) -> str:
    with pytest.raises(UsageError) as info:
        parse_config(ExplainConfig, _config(out))
    message = str(info.value)
    assert "\n" not in message and str(out) in message
    return message


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("not a folder")
    assert "is a file" in _refused(tmp_path / "runs")


def test_out_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    message = _refused(tmp_path / "f" / "runs" / "deeper")
    assert f"{tmp_path / 'f'} is a file" in message and "cannot be created" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder; the refused write itself is "
                                              "checked by test_out_on_a_read_only_filesystem_is_refused")
def test_out_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert f"{ro} is not writable: Permission denied" in _refused(ro / "runs")
        assert f"{ro} is not writable" in _refused(ro)
    finally:
        ro.chmod(0o700)


def test_out_on_a_read_only_filesystem_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe write fails as on a read-only mount (EROFS), also for root: the folder is named with the reason."""

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert f"{tmp_path} is not writable: {os.strerror(errno.EROFS)}" in _refused(tmp_path / "runs")


def test_a_writable_out_passes_and_nothing_is_left(tmp_path: Path) -> None:
    cfg = parse_config(ExplainConfig, _config(tmp_path / "new" / "runs"))
    assert cfg.out == str(tmp_path / "new" / "runs")
    assert list(tmp_path.iterdir()) == []  # not created, and the probe file removed
    (tmp_path / "runs").mkdir()
    parse_config(ExplainConfig, _config(tmp_path / "runs"))
    assert list((tmp_path / "runs").iterdir()) == []


# --- finding 8: -p values by the parameter's declared type --------------------------------------------------


def test_cli_values_are_read_by_the_declared_type() -> None:
    got = parse_params(["gradcam", "deletion_insertion", "lime"],
                       ["gradcam.layer=7", "deletion_insertion.steps=8", "deletion_insertion.fold_batchnorm=false",
                        "lime.hide=0.5", "lime.mean=[0.5, 0.5, 0.5]"])
    assert got == {"gradcam": {"layer": "7"},
                   "deletion_insertion": {"steps": 8, "fold_batchnorm": False},
                   "lime": {"hide": 0.5, "mean": [0.5, 0.5, 0.5]}}
    for text in ("true", "2.10", "1e2", "null_layer", "0"):  # a layer name is the text as typed
        assert parse_params(["gradcam"], [f"gradcam.layer={text}"]) == {"gradcam": {"layer": text}}
    assert parse_params(["gradcam"], ["gradcam.layer=null"]) == {"gradcam": {"layer": None}}


@pytest.mark.parametrize(("spec", "expected"), [
    ("deletion_insertion.steps=abc", "steps='abc' does not fit its type: expected int"),
    ("deletion_insertion.steps=2.5", "steps='2.5' does not fit its type: expected int"),
    ("deletion_insertion.steps=true", "steps='true' does not fit its type: expected int"),
    ("deletion_insertion.fold_batchnorm=yes", "fold_batchnorm='yes' does not fit its type: expected bool"),
    ("lime.mean=abc", "mean='abc' does not fit its type: expected list of float"),
    ("lime.mean=[1, \"a\"]", "expected list of float"),
])
def test_a_cli_value_that_does_not_fit_is_one_line_naming_it(spec: str, expected: str) -> None:
    name = spec.split(".")[0]
    with pytest.raises(UsageError) as info:
        parse_params([name], [spec])
    assert expected in str(info.value) and f"{name!r}" in str(info.value) and "\n" not in str(info.value)


def test_config_values_get_the_same_rule_in_validate() -> None:
    """``xai job`` YAML and Prefect parameters reach ``validate`` typed: a number for a layer is its name."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    params = E.validate("gradcam", net, {"layer": 0})
    assert params["layer"] == "0"
    maps = E.run("gradcam", net, torch.rand(2, 3, 8, 8), None, **params)
    assert maps.shape == (2, 8, 8) and torch.isfinite(maps).all()
    assert M.validate("deletion_insertion", {"steps": "8"})["steps"] == 8
    assert M.validate("deletion_insertion", {"steps": 8.0})["steps"] == 8
    for bad in ({"steps": "abc"}, {"steps": True}, {"steps": [8]}, {"substrate": 3.5j}):
        with pytest.raises(UsageError, match=r"metric 'deletion_insertion': parameter \w+=.* does not fit"):
            M.validate("deletion_insertion", bad)
    with pytest.raises(UsageError, match=r"layer=True does not fit its type: expected str or None"):
        E.validate("gradcam", net, {"layer": True})


def test_every_published_default_fits_its_declared_type() -> None:
    """One mechanism for methods and metrics: every parameter is declared, and its default fits unchanged."""
    from xcore.core.param_types import declared_types, fit_value

    for kind, registry in (("method", E.METHODS), ("metric", M.METRICS)):
        for name in registry.names():
            entry = registry.get(name)
            declared = declared_types(entry.fn)
            assert set(entry.defaults) <= set(declared), (kind, name)
            for key, default in entry.defaults.items():
                assert fit_value(declared[key], default) is default or fit_value(declared[key], default) == default


def test_type_text() -> None:
    from collections.abc import Sequence

    from xcore.core.param_types import type_text

    assert type_text(int | tuple[int, int] | None) == "int or [int, int] or None"
    assert type_text(Sequence[float]) == "list of float"


# --- finding 10: a NaN / inf model output is one predict error ---------------------------------------------


class NotFiniteWhere(nn.Module):
    """``inner``'s logits, NaN for inputs whose mean exceeds ``nan_above`` and +inf above ``inf_above``."""

    def __init__(self, inner: nn.Module, nan_above: float, inf_above: float) -> None:
        super().__init__()
        self.inner, self.nan_above, self.inf_above = inner, nan_above, inf_above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        level = x.flatten(1).mean(dim=1)[:, None]
        out = torch.where(level > self.nan_above, torch.full_like(out, float("nan")), out)
        return torch.where(level > self.inf_above, torch.full_like(out, float("inf")), out)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 synthetic 32 px images and an untrained SmallCNN checkpoint (no training)."""
    from xcore.data import generate_images
    from xcore.models import save_checkpoint
    from xcore.models.smallcnn import SmallCNN

    tmp = tmp_path_factory.mktemp("validation")
    data = generate_images(tmp / "shapes", n_train_per_class=1, n_val=8, size=32)
    torch.manual_seed(0)
    model = save_checkpoint(tmp / "m.pt", SmallCNN(6, width=4, blocks=2).eval(), {
        "arch": "smallcnn", "num_classes": 6, "arch_kwargs": {"width": 4, "blocks": 2}, "input_size": 32,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    return {"dataset": str(data), "model": str(model), "out": str(tmp / "runs"),
            "methods": {"gradient": {}, "random": {}}, "metrics": {"deletion_insertion": {"steps": 4}},
            "shard_size": 4, "batch_size": 3}


def test_a_nan_model_output_is_one_predict_error_per_sample(small_run: dict[str, Any]) -> None:
    from xcore.io.query import connect
    from xcore.models import load_checkpoint
    from xcore.pipeline import ExplainJob
    from xcore.pipeline.explain_worker import ExplainWorker

    job = ExplainJob(small_run)
    dataset = job.open_dataset()
    levels = sorted(float(dataset.load(i).x.mean()) for i in range(len(dataset)))
    assert len(set(levels)) == len(levels) == 8
    model, _ = load_checkpoint(job.config["model"])
    worker = ExplainWorker(job, NotFiniteWhere(model, nan_above=levels[4], inf_above=levels[6]), dataset, "cpu")
    for shard in job.shards():
        worker.process(shard)
    bad_ids = {str(dataset.sample_id(i)) for i in range(8) if float(dataset.load(i).x.mean()) > levels[4]}
    inf_ids = {str(dataset.sample_id(i)) for i in range(8) if float(dataset.load(i).x.mean()) > levels[6]}
    assert len(bad_ids) == 3 and len(inf_ids) == 1

    con = connect(job.run_dir)
    errors = con.execute("SELECT sample_id, stage, method, error_type, message FROM errors").fetchall()
    assert sorted(e[0] for e in errors) == sorted(bad_ids)  # one row per sample, nothing at later stages
    for sample_id, stage, method, etype, message in errors:
        assert (stage, method, etype) == ("predict", None, "FloatingPointError")
        what = "6 inf" if sample_id in inf_ids else "6 NaN"
        assert message == f"model output is not finite ({what} among its 6 logits)"
    rows = con.execute("SELECT sample_id, method, status, error_type, deletion_auc FROM metrics").fetchall()
    assert len(rows) == 8 * 2  # every sample keeps one metrics row per method
    for sample_id, _method, status, etype, auc in rows:
        if sample_id in bad_ids:
            assert (status, etype, auc) == ("error", "predict:FloatingPointError", None)
        else:
            assert status == "ok" and etype is None and auc is not None
    explained = {r[0] for r in con.execute("SELECT DISTINCT sample_id FROM explanations").fetchall()}
    assert explained == {str(dataset.sample_id(i)) for i in range(8)} - bad_ids


# --- finding 10: checkpoint errors ---------------------------------------------------------------------------


class _CallsEval:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, ("0",))


class _CallsGetcwd:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def _with_sidecar(path: Path) -> Path:
    path.with_suffix(".json").write_text('{"arch": "smallcnn", "num_classes": 6}')
    return path


def test_a_checkpoint_with_a_blocked_global_names_it_without_the_unsafe_advice(tmp_path: Path) -> None:
    from xcore.models import load_checkpoint

    zipped = _with_sidecar(tmp_path / "zipped.pt")
    torch.save({"w": torch.zeros(2), "x": _CallsEval()}, zipped)
    plain = _with_sidecar(tmp_path / "plain.pt")
    plain.write_bytes(pickle.dumps(_CallsGetcwd(), protocol=2))
    for path, name in ((zipped, "eval"), (plain, f"{os.getcwd.__module__}.getcwd")):
        with pytest.raises(UsageError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert f"needs the global {name}," in message, message
        assert "weights_only" not in message and "likely succeed" not in message and "\n" not in message


def test_a_directory_as_checkpoint_says_so(tmp_path: Path) -> None:
    from xcore.models import load_checkpoint, weights_digest
    from xcore.models.zoo import read_state_dict

    folder = tmp_path / "ckpt.pt"
    folder.mkdir()
    for call in (load_checkpoint, weights_digest, read_state_dict):
        with pytest.raises(UsageError, match=r"ckpt\.pt is a directory, not a checkpoint file"):
            call(folder)
    with pytest.raises(UsageError, match=r"missing\.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_an_annotation_that_cannot_be_resolved_is_not_checked() -> None:
    """A plug-in's parameter annotated with a name imported only for type checking: its value passes as given."""
    from xcore.core.param_types import declared_types, fit_params

    def method(model: Any, x: Any, target: Any, *, steps: int = 3, helper: NotImportedHere = None) -> Any:  # noqa: F821
        return None

    assert declared_types(method) == {"steps": int, "helper": Any}
    assert fit_params("method", "plug", method, {"steps": "4", "helper": "x"}) == {"steps": 4, "helper": "x"}
