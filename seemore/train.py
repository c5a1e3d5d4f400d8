"""The training loop: one place for stage one and stage two of every variant (DESIGN.md §5, §8).

Stage one trains the variant's objective (plain or BDN) from scratch with Adam; stage two
starts from the stage-one checkpoint (weights and Adam moments) and continues the same
objective with the variant's stage-two updater (plain Adam fine-tuning or LMA). Only the
forward network is saved as the inference model.

A stage survives being killed: every `checkpoint_every` steps and on SIGTERM/SIGINT it writes
a partial checkpoint (weights, optimizer/LMA state, log, every random stream) under
`resume/` (seemore/checkpoint.py); the next run of the same stage with the same params
continues from it and ends bit-identical on CPU to a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from seemore import distributed
from seemore.backbones import Backbone, BackboneConfig, BackboneKind, ClipGeometry, build_backbone
from seemore.checkpoint import (
    CHECKPOINT_FORMAT,
    PARTIAL_CHECKPOINT,
    RESUME_ROOT,
    CheckpointError,
    clear_resume,
    load_checkpoint,
    resume_base,
    resume_dir,
    save_atomic,
)
from seemore.config import MethodConfig, TrainingConfig
from seemore.data import DataConfig
from seemore.data.base import Benchmark
from seemore.method.sampling import schedule_iteration
from seemore.method.updater import PassCounter
from seemore.method.variants import Variant, build_objective, build_updater
from seemore.producer import BatchProducer, MaskStream, stream_seed
from seemore.progress import PROGRESS_FILE, ProgressLog, TrainingDiverged, write_csv
from seemore.validation import Validation, model_file


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
    # experiment.checkpoint_every / log_every / compile: how the loop runs, never what it
    # computes beyond float rounding (not hashed).
    checkpoint_every: int = 1000
    log_every: int = 100
    compile: bool | str = "auto"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("experiment.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def precision_for(device: torch.device) -> tuple[str, Callable[[], AbstractContextManager[object]]]:
    """The forward pass's precision and its autocast: bf16 only on a CUDA device that runs it
    natively, else full fp32 (CPU runs fp32: deterministic, and CPU bf16 is slow). Master
    weights, optimizer state and LMA's lookahead θ − a·u stay fp32 either way."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-autocast", lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return "fp32", contextlib.nullcontext


def compile_mode_for(setting: bool | str, device: torch.device) -> str | None:
    """The torch.compile mode of the training step for `experiment.compile` (None: eager).

    `auto` compiles on CUDA only: on the CPU the compile time (minutes per backbone here)
    outweighs what a compiled step saves in the embedded default (benchmarks/throughput.md).
    On CUDA the mode is `reduce-overhead` (CUDA graphs: a training batch has one static
    shape), elsewhere `default`. A data-parallel run stays eager: its objective's forward
    is wrapped per rank (seemore/distributed.py), which the compiled graphs do not cover.
    """
    if setting is False or (setting == "auto" and device.type != "cuda"):
        return None
    if distributed.world_size() > 1:
        print("experiment.compile: data-parallel runs train eagerly", flush=True)
        return None
    return "reduce-overhead" if device.type == "cuda" else "default"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def process_rng_state() -> dict[str, Any]:
    """The process-wide random streams (python, numpy, torch CPU and CUDA) as plain data."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_process_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _network_factory(job: TrainJob) -> tuple[ClipGeometry, Callable[[], Backbone]]:
    geometry = job.benchmark.geometry(job.data)
    return geometry, lambda: build_backbone(job.backbone_name, job.backbone, geometry)


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """SIGTERM/SIGINT (SLURM preemption, Ctrl-C) only note the signal: the loop checkpoints
    at the next step boundary and then ends the process by that signal."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _die_by(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _load_partial(path: Path, job: TrainJob, stage: int, steps: int) -> dict[str, Any]:
    partial = load_checkpoint(path)
    if partial.get("kind") != "partial" or partial.get("stage") != stage:
        raise CheckpointError(f"{path}: not a partial checkpoint of stage {stage}")
    if partial["params_hash"] != job.params_hash:
        raise CheckpointError(
            f"{path}: partial checkpoint of params hash {partial['params_hash']}, but the "
            f"current params give {job.params_hash}; refused. Delete it to start afresh"
        )
    if not 0 < partial["done"] < steps:
        raise CheckpointError(f"{path}: {partial['done']} steps done, expected 1..{steps - 1}")
    return partial


# How a stage ran that moves float rounding but not what it computes: recorded per stretch of
# steps, since a resumed stage may run with other settings than its partial checkpoint did.
RUN_SETTINGS = ("precision", "compile")


def resumed_settings(
    segments: list[dict[str, Any]], current: dict[str, Any], done: int
) -> tuple[list[dict[str, Any]], str | None]:
    """`segments` (each `{"from_step": k, **settings}`, as a partial checkpoint holds them)
    continued at step `done` with the `current` settings, and a line saying what changed
    (None when nothing did)."""
    last = segments[-1] if segments else {}
    changed = [key for key in RUN_SETTINGS if last.get(key) != current[key]]
    if not changed:
        return segments, None
    before = ", ".join(f"{key} {last.get(key, 'not recorded')}" for key in changed)
    now = ", ".join(f"{key} {current[key]}" for key in changed)
    return [*segments, {"from_step": done, **current}], (
        f"continuing with {now} where the partial checkpoint ran {before}: float rounding "
        "differs from a run never stopped"
    )


