"""Typed settings of training and the method (DESIGN.md §5): what stage one, stage two,
scheduled sampling and LMA read. They live beside the method so it never imports
seemore.config (which imports the method's registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

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


class LRScheduleConfig(Section):
    """`training.<dataset>.stage<k>.lr_schedule`: the lr over a stage's Adam updates, built
    from torch.optim.lr_scheduler (seemore/schedules.py). LMA's stage two learns its rates,
    so meta-adapted variants take `constant` there."""

    kind: Literal["constant", "onecycle", "cosine"] = "constant"
    # onecycle: OneCycleLR peaking at the stage lr, ending at its start / final_div_factor.
    final_div_factor: PositiveFloat = 1e4
    # cosine: stepped every `steps_per_epoch` updates; linear warm-up from `warmup_lr` over
    # `warmup_epochs`, then cosine annealing to `min_lr`.
    steps_per_epoch: PositiveInt | None = None
    warmup_epochs: NonNegativeInt = 0
    warmup_lr: PositiveFloat = 1e-5
    min_lr: NonNegativeFloat = 1e-6

    @model_validator(mode="after")
    def _epochs_known(self) -> LRScheduleConfig:
        if self.kind == "cosine" and self.steps_per_epoch is None:
            raise ValueError("kind 'cosine' steps per epoch: set steps_per_epoch")
        return self


class StageConfig(Section):
    """`training.<dataset>.stage1` / `.stage2`: one stage's length, lr and schedules."""

    steps: PositiveInt = Field(le=MAX_STEPS)
    lr: PositiveFloat
    # Each stage has its own schedule (the authors restart it in stage two with other constants).
    scheduled_sampling: ScheduledSamplingConfig
    lr_schedule: LRScheduleConfig = LRScheduleConfig()
    # Score the validation split every this many iterations (null: never; `best` is then `last`).
    eval_every: PositiveInt | None = None


class StageTwoConfig(StageConfig):
    # Stage two's optimizer moments: `resumed` from stage one's Adam (seemore's choice: a fresh
    # Adam's first direction is a sign step whose LMA lookahead overshoots), or `fresh`, as
    # the authors' stage two builds new moments. Plain fine-tuning and LMA alike.
    moments: Literal["resumed", "fresh"] = "resumed"


class TrainingConfig(Section):
    """`training.<dataset>`: how every run on one dataset is trained."""

    # The recipe this section reproduces (seemore/recipes/<name>.yaml), or "custom".
    recipe: str = "custom"
    # Keys without defaults are those DVC stages list as params: DVC needs them in the file.
    batch_size: PositiveInt
    # PredRNN-V2's augmentation: each iteration also takes a step on the time-reversed batch.
    reverse_input: bool
    # Max gradient norm, or null for none.
    grad_clip: PositiveFloat | None
    stage1: StageConfig
    stage2: StageTwoConfig
    # Per-backbone overrides (`training.<dataset>.backbones.<backbone>`): any part of this
    # section, merged key by key over it for that backbone's jobs alone (OpenSTL tunes lr,
    # batch and schedule per method). Each job hashes only its own backbone's entry.
    backbones: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def updates_per_iteration(self) -> int:
        return 2 if self.reverse_input else 1

    def for_backbone(self, backbone: str) -> TrainingConfig:
        """The section a job of `backbone` trains by: this one with its override merged in
        (and no overrides left)."""
        override = self.backbones.get(backbone)
        if not override:
            return self.model_copy(update={"backbones": {}})
        return TrainingConfig.model_validate(
            merge_override(self.model_dump(exclude={"backbones"}), override)
        )


def merge_override(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in: mappings key by key, any other value replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_override(merged[key], value)
        else:
            merged[key] = value
    return merged


class BDNConfig(Section):
    state_weight: NonNegativeFloat = 1.0
    frame_weight: NonNegativeFloat = 1.0
    backtrack_weight: NonNegativeFloat = 1.0
    # mutual: both directions receive the distillation gradient (no detach).
    mutual: bool = True


class LMAConfig(Section):
    cycle: PositiveInt = 200
    meta_steps: NonNegativeInt = 50
    # What the cycle counts. `iteration` (the authors'): stage-two iteration i (from 1) is a
    # meta iteration when i mod cycle < meta_steps, and with reverse_input both updates of an
    # iteration are of its kind. `update`: update k (from 0) is a meta step when
    # k mod cycle < meta_steps, so reverse_input's two updates count separately.
    cycle_unit: Literal["iteration", "update"] = "update"
    # `shared`: one set of Adam moments, advanced by every gradient, gives both the lookahead
    # direction and the task step (seemore's: half the memory, and the lookahead follows the
    # step Adam would really take). `separate` (the authors'): the lookahead's moments advance
    # on meta steps only, the task step's on task steps only, each with its own step count.
    moments: Literal["shared", "separate"] = "shared"
    a_max: PositiveFloat = 2e-4
    order_lambda: NonNegativeFloat = 2.0
    order_weight: NonNegativeFloat = 10.0
    # Adam's lr on the rates; 1e-7 is the authors' value for a stage-two lr of 1e-4.
    meta_lr: PositiveFloat = 1e-7


class MethodConfig(Section):
    bdn: BDNConfig = BDNConfig()
    lma: LMAConfig = LMAConfig()
