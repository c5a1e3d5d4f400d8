"""Scheduled sampling masks for step-wise backbones (PredRNN-V2's schedules)."""

from __future__ import annotations

import math

import numpy as np

from seemore.method.settings import ScheduledSamplingConfig


def true_frame_probabilities(config: ScheduledSamplingConfig, step: int) -> tuple[float, float]:
    """(p on input steps, p on prediction steps) of feeding the true frame at iteration `step`."""
    if config.mode == "none":
        return 1.0, 1.0
    if config.mode == "linear":
        return 1.0, max(0.0, 1.0 - step / config.sampling_stop_iter)
    start, end = config.r_sampling_step_1, config.r_sampling_step_2
    if step < start:
        return 0.5, 0.5
    if step < end:
        input_p = 1.0 - 0.5 * math.exp(-(step - start) / config.r_exp_alpha)
        prediction_p = 0.5 - 0.5 * (step - start) / (end - start)
        return input_p, prediction_p
    return 1.0, 0.0


def sampling_mask(
    config: ScheduledSamplingConfig,
    step: int,
    batch_size: int,
    input_frames: int,
    total_frames: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`[B, T-2]` float32 mask: 1 = feed the true frame at steps 1..T-2, 0 = the prediction.

    Steps 1..input_frames-1 are input steps, the rest prediction steps; frame 0 is always true.
    """
    input_p, prediction_p = true_frame_probabilities(config, step)
    steps = np.arange(1, total_frames - 1)
    probability = np.where(steps < input_frames, input_p, prediction_p)
    return (rng.random((batch_size, total_frames - 2)) < probability).astype(np.float32)
