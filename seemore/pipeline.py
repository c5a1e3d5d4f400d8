"""The experiment's jobs, their file layout (DESIGN.md §7) and which params each job reads.

Snakemake rules and DVC stages are both generated from this module (the Snakefile calls it,
`seemore dvc-yaml` writes dvc.yaml from it), so the two tools run the same jobs, write the
same files and re-run on the same edits.

Stage one is keyed by its objective (plain | bidirectional), not by the variant: variants that
share an objective (baseline/lma, bdn/seemore) share one stage-one job and checkpoint. Each
job reads only the params it uses: `method.bdn` only jobs of the bidirectional objective,
`method.lma` only stage two of meta-adapted variants.

This module stays importable without torch: the Snakefile plans from it, and planning must
not pay for importing the training stack.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seemore.config import ConfigError, section_hash

DATA_ROOT = Path("data")
RESULTS_ROOT = Path("results")
REPORTS_ROOT = Path("reports")
# Stage-one checkpoints: results/<dataset>/<backbone>/STAGE_ONE_DIR/<objective>/seed<k>/.
STAGE_ONE_DIR = "stage1"

PLAIN, BIDIRECTIONAL = "plain", "bidirectional"
OBJECTIVES = (PLAIN, BIDIRECTIONAL)

# Keys of params.yaml jobs depend on ({dataset}/{backbone} are filled in per job).
PREPARE_KEYS = ("data.{dataset}",)
EVALUATE_KEYS = ("data.{dataset}", "evaluation")
# The training section keys only stage two reads; stage one reads the rest of the section.
STAGE_TWO_ONLY_TRAINING_KEYS = ("stage2",)
# training.<dataset>.backbones.<backbone>: per-backbone overrides; a job reads only its own.
BACKBONE_OVERRIDES = "backbones"


def objective_of(variant_name: str) -> str:
    """The stage-one objective of a variant: what its stage one (and stage two) minimises."""
    from seemore.method.variants import VARIANTS

    return BIDIRECTIONAL if VARIANTS.get(variant_name).bidirectional else PLAIN


def meta_adapted(variant_name: str) -> bool:
    from seemore.method.variants import VARIANTS

    return VARIANTS.get(variant_name).meta_adapted


def objective_variant(objective: str) -> str:
    """The variant whose stage one trains `objective` and nothing else (no meta-adaptation):
    baseline for plain, bdn for bidirectional. A stage-one job builds its objective from it."""
    from seemore.method.variants import VARIANTS

    for name in VARIANTS.names():
        if objective_of(name) == objective and not meta_adapted(name):
            return name
    raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")


@dataclass(frozen=True)
class StageOne:
    """One stage-one job: shared by every variant of the experiment with this objective."""

    dataset: str
    backbone: str
    objective: str
    seed: int

    @property
    def directory(self) -> Path:
        return (
            RESULTS_ROOT
            / self.dataset
            / self.backbone
            / STAGE_ONE_DIR
            / self.objective
            / f"seed{self.seed}"
        )

    @property
    def checkpoint(self) -> Path:
        return self.directory / "stage1.pt"

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.backbone}-{self.objective}"


@dataclass(frozen=True)
class Run:
    """One cell of the experiment matrix: its stage two, model and evaluation."""

    dataset: str
    backbone: str
    variant: str
    seed: int

    @property
    def directory(self) -> Path:
        return RESULTS_ROOT / self.dataset / self.backbone / self.variant / f"seed{self.seed}"

    @property
    def stage_one(self) -> StageOne:
        return StageOne(self.dataset, self.backbone, objective_of(self.variant), self.seed)

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.backbone}-{self.variant}"


def _experiment(params: Any) -> Any:
    return params["experiment"] if isinstance(params, Mapping) else params.experiment


def _list(section: Any, key: str) -> list[Any]:
    return list(section[key] if isinstance(section, Mapping) else getattr(section, key))


def runs(params: Any) -> Iterator[Run]:
    """Every run of the experiment (params: validated `Params` or the raw mapping)."""
    e = _experiment(params)
    for dataset, backbone, variant, seed in itertools.product(
        _list(e, "datasets"), _list(e, "backbones"), _list(e, "variants"), _list(e, "seeds")
    ):
        yield Run(dataset, backbone, variant, seed)


def stage_ones(params: Any) -> list[StageOne]:
    """The distinct stage-one jobs of the experiment, in matrix order."""
    return list(dict.fromkeys(run.stage_one for run in runs(params)))


def load_plan(path: str | Path) -> dict[str, Any]:
    """The raw params mapping to plan jobs from, torch-free: its YAML, the top-level schema
    and the variant names are checked here; every section is validated by `seemore check`
    before a run and by every `seemore` job."""
    from seemore.config import load_yaml, validate_layout
    from seemore.method.variants import VARIANTS

    path = Path(path)
    raw = load_yaml(path)
    validate_layout(raw, str(path))
    for name in raw["experiment"]["variants"]:
        if name not in VARIANTS:
            raise ConfigError(
                f"{path}: experiment.variants names {name!r}; expected one of {VARIANTS.names()}"
            )
    return raw


def raw_dir(dataset: str) -> Path:
    return DATA_ROOT / "raw" / dataset


def prepared_dir(dataset: str) -> Path:
    return DATA_ROOT / "prepared" / dataset


def lookup(params: Any, dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def _section_keys(section: Any) -> list[str]:
    """The keys of a mapping, or the fields of a typed section."""
    if isinstance(section, Mapping):
        return list(section)
    return list(type(section).model_fields)


def stage_one_keys(params: Any, job: StageOne) -> list[str]:
    """The params a stage-one job reads. `params` is the raw mapping (the keys present, as DVC
    lists them) or the validated `Params` (every field)."""
    training = lookup(params, f"training.{job.dataset}")
    own = f"training.{job.dataset}.{BACKBONE_OVERRIDES}.{job.backbone}"
    keys = [
        f"data.{job.dataset}",
        f"models.{job.dataset}.{job.backbone}",
        *(
            f"training.{job.dataset}.{key}"
            for key in _section_keys(training)
            if key not in (*STAGE_TWO_ONLY_TRAINING_KEYS, BACKBONE_OVERRIDES)
        ),
        *(
            f"{own}.{key}"
            for key in _backbone_override(training, job.backbone)
            if key not in STAGE_TWO_ONLY_TRAINING_KEYS
        ),
    ]
    if job.objective == BIDIRECTIONAL:
        keys.append("method.bdn")
    return keys


def stage_two_keys(params: Any, run: Run) -> list[str]:
    """The params stage two of a run reads: its stage one's, the stage-two training keys and
    LMA's settings for meta-adapted variants. (Its stage-one checkpoint is a file input.)"""
    keys = stage_one_keys(params, run.stage_one)
    keys += [f"training.{run.dataset}.{key}" for key in STAGE_TWO_ONLY_TRAINING_KEYS]
    override = _backbone_override(lookup(params, f"training.{run.dataset}"), run.backbone)
    keys += [
        f"training.{run.dataset}.{BACKBONE_OVERRIDES}.{run.backbone}.{key}"
        for key in STAGE_TWO_ONLY_TRAINING_KEYS
        if key in override
    ]
    if meta_adapted(run.variant):
        keys.append("method.lma")
    return keys


