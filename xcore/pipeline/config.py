"""Typed job configs: one pydantic model per job kind, from which the CLI options, the flow signature and the job
all derive, so adding a key is adding one field here.

A field's ``description`` is its ``--help`` text; ``json_schema_extra={"cli": False}`` keeps it off the generic
option list (the dict fields, which have their own repeatable CLI syntax). Validation errors become one-line
:class:`~xcore.errors.UsageError` s. Configs cross process boundaries as plain dicts (``model_dump()``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from xcore.errors import UsageError

C = TypeVar("C", bound=BaseModel)
Params = dict[str, dict[str, Any]]


class DatasetJobConfig(BaseModel):
    """The fields and checks every dataset job shares: data, checkpoint, methods, output, batching, device, seed."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    dataset: str = Field(description="dataset root")
    model: str = Field(description="checkpoint: a .pt state dict with a .json sidecar, or described by --arch / "
                       "--model-factory and --num-classes")
    arch: str | None = Field(None, description="architecture of the checkpoint (xcore.models.MODELS, e.g. resnet18); "
                             "replaces the sidecar's, which is then optional")
    model_factory: str | None = Field(None, description="plug-in package.module:fn building the model "
                                      "(fn(num_classes=N) or fn()), importable in every actor; replaces --arch")
    num_classes: int | None = Field(None, ge=1, description="classes the model outputs; replaces the sidecar's")
    input_size: int | None = Field(None, ge=1, description="input side in pixels (centre crop); replaces the "
                                   "sidecar's")
    mean: list[float] | None = Field(None, description="per-channel input mean, e.g. 0.485,0.456,0.406 "
                                     "(comma-separated or repeated); replaces the sidecar's")
    std: list[float] | None = Field(None, description="per-channel input std, e.g. 0.229,0.224,0.225 "
                                    "(comma-separated or repeated); replaces the sidecar's")
    methods: Params = Field(description="explanation methods {name: params}", json_schema_extra={"cli": False})
    out: str = Field("runs", description="output root; the run goes to OUT/RUN_ID")
    run_id: str | None = Field(None, description="run directory name (default: the run key)")
    dataset_kind: str | None = Field(None, description="a registered dataset kind (default: the checkpoint's)")
    shard_size: int = Field(256, ge=1, description="samples per shard (one Parquet file per table)")
    batch_size: int = Field(16, ge=1, description="samples per explain batch")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu)")
    seed: int = Field(0, description="seed of the seeded methods (per sample: seed and sample index)")
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

    @field_validator("methods", "metrics", mode="before", check_fields=False)
    @classmethod
    def _params(cls, v: Any) -> Any:  # ``{gradcam: }`` in YAML: no parameters
        return {k: ({} if p is None else p) for k, p in v.items()} if isinstance(v, dict) else v

    @field_validator("methods")
    @classmethod
    def _some_method(cls, v: Params) -> Params:
        if not v:
            raise ValueError("name at least one explanation method")
        return v

    @field_validator("model_factory")
    @classmethod
    def _one_builder(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("arch") is not None:
            raise ValueError("give --arch or --model-factory, not both")
        return v

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _float_list(cls, v: Any) -> Any:  # "0.485,0.456,0.406", or repeated CLI options each maybe comma-joined
        if v is None:
            return None
        items = v if isinstance(v, list | tuple) else [v]
        parts = [p.strip() if isinstance(p, str) else p
                 for item in items for p in (item.split(",") if isinstance(item, str) else [item])]
        return [p for p in parts if p != ""] or None

    @field_validator("std")
    @classmethod
    def _std(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if v is not None and not all(s > 0 for s in v):
            raise ValueError("every std must be positive")
        mean = info.data.get("mean")
        if v is not None and mean is not None and len(mean) != len(v):
            raise ValueError(f"{len(v)} std values for {len(mean)} mean values")
        return v


class ExplainConfig(DatasetJobConfig):
    """Explanations + metrics for every sample of a dataset split, one Parquet shard at a time."""

    metrics: Params = Field(default_factory=lambda: {"deletion_insertion": {}},
                            description="metrics {name: params}", json_schema_extra={"cli": False})
    split: str = Field("val", description="split; for NTU a bare part means the checkpoint's benchmark")
    samples: int | None = Field(None, ge=1, description="explain an evenly spaced subset of this many samples "
                                "(default: the whole split)")
    target: Literal["pred", "label", "random"] = Field(
        "pred", description="explained class: pred (clean prediction), label (ground truth) or random (a seeded "
        "random class other than the prediction; metrics still score the prediction: a sanity check)")


ROAR_FRACTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


class RoarConfig(DatasetJobConfig):
    """ROAR / KAR (remove / keep and retrain) and ROAD's retrain-free check over a dataset's train and test splits.

    Defaults are the thesis protocol (Hartley 2021, §2.4.2.3, §3.5.2, §3.7.2.2): t in {0, 10, 30, 50, 70, 90} %,
    5 repeats, spatial ranking, replacement by the per-channel mean (0 after normalisation). ``ranking="value"``
    is the reference-code mode of Hooker et al. 2019; ``imputation="noisy_linear"`` and ``retrain=False`` are ROAD
    (Rong et al. 2022). Everything that changes a unit's result is part of the run key.
    """

    model: str = Field(description="the clean checkpoint: explained, and its architecture retrained")
    methods: Params = Field(description="explanation methods {name: params}; 'oracle' is the ground-truth mask",
                            json_schema_extra={"cli": False})
    train_split: str = Field("train", description="split the retrained models learn from")
    test_split: str = Field("val", description="split the retrained (or original) models are evaluated on")
    fractions: list[float] = Field(list(ROAR_FRACTIONS), description="removed / kept fractions t in [0, 1]",
                                   json_schema_extra={"cli": False})
    modes: list[Literal["roar", "kar", "lerf"]] | None = Field(
        None, description="roar (remove the top t), kar (keep the top t), lerf (remove the bottom t); default "
        "roar + kar when retraining, roar (= ROAD's MoRF) + lerf without", json_schema_extra={"cli": False})
    repeats: int | None = Field(None, ge=1, description="retrainings per (method, mode, t) (default 5; 1 with "
                                "--no-retrain)")
    retrain: bool = Field(True, description="retrain a model per unit (ROAR / KAR); false: ROAD's retrain-free "
                          "check, the original model on the degraded test split")
    ranking: Literal["pixel", "value"] = Field(
        "pixel", description="pixel: rank locations, replace all channels (thesis); value: rank (row, col, channel) "
        "values of the squared, min-max saliency (reference code)")
    imputation: Literal["mean", "noisy_linear"] | None = Field(
        None, description="mean: 0 after normalisation (thesis); noisy_linear: ROAD's imputation (default: mean "
        "when retraining, noisy_linear without, as ROAD publishes it)")
    noise: float = Field(0.01, ge=0, description="noisy_linear: noise std on [0, 1] images (ROAD: 0.01)")
    epochs: int | None = Field(None, ge=1, description="retraining epochs (default: the checkpoint's recipe)")
    train_batch_size: int | None = Field(None, ge=1, description="global retraining batch (default: checkpoint's)")
    lr: float | None = Field(None, gt=0, description="peak learning rate (default: the checkpoint's recipe)")
    weight_decay: float | None = Field(None, ge=0, description="weight decay (default: the checkpoint's recipe)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer of the retraining")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per unit (0: in the actor)")
    auc: Literal["trapezoid", "uniform"] = Field(
        "trapezoid", description="AUC of a curve: trapezoid over the true fractions, or uniform (RISE formula)")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= t <= 1.0 for t in v) or len(set(v)) != len(v):
            raise ValueError("fractions must be distinct values in [0, 1]")
        return sorted(float(t) for t in v)


class FiltersConfig(DatasetJobConfig):
    """Per-sample filter scores of one layer, their per-class distributions, and surprise / expectation / β against
    a reference split's distributions (Hartley 2021, §6.2–6.4): the thesis' defaults are Grad-AMap on the final
    conv layer, logits, ablation steps of 16 filters and the fixing sweep on misclassified surprised samples."""

    methods: Params = Field(default_factory=lambda: {"gradamap": {}},
                            description="filter scorers {name: params} (xcore.filters.SCORERS)",
                            json_schema_extra={"cli": False})
    split: str = Field("val", description="split to score")
    layer: str | None = Field(None, description="module path of the scored layer (default: the model's CAM layer)")
    tap: Literal["output", "input"] = Field(
        "output", description="output: the module's output; input: its input (e.g. a ReLU's pre-activation)")
    softmax: bool = Field(False, description="score the class softmax instead of the logit")
    reference_split: str | None = Field(
        "train", description="split whose per-class distributions flag surprising / expected filters and β "
        "(scored first; none when it equals --split)")
    reference_dataset: str | None = Field(None, description="dataset root of the reference split (default: "
                                          "--dataset)")
    pred_scores: bool = Field(True, description="also score the predicted class of misclassified samples (a "
                              "second pass over them)")
    bins: int = Field(32, ge=1, description="histogram bins per (class, filter) in filter_stats")
    ranking_step: int = Field(16, ge=0, description="filter-ranking experiment: zero the top-ranked filters N at a "
                              "time (thesis: 16); 0: off")
    suppression: bool = Field(True, description="fixing by suppression on misclassified surprised samples")
    top_images: int = Field(3, ge=0, description="top-activating reference images per surprising filter in the "
                            "report figure")

    @field_validator("reference_dataset")
    @classmethod
    def _absolute_ref(cls, v: str | None) -> str | None:
        return None if v is None else str(Path(v).expanduser().absolute())


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


# the config keys that describe the model (:func:`xcore.models.checkpoint.read_meta` overrides)
MODEL_KEYS = ("arch", "model_factory", "num_classes", "input_size", "mean", "std")


def model_overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """The model keys a job config gives (``None`` left out): they replace the checkpoint sidecar's keys."""
    return {k: config[k] for k in MODEL_KEYS if config.get(k) is not None}


def cli_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` that the CLI exposes as plain ``--name`` options, by name."""
    return {name: f for name, f in model.model_fields.items()
            if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("cli") is False)}
