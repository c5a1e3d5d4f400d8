"""Evaluation on the fixed test clips (DESIGN.md §6, §7): per-frame metrics over the
predicted horizon, a few sample clips for the report, inference latency; written as
`metrics.json`, `per_frame.csv` and `samples.npz`."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seemore.backbones.base import Backbone
from seemore.config import EvaluationConfig
from seemore.data.base import atomic_write_bytes, to_unit_float
from seemore.metrics import (
    MetricUnavailable,
    load_lpips,
    mae_per_frame,
    mse_per_frame,
    psnr_per_frame,
    ssim_per_frame,
)

METRICS = ("mse", "mae", "ssim", "psnr", "lpips")
METRICS_FILE = "metrics.json"
PER_FRAME_FILE = "per_frame.csv"
SAMPLES_FILE = "samples.npz"


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
            for name in METRICS
        }


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


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
    channels = clips.shape[2]
    unavailable: dict[str, str] = {}
    lpips_scorer = None
    if not config.lpips:
        unavailable["lpips"] = "disabled in params.yaml (evaluation.lpips: false)"
    else:
        try:
            lpips_scorer = load_lpips(channels, device)
        except MetricUnavailable as error:
            unavailable["lpips"] = str(error)

    predicted = network.predicted_frames(total_frames)
    per_clip: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    sample_predictions: list[np.ndarray] = []
    inference_seconds = 0.0
    network.eval()
    for start in range(0, len(clips), config.batch_size):
        truth_clip = to_unit_float(np.asarray(clips[start : start + config.batch_size]))
        observed = truth_clip.copy()
        observed[:, input_frames:] = 0.0
        batch = torch.from_numpy(observed).to(device)
        _synchronize(device)
        began = time.perf_counter()
        with torch.inference_mode():
            frames = network(batch, None).frames
        _synchronize(device)
        inference_seconds += time.perf_counter() - began
        if frames.shape[1] != len(range(total_frames)[predicted]):
            raise ValueError(
                f"{type(network).__name__} returned {frames.shape[1]} frames; "
                f"predicted_frames({total_frames}) promises {predicted}"
            )
        prediction = frames[:, -horizon:].float().clamp(0.0, 1.0).cpu().numpy()
        truth = truth_clip[:, input_frames:]
        per_clip["mse"].append(mse_per_frame(prediction, truth))
        per_clip["mae"].append(mae_per_frame(prediction, truth))
        per_clip["ssim"].append(ssim_per_frame(prediction, truth))
        per_clip["psnr"].append(psnr_per_frame(prediction, truth))
        if lpips_scorer is not None:
            per_clip["lpips"].append(lpips_scorer(prediction, truth))
        missing_samples = config.samples - sum(len(s) for s in sample_predictions)
        if missing_samples > 0:
            sample_predictions.append(_to_uint8(prediction[:missing_samples]))

    per_frame = {
        name: np.concatenate(values).mean(axis=0) for name, values in per_clip.items() if values
    }
    sample_clips = to_unit_float(np.asarray(clips[: config.samples]))
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


def _per_frame_csv(evaluation: Evaluation) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["frame", *METRICS])
    for index in range(evaluation.horizon):
        row = [
            repr(float(evaluation.per_frame[name][index])) if name in evaluation.per_frame else ""
            for name in METRICS
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
