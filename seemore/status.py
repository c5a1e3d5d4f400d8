"""`seemore status`: every run of the active params with its stage, step, last loss and ETA,
read from the stage outputs and the live `progress.json` of unfinished stages."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from seemore import pipeline
from seemore.checkpoint import RESUME_ROOT, resume_dir
from seemore.config import Params
from seemore.progress import PROGRESS_FILE, format_duration, read_progress


def _last_loss(train_log: Path) -> float | None:
    try:
        with open(train_log, newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return None
    return float(rows[-1]["loss"]) if rows and rows[-1].get("loss") else None


def run_statuses(params: Params, resume_root: Path = RESUME_ROOT) -> list[dict[str, Any]]:
    """One row per run: the first stage not completed (or `done`) and its progress. Stage one
    is the job its objective shares (pipeline.StageOne)."""
    rows = []
    for run in pipeline.runs(params):
        row: dict[str, Any] = {"run": str(run.directory), "stage": "-", "state": "done"}
        for stage in (1, 2):
            output = run.stage_one.checkpoint if stage == 1 else run.directory / "stage2.pt"
            if output.is_file():
                continue
            row.update(stage=stage, state="pending")
            partial = resume_dir(output, pipeline.stage_hash(params, run, stage), resume_root)
            progress = read_progress(partial / PROGRESS_FILE)
            if progress is not None:
                row.update(
                    state=progress["state"],
                    step=f"{progress['step']}/{progress['steps']}",
                    loss=progress["loss"],
                    eta=None if progress["eta_s"] is None else format_duration(progress["eta_s"]),
                    updated=progress["updated"],
                )
            break
        else:
            row["loss"] = _last_loss(run.directory / "train_log.csv")
        rows.append(row)
    return rows


def format_statuses(rows: list[dict[str, Any]]) -> str:
    columns = ("run", "stage", "state", "step", "loss", "eta", "updated")
    table = [columns] + [
        tuple(
            f"{row[c]:.5g}" if isinstance(row.get(c), float) else str(row.get(c) or "-")
            for c in columns
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
