"""Typed job configs: one pydantic model per job kind, from which the CLI options, the flow signature and the job
all derive, so adding a key is adding one field here.

A field's ``description`` is its ``--help`` text; ``json_schema_extra={"cli": False}`` keeps it off the generic
option list (the dict fields, which have their own repeatable CLI syntax). Validation errors become one-line
:class:`~xcore.errors.UsageError` s. Configs cross process boundaries as plain dicts (``model_dump()``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xcore.errors import UsageError

C = TypeVar("C", bound=BaseModel)
Params = dict[str, dict[str, Any]]


class ExplainConfig(BaseModel):
    """Explanations + metrics for every sample of a dataset split, one Parquet shard at a time."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    dataset: str = Field(description="dataset root")
    model: str = Field(description="checkpoint (.pt with a .json sidecar)")
    methods: Params = Field(description="explanation methods {name: params}", json_schema_extra={"cli": False})
    metrics: Params = Field(default_factory=lambda: {"deletion_insertion": {}},
                            description="metrics {name: params}", json_schema_extra={"cli": False})
    out: str = Field("runs", description="output root; the run goes to OUT/RUN_ID")
    run_id: str | None = Field(None, description="run directory name (default: the run key)")
    split: str = Field("val", description="split; for NTU a bare part means the checkpoint's benchmark")
    dataset_kind: str | None = Field(None, description="a registered dataset kind (default: the checkpoint's)")
    shard_size: int = Field(256, ge=1, description="samples per shard (one Parquet file per table)")
    batch_size: int = Field(16, ge=1, description="samples per explain batch")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu)")
    seed: int = Field(0, description="seed of the seeded methods (per sample: seed and sample index)")
    target: Literal["pred", "label"] = Field(
        "pred", description="explained class: pred (clean prediction) or label (ground truth)")
    reader: dict[str, Any] = Field(default_factory=dict, description="reader options over the checkpoint's",
                                   json_schema_extra={"cli": False})

    @field_validator("dataset", "model", "out")
    @classmethod
    def _absolute(cls, v: str) -> str:  # actors may run with another working directory
        return str(Path(v).expanduser().absolute())

    @field_validator("out")
    @classmethod
    def _writable(cls, v: str) -> str:  # before any engine starts, not 16 s later inside the flow
        check_writable_dir(Path(v))
        return v

    @field_validator("methods", "metrics", mode="before")
    @classmethod
    def _params(cls, v: Any) -> Any:  # ``{gradcam: }`` in YAML: no parameters
        return {k: ({} if p is None else p) for k, p in v.items()} if isinstance(v, dict) else v

    @field_validator("methods")
    @classmethod
    def _some_method(cls, v: Params) -> Params:
        if not v:
            raise ValueError("name at least one explanation method")
        return v


def check_writable_dir(path: Path) -> None:
    """``ValueError`` naming the path and the reason unless ``path`` is a directory this process can write in, or
    can be created in its nearest existing parent: a file, a path under a file, or a folder where a temp file cannot
    be created (read-only filesystem, no permission) is refused. The probe file is removed at once."""
    base = path
    while not os.path.lexists(base) and base.parent != base:
        base = base.parent
    if not base.is_dir():
        what = "is a file" if base.is_file() else "is not a directory"
        raise ValueError(f"{base} {what}" + ("" if base == path else f", so {path} cannot be created"))
    try:
        fd, probe = tempfile.mkstemp(prefix=".xcore-write-probe-", dir=base)
    except OSError as err:
        raise ValueError(f"{base} is not writable: {err.strerror or err}") from None
    os.close(fd)
    os.unlink(probe)


def parse_config(model: type[C], config: dict[str, Any] | BaseModel) -> C:
    """``config`` validated as ``model``; every problem in one line of a :class:`UsageError`."""
    if isinstance(config, model):
        return config
    data = config.model_dump() if isinstance(config, BaseModel) else {k: v for k, v in config.items()
                                                                       if v is not None}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UsageError("; ".join(_problem(e) for e in err.errors())) from None


def _problem(e: Any) -> str:
    where = ".".join(str(p) for p in e.get("loc", ())) or "config"
    if e.get("type") == "extra_forbidden":
        return f"unknown config key {where!r}"
    if e.get("type") == "missing":
        return f"config needs {where}"
    msg = str(e.get("msg", "")).removeprefix("Value error, ")
    got = e.get("input")
    return f"{where}: {msg}" + ("" if isinstance(got, str) and got in msg else f" (got {got!r})")


def cli_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` that the CLI exposes as plain ``--name`` options, by name."""
    return {name: f for name, f in model.model_fields.items()
            if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("cli") is False)}