def settings_text(segments: list[dict[str, Any]], key: str) -> str:
    """One stats value for `key`: the setting, or each stretch's from its first step."""
    if len(segments) == 1 and segments[0]["from_step"] == 0:
        return str(segments[0][key])
    return "; ".join(f"{segment[key]} from step {segment['from_step']}" for segment in segments)


def train_stage(
    job: TrainJob,
    stage: int,
    prepared_dir: Path,
    out_dir: Path,
    stage1_hash: str | None = None,
    progress: bool = True,
    stage1_path: Path | None = None,
    resume_root: Path = RESUME_ROOT,
) -> Path:
    """Train one stage and write `stage<k>.pt` (stage two also `model.pt`, `train_log.csv`).

    Continues from this stage's partial checkpoint under `resume_root` when one exists for
    the job's params hash. Stage two starts from `stage1_path` (default `out_dir/stage1.pt`;
    the pipeline shares one stage one between the variants of an objective) and refuses it
    when its params hash is not `stage1_hash`. `progress` shows a live bar besides the log
    lines printed every `log_every` steps.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    output = out_dir / f"stage{stage}.pt"
    label = str(out_dir)
    seed_everything(job.seed)
    if job.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    geometry, make_network = _network_factory(job)
    distributed.init(job.device.type)
    objective = distributed.shard(
        build_objective(job.variant, make_network, job.method).to(job.device),
        job.training.batch_size,
    )
    stage_config = job.training.stage1 if stage == 1 else job.training.stage2
    steps = stage_config.steps
    precision, autocast = precision_for(job.device)
    updater = build_updater(job.variant, stage, objective, job.training, job.method, autocast)
    compile_mode = compile_mode_for(job.compile, job.device)
    if compile_mode is not None:
        updater.compile(compile_mode)
    current_settings = {"precision": precision, "compile": compile_mode or "eager"}
    segments = [{"from_step": 0, **current_settings}]

    # Data parallel: every rank holds the same state, rank 0 alone writes (distributed.py).
    writer = distributed.writes_files()
    partial_dir = resume_dir(output, job.params_hash, resume_root)
    partial_path = partial_dir / PARTIAL_CHECKPOINT
    base = resume_base(output, resume_root)
    others = sorted(
        p.parent.name
        for p in base.glob(f"*/{PARTIAL_CHECKPOINT}")
        if p.parent.name != job.params_hash
    )
    if others:
        print(
            f"{label}: not continuing the partial checkpoint(s) of other params {others} "
            f"under {base}: they were trained with other params",
            flush=True,
        )

    data_rng = np.random.default_rng([job.seed, stage, 0])
    masks = None
    if objective.forward_network.kind is BackboneKind.STEP_WISE:
        masks = MaskStream(
            stage_config.scheduled_sampling,
            job.training.batch_size,
            geometry.input_frames,
            geometry.total_frames,
            job.device,
            stream_seed(job.seed, stage, 1),
        )
    history: list[dict[str, Any]] = []
    previous_stats: dict[str, Any] = {}
    start_step = 0  # global step of this stage's first step (stage two follows stage one)
    done, seconds = 0, 0.0
    partial = _load_partial(partial_path, job, stage, steps) if partial_path.is_file() else None
    if partial is not None:
        objective.load_state_dict(partial["objective"])
        updater.load_state_dict(partial["optimizer"])
        updater.passes = PassCounter.from_dict(partial["passes"])
        history, previous_stats = partial["log"], partial["stats"]
        start_step, done, seconds = partial["start_step"], partial["done"], partial["seconds"]
        data_rng.bit_generator.state = partial["rng"]["data"]
        if masks is not None:
            masks.load_state(partial["rng"]["masks"])
        restore_process_rng_state(partial["rng"]["process"])
        print(f"{label}: continuing stage {stage} from step {done} ({partial_path})", flush=True)
        segments, changed = resumed_settings(partial.get("settings", []), current_settings, done)
        if changed:
            print(f"{label}: {changed}", flush=True)
    elif stage == 2:
        stage1_path = stage1_path or out_dir / "stage1.pt"
        stage1 = load_checkpoint(stage1_path)
        if stage1_hash is not None and stage1["params_hash"] != stage1_hash:
            raise ValueError(
                f"{stage1_path}: trained with params hash {stage1['params_hash']}, "
                f"but the current params give {stage1_hash}; re-run stage one"
            )
        objective.load_state_dict(stage1["objective"])
        updater.resume_moments(stage1["optimizer"])
        history, previous_stats, start_step = stage1["log"], stage1["stats"], stage1["step"]

    validation = Validation(
        job.benchmark.val_clips(job.data, prepared_dir),
        geometry.input_frames,
        stage_config.eval_every,
        steps,
        job.training.batch_size,
        job.device,
        score_last=stage == 2,
    )
    if partial is not None:
        validation.load_state_dict(partial["validation"])
    log = ProgressLog(
        label=label,
        stage=stage,
        steps=steps,
        csv_path=out_dir / "train_log.csv" if stage == 2 else partial_dir / "train_log.csv",
        status_path=partial_dir / PROGRESS_FILE,
        history=history,
        tensorboard_dir=out_dir / "tensorboard" / f"stage{stage}",
        write_files=writer,
    )
    data_state: dict[str, Any] = data_rng.bit_generator.state

    def checkpoint_partial() -> None:
        if not writer:
            return
        partial = {
            "format": CHECKPOINT_FORMAT,
            "kind": "partial",
            "stage": stage,
            "done": done,
            "start_step": start_step,
            "seconds": seconds + time.perf_counter() - started,
            "params_hash": job.params_hash,
            "settings": segments,
            "objective": objective.state_dict(),
            "optimizer": updater.state_dict(),
            "passes": updater.passes.as_dict(),
            "validation": validation.state_dict(),
            "log": log.history,
            "stats": previous_stats,
            "rng": {
                "data": data_state,
                "masks": None if masks is None else masks.state(),
                "process": process_rng_state(),
            },
        }
        save_atomic(partial, partial_path)

    def diverged(reason: str) -> TrainingDiverged:
        kept = (
            f"the last good checkpoint is kept: {partial_path}"
            if partial_path.is_file()
            else "no checkpoint was written yet"
        )
        return TrainingDiverged(
            f"{reason}; training stopped, {kept}. Check the learning rates and loss weights"
        )

    def flush() -> None:
        try:
            log.flush(done)
        except TrainingDiverged as error:
            raise diverged(str(error)) from None

    def check_parameters(step: int) -> None:
        bad = non_finite_parameters(objective)
        if bad:
            raise diverged(
                f"{label}: training diverged at stage {stage} step {step}: parameters became "
                f"non-finite ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})"
            )

    objective.train()
    log.start(done)
    producer = BatchProducer(
        job.benchmark.train_batches(job.data, prepared_dir, job.training.batch_size, data_rng),
        data_rng,
        job.device,
    )
    bar = tqdm(
        total=steps, initial=done, desc=label, disable=not (progress and writer), mininterval=2.0
    )
    started = time.perf_counter()
    try:
        with _stop_requests() as stop:
            while done < steps:
                global_step = start_step + done
                clip, data_state = producer.next()
                mask = None
                if masks is not None:
                    masks_config = stage_config.scheduled_sampling
                    mask = masks(schedule_iteration(masks_config, global_step, start_step))
                logs = updater.step(clip, mask)
                if job.training.reverse_input:
                    logs["loss_reversed_input"] = updater.step(clip.flip(1), mask)["loss"]
                done += 1
                logs.update(validation.after_step(done, global_step, objective.forward_network))
                log.record({"stage": stage, "step": global_step}, logs)
                bar.update()
                save = done < steps and (done % job.checkpoint_every == 0 or bool(stop))
                if save or done % job.log_every == 0 or done == steps:
                    flush()  # a checkpoint holds only rows that passed the guard
                if save:
                    check_parameters(global_step)
                    checkpoint_partial()
                    if stop:
                        print(f"{label}: signal {stop[0]}: checkpointed at step {done}", flush=True)
                        _die_by(stop[0])
    finally:
        producer.close()
        bar.close()
        log.close()
    seconds += time.perf_counter() - started

    stats = {
        **previous_stats,
        f"stage{stage}": {
            "steps": steps,
            "seconds": seconds,
            "seconds_per_step": seconds / steps,
            "precision": settings_text(segments, "precision"),
            # precision_for never picks fp16 (a GPU without native bf16 trains fp32), so no
            # gradient scaler ever runs; stated for metrics.json.
            "grad_scaler": False,
            "compile": settings_text(segments, "compile"),
            **updater.passes.as_dict(),
        },
    }
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "step": start_step + steps,
        "seed": job.seed,
        "params_hash": job.params_hash,
        "dataset_title": job.benchmark.title,
        "backbone": job.backbone_name,
        "variant": job.variant_name,
        "objective": objective.state_dict(),
        "optimizer": updater.state_dict(),
        "log": log.history,
        "stats": stats,
    }
    check_parameters(start_step + steps - 1)
    if not writer:
        return output
    if stage == 2:
        last = start_step + steps - 1
        network = objective.forward_network
        for selected, step, state in (
            ("last", last, None),
            ("best", validation.best_step, validation.best_state),
        ):
            if state is not None:
                network.load_state_dict(state)
            selection = {"selected": selected, "step": step, "recipe": job.training.recipe}
            save_inference_model(network, job, stats, out_dir / model_file(selected), selection)
        write_csv(log.history, out_dir / "train_log.csv")
    save_atomic(checkpoint, output)
    clear_resume(output, resume_root)
    return output


def non_finite_parameters(objective: torch.nn.Module) -> list[str]:
    """Names of parameters holding a NaN or inf, read with one transfer. Checked before every
    checkpoint: a step can leave non-finite weights although its own loss was finite."""
    named = list(objective.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


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
