"""Read a results tree `results/<dataset>/<backbone>/<variant>/seed<k>/` into runs.

The expected grid of a dataset is every backbone, variant and seed seen anywhere under it,
so a run that was never done (or never evaluated) shows up as a missing cell with the
reason instead of silently vanishing from the report.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seemore.evaluate import METRIC_NAMES, METRICS_FILE, PER_FRAME_FILE, SAMPLES_FILE

TRAIN_LOG_FILE = "train_log.csv"
VARIANT_ORDER = ("baseline", "bdn", "lma", "seemore")
SEED_DIRECTORY = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class Run:
    """One cell of the grid. `record` is its metrics.json, or None with `problem` saying
    why (not run, not evaluated, unreadable)."""

    dataset: str
    backbone: str
    variant: str
    seed: int
    directory: Path
    record: dict[str, Any] | None
    problem: str | None
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    train_log: dict[str, np.ndarray] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        if self.record is None:
            return None
        value = self.record.get("metrics", {}).get(name)
        return None if value is None else float(value)

    def missing_reason(self, name: str) -> str | None:
        """Why `metric(name)` is None (None when the value is there)."""
        if self.record is None:
            return self.problem
        if self.metric(name) is not None:
            return None
        reason = self.record.get("unavailable", {}).get(name)
        return f"{name.upper()} unavailable: {reason}" if reason else f"{name} not recorded"

    @property
    def samples_path(self) -> Path:
        return self.directory / SAMPLES_FILE

    def get(self, *keys: str) -> Any:
        """A nested metrics.json value, None when the run or any key is absent."""
        value: Any = self.record
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


def variant_sort_key(name: str) -> tuple[int, str]:
    known = VARIANT_ORDER.index(name) if name in VARIANT_ORDER else len(VARIANT_ORDER)
    return known, name


def _read_numeric_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV as float arrays; empty cells (and text) become NaN."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return {}
    columns: dict[str, list[float]] = {name: [] for name in rows[0]}
    for row in rows:
        for name in columns:
            try:
                columns[name].append(float(row.get(name) or "nan"))
            except ValueError:
                columns[name].append(float("nan"))
    return {name: np.asarray(values) for name, values in columns.items()}


def _load_run(dataset: str, backbone: str, variant: str, seed: int, directory: Path) -> Run:
    names = {"dataset": dataset, "backbone": backbone, "variant": variant, "seed": seed}
    if not directory.is_dir():
        return Run(**names, directory=directory, record=None, problem="run not done")
    metrics_path = directory / METRICS_FILE
    if not metrics_path.is_file():
        return Run(
            **names,
            directory=directory,
            record=None,
            problem=f"not evaluated: {METRICS_FILE} missing",
        )
    try:
        record = json.loads(metrics_path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
            raise ValueError("expected an object with a 'metrics' object")
    except (OSError, ValueError) as error:
        return Run(
            **names,
            directory=directory,
            record=None,
            problem=f"{METRICS_FILE} unreadable: {error}",
        )
    per_frame_path = directory / str(record.get("per_frame_file") or PER_FRAME_FILE)
    per_frame = _read_numeric_csv(per_frame_path) if per_frame_path.is_file() else {}
    log_path = directory / TRAIN_LOG_FILE
    train_log = _read_numeric_csv(log_path) if log_path.is_file() else {}
    return Run(
        **names,
        directory=directory,
        record=record,
        problem=None,
        per_frame=per_frame,
        train_log=train_log,
    )


@dataclass(frozen=True)
class DatasetRuns:
    """Every cell of one dataset's grid, done or not."""

    name: str
    backbones: list[str]
    variants: list[str]
    seeds: list[int]
    runs: dict[tuple[str, str, int], Run]

    def run(self, backbone: str, variant: str, seed: int) -> Run:
        return self.runs[backbone, variant, seed]

    def cell(self, backbone: str, variant: str) -> list[Run]:
        """The runs of one backbone x variant over all seeds."""
        return [self.runs[backbone, variant, seed] for seed in self.seeds]

    def done(self) -> Iterable[Run]:
        return (run for run in self.runs.values() if run.record is not None)


def collect(results_dir: Path) -> list[DatasetRuns]:
    """All datasets under `results_dir`, sorted by name; each with its full grid."""
    found: dict[str, dict[tuple[str, str, int], Path]] = {}
    for seed_dir in sorted(results_dir.glob("*/*/*/seed*")):
        match = SEED_DIRECTORY.match(seed_dir.name)
        if not match or not seed_dir.is_dir():
            continue
        variant_dir = seed_dir.parent
        backbone_dir = variant_dir.parent
        dataset = backbone_dir.parent.name
        key = (backbone_dir.name, variant_dir.name, int(match.group(1)))
        found.setdefault(dataset, {})[key] = seed_dir
    datasets = []
    for dataset, directories in sorted(found.items()):
        backbones = sorted({key[0] for key in directories})
        variants = sorted({key[1] for key in directories}, key=variant_sort_key)
        seeds = sorted({key[2] for key in directories})
        runs = {}
        for backbone in backbones:
            for variant in variants:
                for seed in seeds:
                    directory = results_dir / dataset / backbone / variant / f"seed{seed}"
                    runs[backbone, variant, seed] = _load_run(
                        dataset, backbone, variant, seed, directory
                    )
        datasets.append(DatasetRuns(dataset, backbones, variants, seeds, runs))
    return datasets


__all__ = ["METRIC_NAMES", "DatasetRuns", "Run", "collect", "variant_sort_key"]
