"""Fake results trees for report tests: real file formats (written by `write_evaluation`),
made-up numbers, no training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from seemore.evaluate import Evaluation, write_evaluation

SIZE = 16
INPUT_FRAMES = 4
HORIZON = 6
# Variant factors on the MSE level: every SeeMore component helps a little, consistently.
VARIANT_FACTOR = {"baseline": 1.0, "bdn": 0.93, "lma": 0.96, "seemore": 0.88}
LMA_LEVELS = ("layer0", "layer1", "head")


def moving_square(clip: int, frames: int, offset: int = 0, size: int = SIZE) -> np.ndarray:
    """uint8 `[frames, 1, size, size]`: a bright square moving right."""
    out = np.zeros((frames, 1, size, size), np.uint8)
    for t in range(frames):
        left = (2 * t + 3 * clip + offset) % (size - 4)
        out[t, 0, 4 + clip % 4 : 9 + clip % 4, left : left + 4] = 220
    return out


def write_run(
    root: Path,
    dataset: str,
    backbone: str,
    variant: str,
    seed: int,
    *,
    base_mse: float = 40.0,
    stand_in: bool = True,
    preset: str = "embedded",
    lpips_reason: str | None = "AlexNet weights alexnet-owt-7be5be79.pth not found",
    title: str = "Moving MNIST",
    description: str = "moving handwritten digits (scikit-learn digits, upscaled)",
    input_frames: int = INPUT_FRAMES,
    horizon: int = HORIZON,
    frame_size: int = SIZE,
    parameters: int = 123_456,
    latency: float = 0.004,
    protocol: str | None = "openstl",
    recipe: str | None = "openstl_mmnist",
    checkpoint: dict[str, object] | None = None,
    precision: dict[str, str] | None = None,
    grad_scaler: dict[str, bool] | None = None,
    both_conventions: bool = True,
) -> Path:
    """One evaluated run with per-frame curves, samples and a training log (with
    validation rows). `protocol`/`recipe`/`checkpoint`/`precision`/`grad_scaler` None and
    `both_conventions` False write a record as older versions did, without those fields."""
    rng = np.random.default_rng(1000 * seed + len(variant) + len(backbone))
    level = base_mse * VARIANT_FACTOR.get(variant, 1.0) * (1 + 0.02 * rng.standard_normal())
    frames = np.arange(1, horizon + 1)
    per_frame = {
        "mse": level * (0.5 + 0.1 * frames),
        "mae": 3 * level * (0.5 + 0.08 * frames),
        "ssim": 0.95 - 0.01 * frames * (level / base_mse),
        "psnr": 25 - 0.3 * frames * (level / base_mse),
    }
    if both_conventions:
        per_frame["mse_unclamped"] = 1.01 * per_frame["mse"]
        per_frame["mae_unclamped"] = 1.01 * per_frame["mae"]
        per_frame["ssim_openstl"] = per_frame["ssim"] + 0.02
    if lpips_reason is None:
        per_frame["lpips"] = 0.05 + 0.01 * frames * (level / base_mse)
    clips = np.stack([moving_square(c, input_frames + horizon, size=frame_size) for c in range(3)])
    offset = 2 * input_frames + 1 + seed % 2
    predictions = np.stack(
        [moving_square(c, horizon, offset=offset, size=frame_size) for c in range(3)]
    )
    evaluation = Evaluation(
        per_frame=per_frame,
        unavailable={} if lpips_reason is None else {"lpips": lpips_reason},
        samples={
            "inputs": clips[:, :input_frames],
            "truth": clips[:, input_frames:],
            "predictions": predictions,
        },
        clips=32,
        inference_seconds_per_clip=latency * (1 + 0.01 * seed),
    )
    header = {
        "dataset": dataset,
        "dataset_title": title,
        "backbone": backbone,
        "variant": variant,
        "seed": seed,
        "preset": preset,
        "data": {
            "source": "embedded" if stand_in else "download",
            "stand_in": stand_in,
            "description": description,
        },
        "horizon": {"input_frames": input_frames, "output_frames": horizon},
        **({} if protocol is None else {"protocol": protocol}),
        **({} if recipe is None else {"recipe": recipe}),
        **({} if checkpoint is None else {"checkpoint": checkpoint}),
        **({} if precision is None else {"precision": precision}),
        **({} if grad_scaler is None else {"grad_scaler": grad_scaler}),
        "provenance": {
            "params_hash": f"hash{seed}{variant}",
            "seed": seed,
            "git_revision": "0123abcd",
            "versions": {"torch": "2.14.1", "numpy": "2.0"},
            "device": "cpu: x86_64, 1 threads",
            "date": "2025-01-01T00:00:00+00:00",
            "wall_time_s": {"training": 12.5, "evaluation": 1.5},
        },
        "cost": {
            "parameters": parameters,
            "flops": 9_876_543,
            "train_seconds_per_step": {
                "stage1": 0.05 * (2 if variant in ("bdn", "seemore") else 1),
                "stage2": 0.06 * (1.5 if variant in ("lma", "seemore") else 1),
            },
            "passes": {
                "stage1": {"forward_passes": 20, "backward_passes": 20},
                "stage2": {"forward_passes": 10, "backward_passes": 10},
            },
        },
    }
    directory = root / dataset / backbone / variant / f"seed{seed}"
    write_evaluation(evaluation, directory, header)
    write_train_log(directory / "train_log.csv", variant, seed)
    return directory


VALIDATION_EVERY = 10


def write_train_log(path: Path, variant: str, seed: int) -> None:
    """step, stage, loss (decaying), `val_mse` every VALIDATION_EVERY steps (empty
    otherwise), and for LMA variants `rate/<level>` columns."""
    with_rates = variant in ("lma", "seemore")
    columns = ["step", "stage", "loss", "val_mse"]
    columns += [f"rate/{level}" for level in LMA_LEVELS] * with_rates
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for step in range(0, 30):
            stage = 1 if step < 20 else 2
            validation = 40 * np.exp(-step / 20) + 5 if step % VALIDATION_EVERY == 0 else ""
            row = [step, stage, 0.1 * np.exp(-step / 10) + 0.01 + 0.001 * seed, validation]
            if with_rates:
                row += [1e-4 * (1 + index) * (1 + step / 30) for index in range(len(LMA_LEVELS))]
                if stage == 1:
                    row[-len(LMA_LEVELS) :] = [""] * len(LMA_LEVELS)
            writer.writerow(row)


def write_ablation(
    root: Path,
    dataset: str = "moving_mnist",
    backbones: tuple[str, ...] = ("predrnn_v2", "convlstm"),
    variants: tuple[str, ...] = ("baseline", "bdn", "lma", "seemore"),
    seeds: tuple[int, ...] = (0, 1, 2),
    **options: object,
) -> None:
    for backbone in backbones:
        for variant in variants:
            for seed in seeds:
                write_run(root, dataset, backbone, variant, seed, **options)  # type: ignore[arg-type]
