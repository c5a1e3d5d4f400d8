"""Training recipes as data (DESIGN.md §5, "Recipes").

A recipe is one YAML file here, `<name>.yaml`, reproducing one reference's training:

    title: what it reproduces, and whether it is scaled
    reference: where its values come from (scripts, configs)
    method: {bdn: {...}, lma: {...}}         # optional: global method settings it needs
    datasets:
      <dataset>:
        training: {...}                      # becomes training.<dataset> (recipe: <name>)
        models: {<backbone>: {...}, ...}     # becomes models.<dataset>.<backbone>
        train_set_size: N                    # optional: clips per epoch, for `epochs`

A stage may give `epochs` (OpenSTL's unit) instead of `steps`: the expansion writes
steps = epochs x (train_set_size // batch_size) (the last partial batch is dropped, as
OpenSTL's training loaders do), per backbone where an override changes the batch, and a cosine
schedule's `steps_per_epoch` with it. params.yaml holds the steps.

Adding a recipe is adding a file. A preset (seemore/presets/<name>.yaml) is a params file
whose `training` and `models` are replaced by `recipes: {<dataset>: <recipe name>}`;
`compose_preset` expands it into the full params mapping `seemore use-preset` writes, so
params.yaml stays the single, fully expanded source of truth, every training section
labelled with the recipe it came from.
"""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path
from typing import Any

import yaml

from seemore.config import ConfigError, load_yaml, preset_path, validate_params

RECIPES_DIR = Path(__file__).parent
RECIPE_KEYS = {"title", "reference", "method", "datasets"}


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; expected one of {recipe_names()}")
    recipe = load_yaml(path)
    if not isinstance(recipe, dict) or not isinstance(recipe.get("datasets"), dict):
        raise ConfigError(f"{path}: expected a mapping with a `datasets` mapping")
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected {sorted(RECIPE_KEYS)}")
    for dataset, body in recipe["datasets"].items():
        if not isinstance(body, dict) or not {"training", "models"} <= set(body) <= {
            "training",
            "models",
            "train_set_size",
        }:
            raise ConfigError(
                f"{path}: datasets.{dataset} must hold `training` and `models` (and optionally "
                "`train_set_size`)"
            )
    return recipe


def steps_per_epoch(train_set_size: int, batch_size: int) -> int:
    """Updates in one epoch of a loader that drops the last partial batch."""
    return train_set_size // batch_size


STAGES = ("stage1", "stage2")


def _resolve_epochs(stage: dict[str, Any], epochs: int, schedule_kind: str, per_epoch: int) -> None:
    stage.pop("epochs", None)
    stage["steps"] = epochs * per_epoch
    if schedule_kind == "cosine":
        stage.setdefault("lr_schedule", {})["steps_per_epoch"] = per_epoch


def _schedule_kind(*stages: dict[str, Any]) -> str:
    """The lr schedule kind of stage sections merged in order (the last one set wins)."""
    kinds = [stage.get("lr_schedule", {}).get("kind") for stage in stages]
    return next((kind for kind in reversed(kinds) if kind is not None), "constant")


def epochs_to_steps(training: dict[str, Any], train_set_size: Any, where: str) -> None:
    """Rewrite, in place, every stage of `training` (and of its per-backbone overrides) given in
    `epochs` into `steps` (see the module docstring)."""
    base_batch = training.get("batch_size")

    def per_epoch(batch: int) -> int:
        if not isinstance(train_set_size, int) or train_set_size < 1:
            raise ConfigError(
                f"{where}: a stage gives `epochs`: set train_set_size (clips per epoch)"
            )
        return steps_per_epoch(train_set_size, batch)

    def stage_of(section: dict[str, Any], key: str) -> dict[str, Any]:
        stage = section.get(key)
        return stage if isinstance(stage, dict) else {}

    # Overrides first: they read the dataset's epochs before those become steps.
    for override in training.get("backbones", {}).values():
        batch = override.get("batch_size", base_batch)
        for key in STAGES:
            base, own = stage_of(training, key), stage_of(override, key)
            epochs = own.get("epochs", base.get("epochs"))
            if epochs is not None and ("epochs" in own or batch != base_batch):
                stage = override.setdefault(key, {})
                _resolve_epochs(stage, epochs, _schedule_kind(base, own), per_epoch(batch))
    for key in STAGES:
        stage = stage_of(training, key)
        if "epochs" in stage:
            _resolve_epochs(stage, stage["epochs"], _schedule_kind(stage), per_epoch(base_batch))


