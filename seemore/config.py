"""Typed schema of params.yaml (DESIGN.md §1-§3).

Every bad value is refused before any work starts, with a message naming the file, the key,
the value and what was expected. Dataset and backbone sections are validated by the schema
their registry entry declares, so adding one never touches this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seemore.method.settings import (
    BDNConfig,
    LMAConfig,
    LRScheduleConfig,
    MethodConfig,
    ScheduledSamplingConfig,
    StageConfig,
    StageTwoConfig,
    TrainingConfig,
    merge_override,
)
from seemore.schema import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Section

PRESETS_DIR = Path(__file__).parent / "presets"

__all__ = [
    "BDNConfig",
    "ConfigError",
    "EvaluationConfig",
    "ExperimentConfig",
    "LMAConfig",
    "LRScheduleConfig",
    "MethodConfig",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Params",
    "PositiveFloat",
    "PositiveInt",
    "ScheduledSamplingConfig",
    "Section",
    "StageConfig",
    "StageTwoConfig",
    "TrainingConfig",
    "load_params",
    "load_yaml",
    "preset_path",
    "section_hash",
    "validate_params",
]


class ConfigError(ValueError):
    """A params file that cannot be used; the message says where and what was expected."""


class ExperimentConfig(Section):
    # Which preset this file came from; the report marks anything but "paper" as scaled down.
    preset: str = "custom"
    datasets: list[str] = Field(min_length=1)
    backbones: list[str] = Field(min_length=1)
    variants: list[str] = Field(min_length=1)
    seeds: list[NonNegativeInt] = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # How the training loop runs, never what it computes (so not hashed): a partial
    # checkpoint every `checkpoint_every` steps and a log row read out every `log_every` steps.
    checkpoint_every: PositiveInt = 1000
    log_every: PositiveInt = 100
    # torch.compile for the training step (seemore/train.py compile_mode_for): `auto` compiles
    # on CUDA only, `true` everywhere, `false` never. Not hashed: like `device`, it changes
    # float rounding only (tests/test_compile.py), and stats record the mode used.
    compile: bool | Literal["auto"] = "auto"
    # GPU jobs at once per GPU, each pinned to its own device (seemore/devices.py).
    jobs_per_gpu: PositiveInt = 1
    # GPUs one training run uses: > 1 trains with DDP under torchrun (seemore/distributed.py).
    gpus_per_run: PositiveInt = 1


class EvaluationConfig(Section):
    # Which checkpoint `evaluate` scores: `best` (lowest validation MSE during stage two) or
    # `last`. Choosing on the test split is not offered.
    checkpoint: Literal["best", "last"] = "best"
    batch_size: PositiveInt = 16
    lpips: bool = True
    samples: NonNegativeInt = 4


class Params(Section):
    """The whole params.yaml, after validation:

    - `data[dataset]`: the dataset's typed section;
    - `models[dataset][backbone]`: the backbone's typed section for that dataset;
    - `training[dataset]`: the `TrainingConfig` of every run on that dataset;
    - `method`, `evaluation`: global.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True
    )

    experiment: ExperimentConfig
    data: dict[str, Any]
    models: dict[str, dict[str, Any]]
    training: dict[str, Any]
    method: MethodConfig
    evaluation: EvaluationConfig


def _yaml_loader() -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            # A key given twice would silently take its last value: refuse it instead.
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice in one mapping; keep one",
                        key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    # PyYAML follows YAML 1.1, where `1e-4` is a string; accept it as the float it is meant as.
    float_pattern = re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    )
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", float_pattern, list("-+0123456789."))
    return Loader


def _non_finite(raw: Any, path: str = "") -> tuple[str, float] | None:
    """The first `(dotted key, value)` holding an infinite or NaN float, or None."""
    if isinstance(raw, float) and not math.isfinite(raw):
        return path, raw
    children: Any = ()
    if isinstance(raw, Mapping):
        children = raw.items()
    elif isinstance(raw, list):
        children = enumerate(raw)
    for key, value in children:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


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


