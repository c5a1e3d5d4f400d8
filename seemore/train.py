"""The training loop: one place for stage one and stage two of every variant (DESIGN.md §5).

Stage one trains the variant's objective (plain or BDN) from scratch with Adam; stage two
starts from the stage-one checkpoint (weights and Adam moments) and continues the same
objective with the variant's stage-two updater (plain Adam fine-tuning or LMA). Only the
forward network is saved as the inference model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from seemore import distributed
from seemore.backbones import Backbone, BackboneConfig, BackboneKind, ClipGeometry, build_backbone
from seemore.config import MethodConfig, TrainingConfig
from seemore.data import DataConfig
from seemore.data.base import Benchmark, atomic_write_bytes, to_unit_float
from seemore.method.sampling import sampling_mask, schedule_iteration
from seemore.method.variants import Variant, build_objective, build_updater
from seemore.validation import Validation, model_file

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainJob:
    """Everything one stage of one run needs, as typed sections."""

    benchmark: type[Benchmark]
    data: DataConfig
    backbone_name: str
    backbone: BackboneConfig
    variant_name: str
    variant: Variant
    training: TrainingConfig
    method: MethodConfig
    seed: int
    params_hash: str
    device: torch.device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("experiment.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def autocast_for(device: torch.device) -> Callable[[], AbstractContextManager[object]]:
    """bf16 autocast on CUDA; full precision on CPU (deterministic, and CPU bf16 is slow)."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def save_atomic(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, lambda file: file.write(buffer.getbuffer()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint missing; run the stage that writes it first")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a seemore checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def _network_factory(job: TrainJob) -> tuple[ClipGeometry, Callable[[], Backbone]]:
    geometry = job.benchmark.geometry(job.data)
    return geometry, lambda: build_backbone(job.backbone_name, job.backbone, geometry)


