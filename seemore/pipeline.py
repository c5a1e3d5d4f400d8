"""The experiment matrix, its file layout (DESIGN.md §7) and which params each job reads.

Snakemake rules and DVC stages are both generated from / checked against this module, so the
two tools run the same jobs, write the same files and re-run on the same edits.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seemore.config import Params, section_hash

DATA_ROOT = Path("data")
RESULTS_ROOT = Path("results")
REPORTS_ROOT = Path("reports")

# Keys of params.yaml each job depends on ({dataset}/{backbone} are filled in per job).
# dvc.yaml lists the same keys; tests/test_pipeline.py keeps the two in step.
PREPARE_KEYS = ("data.{dataset}",)
TRAIN_COMMON_KEYS = (
    "data.{dataset}",
    "models.{dataset}.{backbone}",
    "training.{dataset}.recipe",
    "training.{dataset}.batch_size",
    "training.{dataset}.reverse_input",
    "training.{dataset}.grad_clip",
    "method",
)
STAGE_KEYS = {
    1: (*TRAIN_COMMON_KEYS, "training.{dataset}.stage1"),
    2: (*TRAIN_COMMON_KEYS, "training.{dataset}.stage1", "training.{dataset}.stage2"),
}
EVALUATE_KEYS = ("data.{dataset}", "evaluation")


@dataclass(frozen=True)
class Run:
    """One cell of the experiment matrix."""

    dataset: str
    backbone: str
    variant: str
    seed: int

    @property
    def directory(self) -> Path:
        return RESULTS_ROOT / self.dataset / self.backbone / self.variant / f"seed{self.seed}"


def runs(params: Params) -> Iterator[Run]:
    e = params.experiment
    for dataset, backbone, variant, seed in itertools.product(
        e.datasets, e.backbones, e.variants, e.seeds
    ):
        yield Run(dataset, backbone, variant, seed)


def raw_dir(dataset: str) -> Path:
    return DATA_ROOT / "raw" / dataset


def prepared_dir(dataset: str) -> Path:
    return DATA_ROOT / "prepared" / dataset


def lookup(params: Params, dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def keys_hash(params: Params, keys: tuple[str, ...], **names: str) -> str:
    """Hash of the values of `keys` (with {dataset}/{backbone} filled from `names`)."""
    filled = [key.format(**names) for key in keys]
    return section_hash({key: lookup(params, key) for key in filled})


def stage_hash(params: Params, run: Run, stage: int) -> str:
    """What a stage's checkpoint was trained from: its params, variant and seed."""
    return section_hash(
        keys_hash(params, STAGE_KEYS[stage], dataset=run.dataset, backbone=run.backbone),
        run.variant,
        run.seed,
    )
