"""The ablation at CPU size: baseline vs bdn vs lma vs seemore over several seeds.

Runs the `seemore` CLI (prepare, train stage 1 and 2, evaluate) for every run of a params
file in a scratch directory, resuming where outputs already exist, then writes mean ± std
of the test metrics per variant, the cost of each variant and the rates LMA ended with to
benchmarks/ablation_cpu.{md,json}.

    .venv/bin/python benchmarks/ablation_cpu.py [--params benchmarks/ablation_cpu.yaml]
        [--workdir /tmp/seemore-ablation] [--jobs 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from method_setup import BENCHMARKS_DIR, display_path, write_result

from seemore import pipeline
from seemore.config import load_params

SEEMORE = str(Path(sys.executable).with_name("seemore"))
METRICS = ("mse", "mae", "ssim", "psnr")


def seemore(params: Path, workdir: Path, *command: str) -> None:
    subprocess.run([SEEMORE, "--params", str(params.resolve()), *command], cwd=workdir, check=True)


def train_and_evaluate(run: pipeline.Run, params: Path, workdir: Path, threads: int) -> None:
    names = ["--dataset", run.dataset, "--backbone", run.backbone, "--variant", run.variant]
    names += ["--seed", str(run.seed), "--threads", str(threads)]
    directory = workdir / run.directory
    for stage in (1, 2):
        if not (directory / f"stage{stage}.pt").is_file():
            seemore(params, workdir, "train", *names, "--stage", str(stage), "--quiet")
    if not (directory / "metrics.json").is_file():
        seemore(params, workdir, "evaluate", *names)


def copy_last_frame_mse(prepared: Path, input_frames: int, output_frames: int) -> float:
    """MSE (summed over C*H*W per frame, as the metrics) of repeating the last input frame."""
    clips = np.load(prepared / "test.npy", mmap_mode="r").astype(np.float64) / 255.0
    future = clips[:, input_frames : input_frames + output_frames]
    last = clips[:, input_frames - 1 : input_frames]
    return float(((future - last) ** 2).sum(axis=(2, 3, 4)).mean())


def final_rates(train_log: Path) -> dict[str, float]:
    with train_log.open() as file:
        rows = list(csv.DictReader(file))
    return {key[len("rate/") :]: float(v) for key, v in rows[-1].items() if key.startswith("rate/")}


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=BENCHMARKS_DIR / "ablation_cpu.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/seemore-ablation"))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--output", default="ablation_cpu", help="result name in benchmarks/")
    args = parser.parse_args()
    params = load_params(args.params)
    args.workdir.mkdir(parents=True, exist_ok=True)

    datasets = params.experiment.datasets
    for dataset in datasets:
        if not (args.workdir / pipeline.prepared_dir(dataset) / "meta.json").is_file():
            seemore(args.params, args.workdir, "prepare", "--dataset", dataset)
    runs = list(pipeline.runs(params))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for finished in [
            pool.submit(train_and_evaluate, run, args.params, args.workdir, args.threads)
            for run in runs
        ]:
            finished.result()

    records: dict[str, list[dict[str, Any]]] = {}
    rates: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        directory = args.workdir / run.directory
        records.setdefault(run.variant, []).append(
            json.loads((directory / "metrics.json").read_text())
        )
        if "rate/" in (directory / "train_log.csv").read_text().splitlines()[0]:
            rates.setdefault(run.variant, []).append(final_rates(directory / "train_log.csv"))

    summary: dict[str, Any] = {}
    for variant, runs_of_variant in records.items():
        cost = runs_of_variant[0]["cost"]
        summary[variant] = {
            "seeds": [r["seed"] for r in runs_of_variant],
            **{m: summarise([r["metrics"][m] for r in runs_of_variant]) for m in METRICS},
            "train_seconds": summarise(
                [r["provenance"]["wall_time_s"]["training"] for r in runs_of_variant]
            ),
            "passes": cost["passes"],
        }
    dataset = datasets[0]
    data_config = params.data[dataset]
    reference = copy_last_frame_mse(
        args.workdir / pipeline.prepared_dir(dataset),
        data_config.input_frames,
        data_config.output_frames,
    )
    params_argument = shlex.quote(display_path(args.params))
    command = (
        f".venv/bin/python benchmarks/ablation_cpu.py --params {params_argument} "
        f"--jobs {args.jobs} --threads {args.threads} --output {args.output}"
    )
    result = {
        "command": command,
        "params": display_path(args.params),
        "copy_last_frame_mse": reference,
        "variants": summary,
        "final_rates": rates,
    }
    write_result(args.output, result, markdown(result, params))


def markdown(result: dict[str, Any], params: Any) -> str:
    training = params.training["moving_mnist"]
    lines = [
        f"# Ablation at CPU size: {' vs '.join(params.experiment.variants)}",
        "",
        f"Command: `{result['command']}` (params: `{result['params']}`).",
        f"Embedded Moving MNIST stand-in at {params.data['moving_mnist'].image_size}x"
        f"{params.data['moving_mnist'].image_size}, {', '.join(params.experiment.backbones)}, "
        f"stage one {training.stage1.steps} + stage two {training.stage2.steps} steps of batch "
        f"{training.batch_size}, seeds {params.experiment.seeds}, CPU. Test metrics on "
        f"{params.data['moving_mnist'].test_clips} stored clips over the output frames; MSE and "
        "MAE summed over C*H*W per frame. Mean ± sample std over seeds.",
        "",
        "| variant | MSE | MAE | SSIM | PSNR | training s | passes stage 1 / 2 (fwd) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, row in result["variants"].items():
        cells = [f"{row[m]['mean']:.2f} ± {row[m]['std']:.2f}" for m in ("mse", "mae")]
        cells += [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in ("ssim", "psnr")]
        passes = " / ".join(str(stage["forward_passes"]) for stage in row["passes"].values())
        seconds = f"{row['train_seconds']['mean']:.0f}"
        lines.append(f"| {variant} | {' | '.join(cells)} | {seconds} | {passes} |")
    lines += [
        "",
        f"Reference: repeating the last input frame gives MSE {result['copy_last_frame_mse']:.2f}.",
        "",
        "Per-seed MSE: "
        + "; ".join(
            f"{v}: {', '.join(f'{x:.2f}' for x in row['mse']['values'])}"
            for v, row in result["variants"].items()
        ),
        "",
    ]
    for variant, per_seed in result["final_rates"].items():
        levels = list(per_seed[0])
        lines.append(f"Final LMA rates ({variant}, mean over seeds):")
        lines.append("")
        lines.append("| level | rate |")
        lines.append("|---|---|")
        for level in levels:
            lines.append(f"| {level} | {statistics.mean(r[level] for r in per_seed):.2e} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