def train_stage(
    job: TrainJob,
    stage: int,
    prepared_dir: Path,
    out_dir: Path,
    stage1_hash: str | None = None,
    progress: bool = True,
    stage1_path: Path | None = None,
) -> Path:
    """Train one stage and write `stage<k>.pt` (stage two also `model.pt`, `train_log.csv`).

    Stage two starts from `stage1_path` (default `out_dir/stage1.pt`; the pipeline shares one
    stage one between the variants of an objective) and refuses a stage-one checkpoint whose
    params hash is not `stage1_hash`.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    seed_everything(job.seed)
    if job.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    geometry, make_network = _network_factory(job)
    distributed.init(job.device.type)
    objective = distributed.shard(
        build_objective(job.variant, make_network, job.method).to(job.device),
        job.training.batch_size,
    )

    history: list[dict[str, float]] = []
    previous_stats: dict[str, Any] = {}
    start_step = 0
    if stage == 2:
        stage1_path = stage1_path or out_dir / "stage1.pt"
        stage1 = load_checkpoint(stage1_path)
        if stage1_hash is not None and stage1["params_hash"] != stage1_hash:
            raise ValueError(
                f"{stage1_path}: trained with params hash {stage1['params_hash']}, "
                f"but the current params give {stage1_hash}; re-run stage one"
            )
        objective.load_state_dict(stage1["objective"])
        history = stage1["log"]
        previous_stats = stage1["stats"]
        start_step = stage1["step"]

    stage_config = job.training.stage1 if stage == 1 else job.training.stage2
    autocast = autocast_for(job.device)
    updater = build_updater(job.variant, stage, objective, job.training, job.method, autocast)
    if stage == 2:
        updater.resume_moments(stage1["optimizer"])
    # Separate, seeded streams: which clips are drawn, and which frames are sampled true.
    data_rng = np.random.default_rng([job.seed, stage, 0])
    mask_rng = np.random.default_rng([job.seed, stage, 1])
    batches = job.benchmark.train_batches(job.data, prepared_dir, job.training.batch_size, data_rng)
    step_wise = objective.forward_network.kind is BackboneKind.STEP_WISE
    total = geometry.total_frames

    validation = Validation(
        job.benchmark.val_clips(job.data, prepared_dir),
        geometry.input_frames,
        stage_config.eval_every,
        stage_config.steps,
        job.training.batch_size,
        job.device,
        score_last=stage == 2,
    )
    objective.train()
    started = time.perf_counter()
    bar = tqdm(
        range(stage_config.steps),
        desc=f"stage {stage} {job.backbone_name}/{job.variant_name}/seed{job.seed}",
        disable=not progress,
        mininterval=2.0,
    )
    for step in bar:
        global_step = start_step + step
        clip = torch.from_numpy(to_unit_float(next(batches))).to(job.device)
        mask = None
        if step_wise:
            mask = torch.from_numpy(
                sampling_mask(
                    stage_config.scheduled_sampling,
                    schedule_iteration(stage_config.scheduled_sampling, global_step, start_step),
                    clip.shape[0],
                    geometry.input_frames,
                    total,
                    mask_rng,
                )
            ).to(job.device)
        logs = updater.step(clip, mask)
        if job.training.reverse_input:
            reversed_logs = updater.step(clip.flip(1), mask)
            logs["loss_reversed_input"] = reversed_logs["loss"]
        logs.update(validation.after_step(step + 1, global_step, objective.forward_network))
        history.append({"stage": stage, "step": global_step, **logs})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
    seconds = time.perf_counter() - started

    stats = {
        **previous_stats,
        f"stage{stage}": {
            "steps": stage_config.steps,
            "seconds": seconds,
            "seconds_per_step": seconds / stage_config.steps,
            **updater.passes.as_dict(),
        },
    }
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "step": start_step + stage_config.steps,
        "seed": job.seed,
        "params_hash": job.params_hash,
        "dataset_title": job.benchmark.title,
        "backbone": job.backbone_name,
        "variant": job.variant_name,
        "objective": objective.state_dict(),
        "optimizer": updater.state_dict(),
        "log": history,
        "stats": stats,
    }
    path = out_dir / f"stage{stage}.pt"
    save_atomic(checkpoint, path)
    if stage == 2:
        last = start_step + stage_config.steps - 1
        network = objective.forward_network
        for selected, step, state in (
            ("last", last, None),
            ("best", validation.best_step, validation.best_state),
        ):
            if state is not None:
                network.load_state_dict(state)
            selection = {"selected": selected, "step": step, "recipe": job.training.recipe}
            save_inference_model(network, job, stats, out_dir / model_file(selected), selection)
        write_train_log(history, out_dir / "train_log.csv")
    return path


def save_inference_model(
    network: Backbone,
    job: TrainJob,
    stats: dict[str, Any],
    path: Path,
    selection: dict[str, Any] | None = None,
) -> None:
    """The forward network alone; `load_inference_model` loads it into the plain backbone.
    `selection` (recorded as is): `selected` (`last`, or `best` on validation MSE), `step`
    (the run step whose weights it holds), `recipe` (the recipe it was trained by)."""
    save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "backbone": job.backbone_name,
            "config": job.backbone.model_dump(mode="json"),
            "geometry": vars(network.geometry),
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "params_hash": job.params_hash,
            "variant": job.variant_name,
            "seed": job.seed,
            "stats": stats,
            **(selection or {}),
        },
        path,
    )


def load_inference_model(path: Path) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild the plain backbone from `model.pt`; returns it and the saved metadata."""
    from seemore.backbones import BACKBONES

    saved = load_checkpoint(path)
    backbone_class = BACKBONES.get(saved["backbone"])
    config = backbone_class.config_class.model_validate(saved["config"], strict=False)
    network = backbone_class(config, ClipGeometry(**saved["geometry"]))
    network.load_state_dict(saved["state_dict"])
    network.eval()
    return network, saved


def write_train_log(history: list[dict[str, float]], path: Path) -> None:
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    payload = text.getvalue().encode()
    atomic_write_bytes(path, lambda file: file.write(payload))