def _typed_entries(
    source: str, section: str, entries: Mapping[str, Any], registry: Any
) -> dict[str, Any]:
    """Validate `section.<name>` by the schema of registry entry `name`."""
    typed = {}
    for name, body in entries.items():
        if name not in registry:
            raise ConfigError(
                f"{source}: {section}.{name}: unknown name; expected one of {registry.names()}"
            )
        typed[name] = _validate(registry.get(name).config_class, body, source, f"{section}.{name}")
    return typed


# Sizes no run can hold, refused before work starts: a training batch of float32 clips above
# MAX_BATCH_BYTES (activations are many times the input; the paper configurations need < 0.2
# GB), or a stored split of uint8 clips above MAX_SPLIT_BYTES.
MAX_BATCH_BYTES = 8 * 2**30
MAX_SPLIT_BYTES = 2**40


def _size_problems(name: str, data: Any, training: TrainingConfig) -> list[str]:
    from seemore.data import DATASETS

    benchmark = DATASETS.get(name)
    geometry = benchmark.geometry(data)
    frame = geometry.channels * geometry.height * geometry.width
    problems = []
    batch_bytes = training.batch_size * geometry.total_frames * frame * 4
    if batch_bytes > MAX_BATCH_BYTES:
        problems.append(
            f"training.{name}.batch_size = {training.batch_size} with data.{name}.image_size = "
            f"{data.image_size}: one batch of clips alone is {batch_bytes / 2**30:.0f} GiB, "
            f"above the {MAX_BATCH_BYTES // 2**30} GiB any run can hold; lower either"
        )
    for key in ("train_clips", "val_clips", "test_clips"):
        clips = getattr(data, key, None)
        split_bytes = (clips or 0) * benchmark.stored_clip_length(data) * frame
        if split_bytes > MAX_SPLIT_BYTES:
            problems.append(
                f"data.{name}.{key} = {clips}: the split would store "
                f"{split_bytes / 2**40:.1f} TiB, above the {MAX_SPLIT_BYTES // 2**40} TiB limit"
            )
    return problems


def _check_overrides(source: str, dataset: str, body: Any, backbones: Any) -> None:
    """`training.<dataset>.backbones`: each entry names a registered backbone and, merged over
    the dataset's section, is a valid section itself."""
    overrides = body.get("backbones", {})
    base = {key: value for key, value in body.items() if key != "backbones"}
    for backbone, override in overrides.items():
        where = f"training.{dataset}.backbones.{backbone}"
        if backbone not in backbones:
            raise ConfigError(
                f"{source}: {where}: unknown backbone; expected one of {backbones.names()}"
            )
        for key in {"backbones", "recipe"} & set(override):
            raise ConfigError(
                f"{source}: {where}.{key}: not overridable per backbone; set it in "
                f"training.{dataset}"
            )
        _validate(TrainingConfig, merge_override(base, override), source, where)


def _jobs(experiment: ExperimentConfig) -> list[tuple[str, str]]:
    return [(d, b) for d in experiment.datasets for b in experiment.backbones]


def _training_key(dataset: str, backbone: str, training: TrainingConfig) -> str:
    """Where a job's training value is set: its backbone's override, or the dataset's section."""
    if backbone in training.backbones:
        return f"training.{dataset} (with backbones.{backbone})"
    return f"training.{dataset}"


