"""Typed settings of the method (DESIGN.md §5): what stage one, stage two and scheduled
sampling read. They live beside the method so the method never imports seemore.config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from seemore.schema import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Section

# A stage longer than this cannot finish (80,000 iterations is the longest published recipe;
# 10 million is months at GPU speed): refused before any work starts.
MAX_STEPS = 10_000_000


class ScheduledSamplingConfig(Section):
    """Scheduled sampling for step-wise backbones, as in PredRNN-V2's training scripts.

    reverse: the true-frame probability rises from 0.5 to 1 on the input steps (exponential,
    time constant `r_exp_alpha`) while it falls from 0.5 to 0 on the prediction steps
    (linear), both between iterations `r_sampling_step_1` and `r_sampling_step_2`.
    linear: input steps always true; prediction steps fall linearly from 1 to 0 at
    `sampling_stop_iter`. none: teacher forcing on every step.
    """

    mode: Literal["reverse", "linear", "none"] = "reverse"
    # Which iteration count the schedule reads in stage two: `restart` counts stage two's
    # own iterations from 1 (the authors' stage two), `continue` the run's, stage one's
    # included. Stage one starts at iteration 1 either way.
    counter: Literal["restart", "continue"] = "continue"
    r_sampling_step_1: PositiveInt = 25000
    r_sampling_step_2: PositiveInt = 50000
    r_exp_alpha: PositiveFloat = 2500.0
    sampling_stop_iter: PositiveInt = 50000


class StageConfig(Section):
    """`training.<dataset>.stage1` / `.stage2`: one stage's length, lr and schedules."""

    steps: PositiveInt = Field(le=MAX_STEPS)
    lr: PositiveFloat
    # Each stage has its own schedule (the authors restart it in stage two with other constants).
    scheduled_sampling: ScheduledSamplingConfig
    # Score the validation split every this many iterations (null: never; `best` is then `last`).
    eval_every: PositiveInt | None = None


class BDNConfig(Section):
    state_weight: NonNegativeFloat = 1.0
    frame_weight: NonNegativeFloat = 1.0
    backtrack_weight: NonNegativeFloat = 1.0
    # mutual: both directions receive the distillation gradient (no detach).
    mutual: bool = True


class LMAConfig(Section):
    cycle: PositiveInt = 200
    meta_steps: NonNegativeInt = 50
    a_max: PositiveFloat = 2e-4
    order_lambda: NonNegativeFloat = 2.0
    order_weight: NonNegativeFloat = 10.0
    # Adam's lr on the rates; 1e-7 is the authors' value for a stage-two lr of 1e-4.
    meta_lr: PositiveFloat = 1e-7


class MethodConfig(Section):
    bdn: BDNConfig = BDNConfig()
    lma: LMAConfig = LMAConfig()
