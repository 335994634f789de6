"""The typed configs: one model per job kind from which the CLI options and the flow parameters derive."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, Field

from flows.cli_options import model_options, with_model_options
from tasks.options import RunOptions
from xcore.errors import UsageError
from xcore.pipeline.config import ExplainConfig, FiltersConfig, RoarConfig, cli_fields, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_parse_config_fills_defaults_and_makes_paths_absolute() -> None:
    cfg = parse_config(ExplainConfig, {"dataset": "d", "model": "m.pt", "methods": {"gradcam": None},
                                       "run_id": None})
    assert cfg.dataset == str(Path("d").absolute()) and cfg.out == str(Path("runs").absolute())
    assert cfg.methods == {"gradcam": {}} and cfg.metrics == {"deletion_insertion": {}}
    assert (cfg.shard_size, cfg.batch_size, cfg.split, cfg.target, cfg.reader) == (256, 16, "val", "pred", {})


@pytest.mark.parametrize(("config", "needle"), [
    ({"model": "m", "methods": {"a": {}}}, "config needs dataset"),
    ({"dataset": "d", "model": "m", "methods": {}}, "name at least one explanation method"),
    ({"dataset": "d", "model": "m", "methods": {"a": {}}, "target": "bogus"}, "target: "),
    ({"dataset": "d", "model": "m", "methods": {"a": {}}, "shard_size": 0}, "shard_size: "),
    ({"dataset": "d", "model": "m", "methods": {"a": {}}, "colour": 1}, "unknown config key 'colour'"),
])
def test_config_problems_are_one_line_usage_errors(config: dict, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_config(ExplainConfig, config)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_every_plain_field_is_a_cli_option_and_a_new_field_needs_no_cli_change() -> None:
    names = {p.name for p in model_options(ExplainConfig)}
    assert names == set(ExplainConfig.model_fields) - {"methods", "metrics", "reader"} == set(cli_fields(ExplainConfig))

    class Grown(BaseModel):  # a config that gained a key: the command gains the option, help text included
        colour: str = Field("red", description="the colour")
        count: int | None = Field(None, description="how many")

    seen: dict = {}

    @with_model_options(Grown, RunOptions)
    def cmd(flag: bool = False, values: list[dict] | None = None) -> None:
        seen["values"] = values

    params = inspect.signature(cmd).parameters
    assert list(params) == ["flag", "colour", "count", *RunOptions.model_fields]
    assert params["colour"].default.help == "the colour" and params["count"].annotation == int | None
    defaults = {k: f.default for k, f in RunOptions.model_fields.items()}
    cmd(flag=True, colour="blue", count=None, **{**defaults, "executor": "local"})
    assert seen["values"] == [{"colour": "blue"}, {k: v for k, v in {**defaults, "executor": "local"}.items()
                                                   if v is not None}]


def test_shipped_deployments_validate_against_the_flow_parameters() -> None:
    """Every deployment of infra/prefect/prefect.yaml passes ``config`` and ``options`` the flow's models accept."""
    spec = yaml.safe_load((ROOT / "infra" / "prefect" / "prefect.yaml").read_text())
    models = {"flows/explain.py:explain_dataset": ExplainConfig, "flows/roar.py:roar_dataset": RoarConfig,
              "flows/filters.py:filter_statistics": FiltersConfig}
    for dep in spec["deployments"]:
        params = dep["parameters"]
        assert set(params) <= {"config", "options"}
        cfg = models[dep["entrypoint"]].model_validate(params["config"])
        assert cfg.methods and RunOptions.model_validate(params.get("options", {})).executor == "ray"
