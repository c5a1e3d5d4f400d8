"""Evaluation on the fixed test clips (DESIGN.md §6, §7): per-frame metrics over the
predicted horizon in every stored convention, a few sample clips for the report,
inference latency; written as `metrics.json`, `per_frame.csv` and `samples.npz`.

Everything is computed on the evaluation device (network, metrics, LPIPS); only the
per-frame sums and the sample clips come back to the host. `run_evaluation` first refuses
inputs that would give valid-looking wrong numbers: another run's model, test data of the
wrong dtype, range or length, and prepared metadata that disagrees with the data.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seemore.backbones.base import Backbone, ClipGeometry
from seemore.backbones.profile import profile
from seemore.config import EvaluationConfig
from seemore.data.base import META_FILE, Benchmark, DataConfig, atomic_write_bytes, read_meta
from seemore.data.download import sha256_file
from seemore.metrics import (
    METRICS,
    REFERENCE_CONVENTIONS,
    MetricUnavailable,
    frame_metrics,
    load_lpips,
)

METRIC_NAMES = tuple(METRICS)
METRICS_FILE = "metrics.json"
PER_FRAME_FILE = "per_frame.csv"
SAMPLES_FILE = "samples.npz"
# Stored splits: uint8 (0..255) or float16 already in [0, 1] (DESIGN.md §3).
STORED_DTYPES = (np.dtype(np.uint8), np.dtype(np.float16))
RANGE_CHECK_CLIPS = 256  # float splits are range-checked in chunks of this many clips


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one trained network on the test clips.

    per_frame:   metric -> `[horizon]` mean over clips of each predicted frame (frame k is
                 the k-th frame after the inputs); a metric that could not be computed is
                 absent here and named in `unavailable` with the reason.
    samples:     `inputs [S, input_frames, C, H, W]`, `truth` and `predictions`
                 `[S, horizon, C, H, W]`, uint8, for the first S test clips.
    """

    per_frame: dict[str, np.ndarray]
    unavailable: dict[str, str]
    samples: dict[str, np.ndarray]
    clips: int
    inference_seconds_per_clip: float

    @property
    def horizon(self) -> int:
        return len(self.per_frame["mse"])

    @property
    def means(self) -> dict[str, float | None]:
        """Each metric averaged over frames (and clips); None when unavailable."""
        return {
            name: float(np.mean(self.per_frame[name])) if name in self.per_frame else None
            for name in METRIC_NAMES
        }