def _merge_method(
    method: dict[str, Any], extra: dict[str, Any], source: str, taken: dict[str, str]
) -> None:
    """Fold `extra` (a recipe's method settings) into `method`, refusing a value that another
    recipe or the preset already set differently (method settings are global)."""
    for section, values in extra.items():
        target = method.setdefault(section, {})
        for key, value in values.items():
            if key in target and target[key] != value:
                raise ConfigError(
                    f"method.{section}.{key}: {source} needs {value!r} but "
                    f"{taken.get(f'{section}.{key}', 'the preset')} sets {target[key]!r}"
                )
            target[key] = value
            taken[f"{section}.{key}"] = source


def compose(preset: dict[str, Any], source: str) -> dict[str, Any]:
    """The full params mapping of a preset mapping (see the module docstring)."""
    if "recipes" not in preset:
        return copy.deepcopy(preset)
    if "training" in preset or "models" in preset:
        raise ConfigError(
            f"{source}: a preset with `recipes` takes `training` and `models` from them"
        )
    params = {key: copy.deepcopy(value) for key, value in preset.items() if key != "recipes"}
    params["training"], params["models"] = {}, {}
    method = params.setdefault("method", {})
    taken: dict[str, str] = {}
    for dataset, name in preset["recipes"].items():
        recipe = load_recipe(name)
        if dataset not in recipe["datasets"]:
            raise ConfigError(
                f"{source}: recipes.{dataset} = {name!r}, but that recipe has no "
                f"{dataset!r}; it has {sorted(recipe['datasets'])}"
            )
        body = copy.deepcopy(recipe["datasets"][dataset])
        epochs_to_steps(body["training"], body.get("train_set_size"), f"recipe {name!r} {dataset}")
        params["training"][dataset] = {"recipe": name, **body["training"]}
        params["models"][dataset] = body["models"]
        _merge_method(method, recipe.get("method", {}), f"recipe {name!r}", taken)
    # The schema's order, so the written file reads top-down like the presets.
    order = ["experiment", "data", "training", "models", "method", "evaluation"]
    return {key: params[key] for key in [*order, *params] if key in params} | params


def compose_preset(name: str) -> dict[str, Any]:
    path = preset_path(name)
    return compose(load_yaml(path), str(path))


def preset_text(name: str) -> str:
    """params.yaml's text for preset `name`: a header, then the expanded mapping."""
    params = compose_preset(name)
    validate_params(params, str(preset_path(name)))
    recipes = sorted({section["recipe"] for section in params["training"].values()})
    header = (
        f"# Written by `seemore use-preset {name}` from seemore/presets/{name}.yaml and the\n"
        f"# recipes {recipes} (seemore/recipes/). This file is the single source of truth:\n"
        "# edit it freely; switch presets with `make paper` / `make embedded`.\n"
    )
    text = io.StringIO()
    yaml.safe_dump(params, text, sort_keys=False, default_flow_style=None, width=200)
    return header + text.getvalue()


def write_preset(name: str, target: Path) -> Path | None:
    """Write preset `name` into `target` (atomically). A `target` that is not some preset's
    text (hand edits) is kept as `<target>.bak` first; returns that backup, if any."""
    text = preset_text(name)
    backup = None
    if target.is_file():
        known = {preset_text(path.stem) for path in preset_path(name).parent.glob("*.yaml")}
        if target.read_text() not in known:
            backup = target.with_name(target.name + ".bak")
            shutil.copyfile(target, backup)
    temp = target.with_name(f".{target.name}.part")
    temp.write_text(text)
    temp.replace(target)
    return backup