def _backbone_override(training: Any, backbone: str) -> Mapping[str, Any]:
    return _get(training, BACKBONE_OVERRIDES, {}).get(backbone, {})


def _get(section: Any, key: str, default: Any) -> Any:
    if isinstance(section, Mapping):
        return section.get(key, default)
    return getattr(section, key, default)


# LPIPS needs torchvision's AlexNet weights in the torch hub cache (`seemore fetch-weights`).
# A workflow that downloads its data fetches them in a step of its own, before evaluation,
# and records the outcome: "verified <path>", or offline one warning line (evaluation then
# records LPIPS as unavailable, with the reason). The embedded default never touches the
# network: it has no such step (evaluation records LPIPS unavailable when they are absent).
LPIPS_WEIGHTS_RECORD = DATA_ROOT / "weights" / "lpips_alexnet.txt"
FETCH_WEIGHTS_COMMAND = "seemore fetch-weights --allow-offline"


def fetches_lpips_weights(params: Any) -> bool:
    """Whether the workflow has the weights step: LPIPS on and a dataset downloaded."""
    if not _get(lookup(params, "evaluation"), "lpips", True):
        return False
    data = lookup(params, "data")
    return any(
        _get(lookup(data, dataset), "source", "embedded") == "download"
        for dataset in _list(_experiment(params), "datasets")
    )


def evaluate_inputs(params: Any, run: Run) -> list[str]:
    """What evaluation reads or waits for: the prepared data, both models and, when the
    workflow fetches them, the LPIPS weights' record."""
    inputs = [str(prepared_dir(run.dataset)), *(str(run.directory / m) for m in EVALUATE_MODELS)]
    if fetches_lpips_weights(params):
        inputs.append(str(LPIPS_WEIGHTS_RECORD))
    return inputs


def keys_hash(params: Any, keys: tuple[str, ...] | list[str], **names: str) -> str:
    """Hash of the values of `keys` (with {dataset}/{backbone} filled from `names`)."""
    filled = [key.format(**names) for key in keys]
    return section_hash({key: lookup(params, key) for key in filled})