def _to_uint8(frames: Tensor) -> np.ndarray:
    return torch.round(frames.clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu().numpy()


def _unit_float(stored: np.ndarray, device: torch.device) -> Tensor:
    """Stored clips as float32 in [0, 1] on `device` (the same values as `to_unit_float`)."""
    tensor = torch.from_numpy(np.array(stored)).to(device)  # a copy: memory maps are read-only
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    return tensor.float()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    network: Backbone,
    clips: np.ndarray,
    input_frames: int,
    config: EvaluationConfig,
    device: torch.device,
) -> Evaluation:
    """Predict the last `T - input_frames` frames of every clip `[N, T, C, H, W]` (uint8 or
    float16, e.g. a memory map) from its first `input_frames` and score them.

    The frames to predict are zeroed before the clip enters the network, so the truth
    cannot leak into a prediction whatever the backbone does with `sampling_mask=None`.
    """
    if clips.ndim != 5:
        raise ValueError(f"test clips: expected [N, T, C, H, W], got shape {clips.shape}")
    total_frames = clips.shape[1]
    horizon = total_frames - input_frames
    if horizon <= 0:
        raise ValueError(
            f"test clips have {total_frames} frames; nothing to predict after "
            f"input_frames={input_frames}"
        )
    unavailable: dict[str, str] = {}
    lpips_scorer = None
    if not config.lpips:
        unavailable["lpips"] = "disabled in params.yaml (evaluation.lpips: false)"
    else:
        try:
            lpips_scorer = load_lpips(clips.shape[2], device)
        except MetricUnavailable as error:
            unavailable["lpips"] = str(error)

    predicted = network.predicted_frames(total_frames)
    sums: dict[str, Tensor] = {}
    sample_predictions: list[np.ndarray] = []
    inference_seconds = 0.0
    network.eval()
    for start in range(0, len(clips), config.batch_size):
        truth_clip = _unit_float(clips[start : start + config.batch_size], device)
        observed = truth_clip.clone()
        observed[:, input_frames:] = 0.0
        _synchronize(device)
        began = time.perf_counter()
        with torch.inference_mode():
            frames = network(observed, None).frames
        _synchronize(device)
        inference_seconds += time.perf_counter() - began
        if frames.shape[1] != len(range(total_frames)[predicted]):
            raise ValueError(
                f"{type(network).__name__} returned {frames.shape[1]} frames; "
                f"predicted_frames({total_frames}) promises {predicted}"
            )
        raw = frames[:, -horizon:].float()
        truth = truth_clip[:, input_frames:]
        with torch.inference_mode():
            scores = frame_metrics(raw, truth)
            if lpips_scorer is not None:
                scores["lpips"] = lpips_scorer(raw.clamp(0.0, 1.0), truth)
        for name, values in scores.items():
            sums[name] = sums[name] + values.sum(dim=0) if name in sums else values.sum(dim=0)
        missing_samples = config.samples - sum(len(s) for s in sample_predictions)
        if missing_samples > 0:
            sample_predictions.append(_to_uint8(raw[:missing_samples]))

    scored = [name for name in METRIC_NAMES if name in sums]
    means = (torch.stack([sums[name] for name in scored]) / len(clips)).cpu().numpy()  # one read
    per_frame = dict(zip(scored, means, strict=True))
    sample_clips = _unit_float(clips[: config.samples], torch.device("cpu"))
    samples = {
        "inputs": _to_uint8(sample_clips[:, :input_frames]),
        "truth": _to_uint8(sample_clips[:, input_frames:]),
        "predictions": np.concatenate(sample_predictions)
        if sample_predictions
        else np.zeros((0, horizon, *clips.shape[2:]), np.uint8),
    }
    return Evaluation(
        per_frame=per_frame,
        unavailable=unavailable,
        samples=samples,
        clips=len(clips),
        inference_seconds_per_clip=inference_seconds / len(clips),
    )


@dataclass(frozen=True)
class RunIdentity:
    """Which run a model must come from: the run's names and its stage-two params hash."""

    dataset: str
    backbone: str
    variant: str
    seed: int
    params_hash: str


def check_model_identity(
    saved: dict[str, Any], path: Path, expected: RunIdentity, geometry: ClipGeometry
) -> None:
    """Refuse a model file written by another run or from other params."""
    wanted = {
        "params_hash": expected.params_hash,
        "backbone": expected.backbone,
        "variant": expected.variant,
        "seed": expected.seed,
    }
    if "dataset" in saved:
        wanted["dataset"] = expected.dataset
    for key, value in wanted.items():
        if saved.get(key) != value:
            hint = "; re-run its training" if key == "params_hash" else ""
            raise ValueError(
                f"{path}: {key} is {saved.get(key)!r}, expected {value!r} for run "
                f"{expected.dataset}/{expected.backbone}/{expected.variant}/seed"
                f"{expected.seed}{hint}"
            )
    built_for = saved.get("geometry") or {}
    for key in ("channels", "height", "width", "input_frames"):
        if built_for.get(key) != getattr(geometry, key):
            raise ValueError(
                f"{path}: built for {key} = {built_for.get(key)!r}, but data."
                f"{expected.dataset} gives {getattr(geometry, key)}"
            )