def validate_layout(raw: Any, source: str = "params.yaml") -> Params:
    """The top-level schema alone (sections per dataset/backbone stay raw mappings)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_describe(raw)}")
    found = _non_finite(raw)
    if found is not None:
        raise ConfigError(f"{source}: {found[0]} = {found[1]}: expected a finite number")
    return _validate(Params, raw, source, "")


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping: the top-level schema, every registered section, and
    the rules that span sections (horizons against stored clips, patch size against frames)."""
    # The registries import torch: only here, so planning (validate_layout) stays torch-free.
    from seemore.backbones import BACKBONES
    from seemore.data import DATASETS
    from seemore.method.variants import VARIANTS

    params = validate_layout(raw, source)
    experiment = params.experiment
    _check_names(source, "experiment.datasets", experiment.datasets, DATASETS.names())
    _check_names(source, "experiment.backbones", experiment.backbones, BACKBONES.names())
    _check_names(source, "experiment.variants", experiment.variants, VARIANTS.names())
    if len(set(experiment.seeds)) != len(experiment.seeds):
        raise ConfigError(f"{source}: experiment.seeds = {experiment.seeds!r} lists a seed twice")

    data = _typed_entries(source, "data", params.data, DATASETS)
    training = {}
    for name, body in params.training.items():
        if name not in DATASETS:
            raise ConfigError(
                f"{source}: training.{name}: unknown dataset; expected one of {DATASETS.names()}"
            )
        training[name] = _validate(TrainingConfig, body, source, f"training.{name}")
        _check_overrides(source, name, body, BACKBONES)
    models = {}
    for name, body in params.models.items():
        if name not in DATASETS:
            raise ConfigError(
                f"{source}: models.{name}: unknown dataset; expected one of {DATASETS.names()} "
                "(models are configured per dataset: models.<dataset>.<backbone>)"
            )
        if not isinstance(body, Mapping):
            raise ConfigError(
                f"{source}: models.{name} = {_describe(body)}: expected a mapping of backbone "
                "names to their settings"
            )
        models[name] = _typed_entries(source, f"models.{name}", body, BACKBONES)
    for name in experiment.datasets:
        for section, entries in (("data", data), ("training", training), ("models", models)):
            if name not in entries:
                raise ConfigError(
                    f"{source}: experiment.datasets lists {name!r} but {section}.{name} is missing"
                )
        for backbone_name in experiment.backbones:
            if backbone_name not in models[name]:
                raise ConfigError(
                    f"{source}: experiment.backbones lists {backbone_name!r} but "
                    f"models.{name}.{backbone_name} is missing"
                )

    meta_adapted = any(VARIANTS.get(name).meta_adapted for name in experiment.variants)
    lma = params.method.lma
    for name, backbone_name in _jobs(experiment):
        stage2 = training[name].for_backbone(backbone_name).stage2
        where = _training_key(name, backbone_name, training[name])
        if meta_adapted and stage2.lr_schedule.kind != "constant":
            raise ConfigError(
                f"{source}: {where}.stage2.lr_schedule.kind = "
                f"{stage2.lr_schedule.kind!r}: LMA learns stage two's rates; variants "
                "lma/seemore need 'constant' there"
            )
        if meta_adapted and stage2.lr > lma.a_max:
            raise ConfigError(
                f"{source}: {where}.stage2.lr = {stage2.lr} is above "
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
    for dataset_name, backbone_name in _jobs(experiment):
        resolved = training[dataset_name].for_backbone(backbone_name)
        for problem in _size_problems(dataset_name, data[dataset_name], resolved):
            raise ConfigError(f"{source}: {problem}")
    for dataset_name in experiment.datasets:
        geometry = DATASETS.get(dataset_name).geometry(data[dataset_name])
        for backbone_name in experiment.backbones:
            for problem in models[dataset_name][backbone_name].check_geometry(geometry):
                raise ConfigError(
                    f"{source}: models.{dataset_name}.{backbone_name} with "
                    f"data.{dataset_name}: {problem}"
                )
    return params.model_copy(update={"data": data, "models": models, "training": training})


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file we read (params, presets, recipes): safe types only, a key given twice
    refused, errors as one line naming the file and the place."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read params file: {error.strerror}") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as error:
        # One line: where, then what (PyYAML's own text spans several lines).
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def load_params(path: str | Path) -> Params:
    return validate_params(load_yaml(path), str(path))


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