def stage_one_hash(params: Any, job: StageOne) -> str:
    """What a stage-one checkpoint was trained from: its params, objective and seed."""
    return section_hash(keys_hash(params, stage_one_keys(params, job)), job.objective, job.seed)


def stage_two_hash(params: Any, run: Run) -> str:
    """What a run's stage two was trained from: its params, its stage one, variant and seed."""
    return section_hash(
        keys_hash(params, stage_two_keys(params, run)),
        stage_one_hash(params, run.stage_one),
        run.variant,
        run.seed,
    )


def stage_hash(params: Any, run: Run, stage: int) -> str:
    """The params hash stage `stage` of `run` records (stage one: its shared job's)."""
    if stage == 1:
        return stage_one_hash(params, run.stage_one)
    if stage == 2:
        return stage_two_hash(params, run)
    raise ValueError(f"stage must be 1 or 2, got {stage}")


# --- dvc.yaml -------------------------------------------------------------------------------
# DVC's templating cannot derive a variant's objective or give matrix items different params
# lists, so dvc.yaml is written from this module (`seemore dvc-yaml`): one stage per
# (dataset, backbone, objective or variant), each a matrix over `experiment.seeds` (so
# `dvc exp run -S experiment.seeds=...` works as is). Any other edit of the experiment lists
# or of which keys a section holds needs `seemore dvc-yaml`; every `seemore` command run by
# DVC refuses a dvc.yaml that is not the one the current params.yaml gives.
DVC_YAML = Path("dvc.yaml")
SEED_ITEM = "${item.seed}"
DVC_HEADER = (
    "# Written by `seemore dvc-yaml` from params.yaml and seemore/pipeline.py: do not edit.\n"
    "# The same jobs, files and params as the Snakefile. Re-write it after editing\n"
    "# experiment.datasets/backbones/variants (experiment.seeds is a matrix here).\n"
)


def _seed_path(path: Path) -> str:
    return str(path).replace(f"seed{_SEED_SENTINEL}", f"seed{SEED_ITEM}")


_SEED_SENTINEL = -1  # a seed no experiment has: replaced by the matrix item in dvc.yaml


