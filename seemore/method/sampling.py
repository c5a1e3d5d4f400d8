"""Scheduled sampling masks for step-wise backbones (PredRNN-V2's schedules)."""

from __future__ import annotations

import math

import numpy as np

from seemore.method.settings import ScheduledSamplingConfig


def schedule_iteration(config: ScheduledSamplingConfig, step: int, stage_start: int) -> int:
    """The iteration (from 1, as the authors' `itr`) the schedule reads at run step `step`
    (from 0, counted over the whole run) of a stage whose first run step is `stage_start`."""
    return step + 1 - (stage_start if config.counter == "restart" else 0)


def true_frame_probabilities(
    config: ScheduledSamplingConfig, iteration: int
) -> tuple[float, float]:
    """(p on input steps, p on prediction steps) of feeding the true frame at `iteration`
    (from 1), by PredRNN-V2's rules: reverse, with s1 = r_sampling_step_1, s2 =
    r_sampling_step_2, alpha = r_exp_alpha:
        i < s1: (0.5, 0.5);  s1 <= i < s2: (1 - 0.5 exp(-(i - s1)/alpha),
        0.5 - 0.5 (i - s1)/(s2 - s1));  i >= s2: (1, 0);
    linear: (1, 1 - i/sampling_stop_iter) before sampling_stop_iter, then (1, 0)."""
    if config.mode == "none":
        return 1.0, 1.0
    if config.mode == "linear":
        return 1.0, max(0.0, 1.0 - iteration / config.sampling_stop_iter)
    start, end = config.r_sampling_step_1, config.r_sampling_step_2
    if iteration < start:
        return 0.5, 0.5
    if iteration < end:
        input_p = 1.0 - 0.5 * math.exp(-(iteration - start) / config.r_exp_alpha)
        prediction_p = 0.5 - 0.5 * (iteration - start) / (end - start)
        return input_p, prediction_p
    return 1.0, 0.0


def sampling_mask(
    config: ScheduledSamplingConfig,
    iteration: int,
    batch_size: int,
    input_frames: int,
    total_frames: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`[B, T-2]` float32 mask: 1 = feed the true frame at steps 1..T-2, 0 = the prediction.

    Steps 1..input_frames-1 are input steps, the rest prediction steps; frame 0 is always true.
    """
    input_p, prediction_p = true_frame_probabilities(config, iteration)
    steps = np.arange(1, total_frames - 1)
    probability = np.where(steps < input_frames, input_p, prediction_p)
    return (rng.random((batch_size, total_frames - 2)) < probability).astype(np.float32)
