"""Typed schema of params.yaml (DESIGN.md §1-§3).

Every bad value is refused before any work starts, with a message naming the file, the key,
the value and what was expected. Dataset and backbone sections are validated by the schema
their registry entry declares, so adding one never touches this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

PRESETS_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A params file that cannot be used; the message says where and what was expected."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ExperimentConfig(Section):
    # Which preset this file came from; the report marks anything but "paper" as scaled down.
    preset: str = "custom"
    datasets: list[str] = Field(min_length=1)
    backbones: list[str] = Field(min_length=1)
    variants: list[str] = Field(min_length=1)
    seeds: list[NonNegativeInt] = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # How the training loop runs, never what it computes (so not hashed): a partial
    # checkpoint every `checkpoint_every` steps, a log row read out every `log_every` steps,
    # and torch.compile for the training step.
    checkpoint_every: PositiveInt = 1000
    log_every: PositiveInt = 100
    compile: bool = False


class ScheduledSamplingConfig(Section):
    """Scheduled sampling for step-wise backbones, as in PredRNN-V2's training scripts.

    reverse: the true-frame probability rises from 0.5 to 1 on the input steps (exponential,
    time constant `r_exp_alpha`) while it falls from 0.5 to 0 on the prediction steps
    (linear), both between iterations `r_sampling_step_1` and `r_sampling_step_2`.
    linear: input steps always true; prediction steps fall linearly from 1 to 0 at
    `sampling_stop_iter`. none: teacher forcing on every step.
    """

    mode: Literal["reverse", "linear", "none"] = "reverse"
    r_sampling_step_1: PositiveInt = 25000
    r_sampling_step_2: PositiveInt = 50000
    r_exp_alpha: PositiveFloat = 2500.0
    sampling_stop_iter: PositiveInt = 50000


class StageConfig(Section):
    steps: PositiveInt
    lr: PositiveFloat


class TrainingConfig(Section):
    # Keys without defaults are those DVC stages list as params: DVC needs them in the file.
    batch_size: PositiveInt
    scheduled_sampling: ScheduledSamplingConfig
    # PredRNN-V2's augmentation: each iteration also takes a step on the time-reversed batch.
    reverse_input: bool
    # Max gradient norm, or null for none.
    grad_clip: PositiveFloat | None
    stage1: StageConfig
    stage2: StageConfig


class BDNConfig(Section):
    state_weight: NonNegativeFloat = 1.0
    frame_weight: NonNegativeFloat = 1.0
    backtrack_weight: NonNegativeFloat = 1.0
    # mutual: both directions receive the distillation gradient (no detach).
    mutual: bool = True


class LMAConfig(Section):
    cycle: PositiveInt = 200
    meta_steps: NonNegativeInt = 50
    a_max: PositiveFloat = 2e-4
    order_lambda: NonNegativeFloat = 2.0
    order_weight: NonNegativeFloat = 10.0
    # Adam's lr on the rates; 1e-7 is the authors' value for a stage-two lr of 1e-4.
    meta_lr: PositiveFloat = 1e-7


class MethodConfig(Section):
    bdn: BDNConfig = BDNConfig()
    lma: LMAConfig = LMAConfig()


class EvaluationConfig(Section):
    batch_size: PositiveInt = 16
    lpips: bool = True
    samples: NonNegativeInt = 4


class Params(Section):
    """The whole params.yaml. `data` and `models` hold the per-entry typed sections."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True
    )

    experiment: ExperimentConfig
    data: dict[str, Any]
    models: dict[str, Any]
    training: TrainingConfig
    method: MethodConfig
    evaluation: EvaluationConfig


def _yaml_loader() -> type[yaml.SafeLoader]:
    # PyYAML follows YAML 1.1, where `1e-4` is a string; accept it as the float it is meant as.
    class Loader(yaml.SafeLoader):
        pass

    float_pattern = re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    )
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", float_pattern, list("-+0123456789."))
    return Loader


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_errors(source: str, prefix: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {path!r}")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing key {path!r}")
        else:
            lines.append(f"{source}: {path} = {_describe(item['input'])}: {item['msg']}")
    return "\n".join(lines)


def _validate(model: type[BaseModel], data: Any, source: str, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, prefix, error)) from None


def _check_names(source: str, key: str, names: list[str], known: list[str]) -> None:
    for name in names:
        if name not in known:
            raise ConfigError(f"{source}: {key} names {name!r}; expected one of {known}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: {key} = {names!r} lists a name twice")


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping: the top-level schema, every registered section, and
    the rules that span sections (horizons against stored clips, patch size against frames)."""
    from seemore.backbones import BACKBONES
    from seemore.data import DATASETS
    from seemore.method.variants import VARIANTS

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_describe(raw)}")
    params: Params = _validate(Params, raw, source, "")
    experiment = params.experiment
    _check_names(source, "experiment.datasets", experiment.datasets, DATASETS.names())
    _check_names(source, "experiment.backbones", experiment.backbones, BACKBONES.names())
    _check_names(source, "experiment.variants", experiment.variants, VARIANTS.names())
    if len(set(experiment.seeds)) != len(experiment.seeds):
        raise ConfigError(f"{source}: experiment.seeds = {experiment.seeds!r} lists a seed twice")

    data, models = {}, {}
    for section, registry, typed in (("data", DATASETS, data), ("models", BACKBONES, models)):
        entries = getattr(params, section)
        for name, body in entries.items():
            if name not in registry:
                raise ConfigError(
                    f"{source}: {section}.{name}: unknown name; expected one of {registry.names()}"
                )
            typed[name] = _validate(
                registry.get(name).config_class, body, source, f"{section}.{name}"
            )
    for name in experiment.datasets:
        if name not in data:
            raise ConfigError(
                f"{source}: experiment.datasets lists {name!r} but data.{name} is missing"
            )
    for name in experiment.backbones:
        if name not in models:
            raise ConfigError(
                f"{source}: experiment.backbones lists {name!r} but models.{name} is missing"
            )

    meta_adapted = any(VARIANTS.get(name).meta_adapted for name in experiment.variants)
    lma = params.method.lma
    if meta_adapted and params.training.stage2.lr > lma.a_max:
        raise ConfigError(
            f"{source}: training.stage2.lr = {params.training.stage2.lr} is above "
            f"method.lma.a_max = {lma.a_max}; LMA starts its rates at the stage-two lr and "
            "clamps them to [0, a_max]"
        )
    if meta_adapted and lma.meta_steps >= lma.cycle:
        raise ConfigError(
            f"{source}: method.lma.meta_steps = {lma.meta_steps} must be below "
            f"method.lma.cycle = {lma.cycle}, or no task step is ever taken"
        )

    for dataset_name, dataset_config in data.items():
        for problem in DATASETS.get(dataset_name).check(dataset_config):
            raise ConfigError(f"{source}: data.{dataset_name}: {problem}")
    for dataset_name in experiment.datasets:
        geometry = DATASETS.get(dataset_name).geometry(data[dataset_name])
        for backbone_name in experiment.backbones:
            for problem in models[backbone_name].check_geometry(geometry):
                raise ConfigError(
                    f"{source}: models.{backbone_name} with data.{dataset_name}: {problem}"
                )
    return params.model_copy(update={"data": data, "models": models})


def load_params(path: str | Path) -> Params:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read params file: {error.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return validate_params(raw, str(path))


def section_hash(*sections: Any) -> str:
    """A stable short hash of config sections (pydantic models, mappings or plain values)."""

    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return value

    text = json.dumps([plain(s) for s in sections], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; expected one of {known}")
    return path