def dvc_stages(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The stages of dvc.yaml for the raw params mapping `raw`."""
    stages: dict[str, Any] = {}
    datasets = _list(raw["experiment"], "datasets")
    for dataset in datasets:
        stages[f"prepare-{dataset}"] = {
            "cmd": f"seemore prepare --dataset {dataset}",
            "params": [key.format(dataset=dataset) for key in PREPARE_KEYS],
            # The raw download cache: kept between runs (persist), versioned and pushed.
            "outs": [{str(raw_dir(dataset)): {"persist": True}}, str(prepared_dir(dataset))],
        }
    if fetches_lpips_weights(raw):
        stages["fetch_weights"] = {
            "cmd": f"{FETCH_WEIGHTS_COMMAND} > {LPIPS_WEIGHTS_RECORD}",
            # The weights live outside the workspace (the torch hub cache): check them every
            # run. The record only changes when the outcome does (e.g. back online), and only
            # then does evaluation re-run.
            "always_changed": True,
            "outs": [str(LPIPS_WEIGHTS_RECORD)],
        }
    one_seed = {**raw, "experiment": {**raw["experiment"], "seeds": [_SEED_SENTINEL]}}
    for job in stage_ones(one_seed):
        stages[f"train_stage1-{job.name}"] = {
            "matrix": {"seed": "${experiment.seeds}"},
            "cmd": (
                f"seemore train --stage 1 --dataset {job.dataset} --backbone {job.backbone}"
                f" --objective {job.objective} --seed {SEED_ITEM}"
            ),
            "deps": [str(prepared_dir(job.dataset))],
            "params": stage_one_keys(raw, job),
            "outs": [_seed_path(job.checkpoint)],
        }
    for run in runs(one_seed):
        flags = (
            f"--dataset {run.dataset} --backbone {run.backbone} --variant {run.variant}"
            f" --seed {SEED_ITEM}"
        )
        directory = run.directory
        stages[f"train_stage2-{run.name}"] = {
            "matrix": {"seed": "${experiment.seeds}"},
            "cmd": f"seemore train --stage 2 {flags}",
            "deps": [str(prepared_dir(run.dataset)), _seed_path(run.stage_one.checkpoint)],
            "params": stage_two_keys(raw, run),
            "outs": [_seed_path(directory / name) for name in STAGE_TWO_OUTPUTS],
        }
        stages[f"evaluate-{run.name}"] = {
            "matrix": {"seed": "${experiment.seeds}"},
            "cmd": f"seemore evaluate {flags}",
            "deps": [_seed_path(Path(path)) for path in evaluate_inputs(raw, run)],
            "params": [key.format(dataset=run.dataset) for key in EVALUATE_KEYS],
            "outs": [_seed_path(directory / "samples.npz")],
            "metrics": [_seed_path(directory / "metrics.json")],
            "plots": [{_seed_path(directory / "per_frame.csv"): {"x": "frame", "y": "mse"}}],
        }
    stages["report"] = {
        "cmd": f"seemore report --results {RESULTS_ROOT} --out {REPORTS_ROOT}",
        "deps": [str(RESULTS_ROOT)],
        # Any edit of the experiment lists reaches a `seemore` command, which checks dvc.yaml.
        "params": ["experiment"],
        "outs": [str(REPORTS_ROOT / name) for name in REPORT_OUTPUTS],
    }
    return stages


STAGE_TWO_OUTPUTS = ("stage2.pt", "model.pt", "model_best.pt", "train_log.csv")
# What evaluation reads from stage two (evaluation.checkpoint picks one of the models).
EVALUATE_MODELS = ("model.pt", "model_best.pt")
EVALUATE_OUTPUTS = ("metrics.json", "per_frame.csv", "samples.npz")
REPORT_OUTPUTS = ("ablation.html", "ablation.csv")


def render_dvc_yaml(raw: Mapping[str, Any]) -> str:
    import yaml

    body = yaml.safe_dump({"stages": dvc_stages(raw)}, sort_keys=False, width=100)
    return DVC_HEADER + body


def check_dvc_yaml(raw: Mapping[str, Any], path: Path = DVC_YAML) -> None:
    """Refuse a dvc.yaml that the current params would not write."""
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != render_dvc_yaml(raw):
        raise ValueError(
            f"{path} is not the one params.yaml gives (experiment lists or section keys "
            "changed): run `seemore dvc-yaml`, then `dvc repro` again"
        )


# --- a workspace of the repository ---------------------------------------------------------
# What a clone holds that the tools read: the workflow, and the ignore files that decide what
# git and DVC see (tests and benchmarks run the real ones in temp copies).
WORKFLOW_FILES = ("Snakefile", ".gitignore", ".dvcignore")
WORKFLOW_DIR = Path("workflow")
# Snakemake finds its default profile in profiles/ beside the Snakefile: a link, as in the repo.
PROFILES_LINK = Path("profiles")


def copy_workflow(repo: Path, work: Path) -> None:
    """Copy the repository's workflow files into the new workspace `work`."""
    work.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        shutil.copy(repo / name, work / name)
    shutil.copytree(repo / WORKFLOW_DIR, work / WORKFLOW_DIR)
    os.symlink(WORKFLOW_DIR / "profiles", work / PROFILES_LINK)


# --- one orchestrator per workspace ---------------------------------------------------------
# `dvc repro` and `snakemake` both delete a job's outputs before re-running it, and they keep
# separate records of what is up to date: run together in one workspace they would delete
# each other's inputs. Each refuses to start a job while the other is running.
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"
DVC_RWLOCK = Path(".dvc") / "tmp" / "rwlock"


class WorkspaceBusy(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_if_dvc_running(root: Path = Path(".")) -> None:
    """Called by the Snakefile: DVC records the pid of every stage it runs in its rwlock."""
    try:
        lock = json.loads((root / DVC_RWLOCK).read_text())
    except (OSError, ValueError):
        return
    infos = list(lock.get("write", {}).values())
    infos += [info for entries in lock.get("read", {}).values() for info in entries]
    for info in infos:
        if isinstance(info, dict) and isinstance(info.get("pid"), int) and _alive(info["pid"]):
            raise WorkspaceBusy(
                f"dvc is running in this workspace (pid {info['pid']}: {info.get('cmd', '?')}); "
                "wait for it to finish or stop it before running snakemake here: both tools "
                "delete outputs before re-running a job"
            )


def refuse_if_snakemake_running(root: Path = Path(".")) -> None:
    """Called by every `seemore` command that DVC runs: Snakemake holds lock files in
    .snakemake/locks for as long as it runs."""
    locks = root / SNAKEMAKE_LOCKS
    if locks.is_dir() and any(locks.glob("*.lock")):
        raise WorkspaceBusy(
            f"snakemake is running in this workspace ({locks} holds its locks); wait for it "
            "to finish before `dvc repro` here (if no snakemake is running, a crashed run "
            "left them: `snakemake --unlock` clears them)"
        )