def check_test_data(
    clips: np.ndarray, path: Path, geometry: ClipGeometry, test_horizon: int
) -> None:
    """Refuse test clips of the wrong dtype, value range, frame shape or length."""
    if clips.dtype not in STORED_DTYPES:
        raise ValueError(
            f"{path}: dtype {clips.dtype}; expected uint8 (0..255) or float16 in [0, 1]"
        )
    expected_shape = (geometry.input_frames + test_horizon, geometry.channels)
    expected_shape += (geometry.height, geometry.width)
    if clips.ndim != 5 or clips.shape[1:] != expected_shape:
        raise ValueError(
            f"{path}: clips of shape {clips.shape[1:]} (frames, channels, height, width); "
            f"expected {expected_shape}: {geometry.input_frames} input + {test_horizon} "
            "predicted frames"
        )
    if len(clips) == 0:
        raise ValueError(f"{path}: no test clips")
    if clips.dtype.kind == "f":
        for start in range(0, len(clips), RANGE_CHECK_CLIPS):
            chunk = np.asarray(clips[start : start + RANGE_CHECK_CLIPS], dtype=np.float32)
            low, high = float(np.nanmin(chunk)), float(np.nanmax(chunk))
            found = "NaN values" if np.isnan(chunk).any() else f"values from {low:g} to {high:g}"
            if found == "NaN values" or low < 0.0 or high > 1.0:
                raise ValueError(
                    f"{path}: {found} in clips {start}..{start + len(chunk) - 1}; expected "
                    "float values in [0, 1]"
                )


def check_meta(
    meta: dict[str, Any], path: Path, clips: np.ndarray, data: DataConfig, protocol: str
) -> None:
    """Refuse prepared data whose meta.json disagrees with the data or the params (`protocol`:
    the protocol name the params select)."""
    recorded = {"source": data.source, "image_size": clips.shape[-1], "protocol": protocol}
    source_of = {
        "source": "params.yaml says",
        "image_size": "test.npy has frames of width",
        "protocol": "params.yaml says",
    }
    for key, value in recorded.items():
        if key in meta and meta[key] != value:
            raise ValueError(
                f"{path}: {key} is {meta[key]!r}, but {source_of[key]} {value!r}; "
                "re-run `seemore prepare`"
            )
    counted = (meta.get("counts") or {}).get("test_clips")
    if counted is not None and counted != len(clips):
        raise ValueError(
            f"{path}: counts.test_clips is {counted}, but test.npy holds {len(clips)} clips; "
            "re-run `seemore prepare`"
        )


