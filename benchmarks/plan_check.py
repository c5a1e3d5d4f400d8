"""`seemore plan`'s time estimate against measured CPU training times, embedded default.

Every (dataset, backbone) of the embedded default is trained for a few steps of each stage
with the variants `baseline` (plain, Adam) and `seemore` (BDN, then LMA with the embedded
cycle), through `seemore prepare` / `seemore train --threads 1` as the pipeline runs them.
Each stage's wall time (the loop's own `seconds`) is compared with the plan's FLOPs:

- the effective CPU rate of each stage = plan FLOPs / measured seconds;
- calibrated on stage one only (total FLOPs / total seconds), the rate predicts every stage
  two (LMA meta steps included), and the error of that prediction is reported per run.

    nice -n 10 .venv/bin/python benchmarks/plan_check.py [--steps 8]

Writes benchmarks/plan_check.json (the table is in plan_check.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import torch
import yaml

from seemore.cli import main
from seemore.config import load_params
from seemore.plan import Assumptions, build_plan
from seemore.recipes import compose_preset

HERE = Path(__file__).parent
VARIANTS = ["baseline", "seemore"]


def shortened(steps: int) -> dict:
    raw = compose_preset("embedded")  # the preset with its recipe's training and models
    raw["experiment"]["variants"] = VARIANTS
    for section in raw["training"].values():
        section["stage1"]["steps"] = steps
        section["stage2"]["steps"] = steps
    return raw


def measure(steps: int) -> list[dict]:
    raw = shortened(steps)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        Path("params.yaml").write_text(yaml.safe_dump(raw))
        plan = build_plan(load_params("params.yaml"), Assumptions())
        for dataset in raw["experiment"]["datasets"]:
            assert main(["prepare", "--dataset", dataset]) == 0
        for run_plan in plan.runs:
            run = run_plan.run
            names = ["--dataset", run.dataset, "--backbone", run.backbone]
            names += ["--variant", run.variant, "--seed", str(run.seed)]
            for stage in ("1", "2"):
                command = ["train", "--stage", stage, *names, "--threads", "1", "--quiet"]
                assert main(command) == 0
            checkpoint = run.directory / "stage2.pt"
            stats = torch.load(checkpoint, map_location="cpu", weights_only=True)["stats"]
            for stage_plan in (run_plan.stage1, run_plan.stage2):
                measured = stats[f"stage{stage_plan.stage}"]
                assert measured["forward_passes"] == stage_plan.passes, (run, stage_plan)
                rows.append(
                    {
                        "run": f"{run.dataset}/{run.backbone}/{run.variant}",
                        "stage": stage_plan.stage,
                        "updates": stage_plan.updates,
                        "passes": stage_plan.passes,
                        "flops": stage_plan.flops,
                        "seconds": measured["seconds"],
                    }
                )
    return rows


def summarise(rows: list[dict]) -> dict:
    stage1 = [r for r in rows if r["stage"] == 1]
    rate = sum(r["flops"] for r in stage1) / sum(r["seconds"] for r in stage1)
    for row in rows:
        row["gflops_per_s"] = row["flops"] / row["seconds"] / 1e9
        row["predicted_seconds"] = row["flops"] / rate
        row["error"] = row["predicted_seconds"] / row["seconds"] - 1
    stage2 = [r for r in rows if r["stage"] == 2]
    return {
        "calibrated_rate_gflops_per_core": rate / 1e9,
        "stage2_total_predicted_s": sum(r["predicted_seconds"] for r in stage2),
        "stage2_total_measured_s": sum(r["seconds"] for r in stage2),
        "stage2_median_abs_error": statistics.median(abs(r["error"]) for r in stage2),
        "stage2_max_abs_error": max(abs(r["error"]) for r in stage2),
        "rate_range_gflops": [
            min(r["gflops_per_s"] for r in rows),
            max(r["gflops_per_s"] for r in rows),
        ],
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="iterations per stage")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.steps)
    result = {
        "environment": {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads_per_job": 1,
            "steps_per_stage": args.steps,
        },
        "summary": summarise(rows),
        "rows": rows,
    }
    (HERE / "plan_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    for row in rows:
        print(
            f"{row['run']:<32} stage {row['stage']}  passes {row['passes']:>3}  "
            f"{row['flops'] / 1e9:8.1f} GFLOP  {row['seconds']:7.2f} s  "
            f"{row['gflops_per_s']:5.2f} GFLOP/s  predicted {row['predicted_seconds']:7.2f} s "
            f"({row['error']:+.0%})"
        )


if __name__ == "__main__":
    run()