def git_revision() -> str:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("seemore", "torch", "torchvision", "numpy", "scikit-image", "lpips"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class EvaluationJob:
    """One run to score: what it must be, where its inputs are, how to score it."""

    identity: RunIdentity
    benchmark: type[Benchmark]
    data: DataConfig
    evaluation: EvaluationConfig
    prepared_dir: Path
    model_path: Path
    out_dir: Path
    device: torch.device
    preset: str
    recipe: str | None
    selected_checkpoint: str | None  # best | last, unless the model file records it
    evaluation_hash: str


def run_evaluation(job: EvaluationJob, network: Backbone, saved: dict[str, Any]) -> Path:
    """Check `network` (loaded from `job.model_path` with its `saved` metadata) and the test
    data, score it and write the run's evaluation files; returns metrics.json's path."""
    started = time.perf_counter()
    geometry = job.benchmark.geometry(job.data)
    check_model_identity(saved, job.model_path, job.identity, geometry)
    clips = job.benchmark.test_clips(job.data, job.prepared_dir)
    check_test_data(clips, job.prepared_dir / "test.npy", geometry, job.data.test_horizon)
    meta = read_meta(job.prepared_dir)
    protocol = job.benchmark.protocol_name(job.data)
    check_meta(meta, job.prepared_dir / META_FILE, clips, job.data, protocol)

    evaluation = evaluate(
        network.to(job.device), clips, job.data.input_frames, job.evaluation, job.device
    )
    cost = profile(type(network), network.config, network.geometry)
    header = evaluation_header(job, saved, meta, cost)
    header["provenance"]["wall_time_s"]["evaluation"] = time.perf_counter() - started
    write_evaluation(evaluation, job.out_dir, header)
    return job.out_dir / METRICS_FILE


def evaluation_header(
    job: EvaluationJob, saved: dict[str, Any], meta: dict[str, Any], cost: tuple[int, int]
) -> dict[str, Any]:
    """metrics.json's description of the run: names, data, protocol, recipe, the checkpoint
    scored, provenance and cost (every value from the files actually used)."""
    identity = job.identity
    stats = saved.get("stats") or {}
    parameters, flops = cost
    return {
        "dataset": identity.dataset,
        "dataset_title": job.benchmark.title,
        "backbone": identity.backbone,
        "variant": identity.variant,
        "seed": identity.seed,
        "preset": job.preset,
        "protocol": meta.get("protocol"),
        "recipe": job.recipe,
        "checkpoint": _checkpoint_record(job, saved, stats),
        # The training forward pass's precision per stage, as the training loop recorded it.
        "precision": {
            name: stage["precision"] for name, stage in stats.items() if "precision" in stage
        },
        # Whether a gradient scaler ran in each stage (fp16 training), as recorded.
        "grad_scaler": {
            name: stage["grad_scaler"] for name, stage in stats.items() if "grad_scaler" in stage
        },
        "data": {key: meta.get(key) for key in ("source", "stand_in", "description")},
        "horizon": {
            "input_frames": job.data.input_frames,
            "output_frames": job.data.test_horizon,
        },
        "metric_conventions": {name: metric.convention for name, metric in METRICS.items()},
        "reference_conventions": REFERENCE_CONVENTIONS,
        "provenance": {
            "params_hash": saved["params_hash"],
            "model_sha256": sha256_file(job.model_path),
            "evaluation_hash": job.evaluation_hash,
            "seed": identity.seed,
            "git_revision": git_revision(),
            "versions": library_versions(),
            "device": device_label(job.device),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "wall_time_s": {
                "training": sum(stage.get("seconds", 0.0) for stage in stats.values()),
            },
        },
        "cost": {
            "parameters": parameters,
            "flops": flops,
            "train_seconds_per_step": {
                name: stage["seconds_per_step"]
                for name, stage in stats.items()
                if "seconds_per_step" in stage
            },
            "passes": {
                name: {k: v for k, v in stage.items() if k.endswith("passes")}
                for name, stage in stats.items()
            },
        },
    }


def _checkpoint_record(
    job: EvaluationJob, saved: dict[str, Any], stats: dict[str, Any]
) -> dict[str, Any]:
    """Which checkpoint was scored: the model file's own `selected`/`step` when it records
    them, else the job's selection; a `last` checkpoint is at the total steps trained."""
    selected = saved.get("selected", job.selected_checkpoint)
    step = saved.get("step")
    if step is None and selected == "last" and stats:
        step = sum(stage.get("steps", 0) for stage in stats.values())
    return {"selected": selected, "step": step, "file": job.model_path.name}


def _per_frame_csv(evaluation: Evaluation) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["frame", *METRIC_NAMES])
    for index in range(evaluation.horizon):
        row = [
            repr(float(evaluation.per_frame[name][index])) if name in evaluation.per_frame else ""
            for name in METRIC_NAMES
        ]
        writer.writerow([index + 1, *row])
    return text.getvalue().encode()


def write_evaluation(evaluation: Evaluation, out_dir: Path, header: dict[str, Any]) -> None:
    """Write `metrics.json` (`header` plus the metrics), `per_frame.csv` (frame = 1 for the
    first predicted frame; an unavailable metric's column is empty) and `samples.npz`."""
    record = {
        "metrics": evaluation.means,
        "unavailable": evaluation.unavailable,
        "per_frame_file": PER_FRAME_FILE,
        "samples_file": SAMPLES_FILE,
        "test_clips": evaluation.clips,
        "inference_seconds_per_clip": evaluation.inference_seconds_per_clip,
    }
    clashes = sorted(set(header) & set(record))
    if clashes:
        raise ValueError(f"metrics.json header must not set {clashes}: evaluation writes them")
    text = json.dumps({**header, **record}, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(out_dir / METRICS_FILE, lambda file: file.write(text.encode() + b"\n"))
    atomic_write_bytes(
        out_dir / PER_FRAME_FILE, lambda file: file.write(_per_frame_csv(evaluation))
    )
    atomic_write_bytes(
        out_dir / SAMPLES_FILE, lambda file: np.savez_compressed(file, **evaluation.samples)
    )
