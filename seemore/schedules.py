"""Learning-rate schedules of a stage (`training.<dataset>.stage<k>.lr_schedule`), built from
`torch.optim.lr_scheduler` so they are PyTorch's, not re-implemented:

- `constant`: the stage lr throughout (the SeeMore authors').
- `onecycle`: `OneCycleLR(max_lr=lr, total_steps=updates, final_div_factor)` with PyTorch's
  other defaults (warm-up over 30 %, cosine annealing, Adam's beta1 cycled 0.95 -> 0.85),
  stepped after every update: what OpenSTL builds for `sched = 'onecycle'`.
- `cosine`: stepped once per epoch of `steps_per_epoch` updates: `LinearLR` from `warmup_lr`
  to lr over `warmup_epochs`, then `CosineAnnealingLR` to `min_lr` over the remaining epochs
  (OpenSTL's `sched = 'cosine'` uses timm's CosineLRScheduler by epoch with the same warm-up
  and bounds; after a non-zero warm-up timm's cosine counts its epochs from 0, this one from
  the end of the warm-up — docs/recipes.md lists it).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    SequentialLR,
)

from seemore.method.settings import LRScheduleConfig


class StageSchedule:
    """Steps a stage's lr scheduler after each optimizer update (`after_update`)."""

    def __init__(self, config: LRScheduleConfig, scheduler: LRScheduler | None) -> None:
        self.config = config
        self.scheduler = scheduler
        self.updates = 0

    def after_update(self) -> None:
        self.updates += 1
        if self.scheduler is None:
            return
        per_epoch = self.config.kind == "cosine"
        if not per_epoch or self.updates % (self.config.steps_per_epoch or 1) == 0:
            self.scheduler.step()

    def state_dict(self) -> dict[str, object]:
        scheduler = None if self.scheduler is None else self.scheduler.state_dict()
        return {"updates": self.updates, "scheduler": scheduler}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])  # type: ignore[arg-type]
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])  # type: ignore[arg-type]


def build_schedule(
    optimizer: torch.optim.Optimizer, config: LRScheduleConfig, lr: float, updates: int
) -> StageSchedule:
    """The schedule of a stage of `updates` optimizer updates at base lr `lr`."""
    if config.kind == "constant":
        return StageSchedule(config, None)
    if config.kind == "onecycle":
        scheduler: LRScheduler = OneCycleLR(
            optimizer, max_lr=lr, total_steps=updates, final_div_factor=config.final_div_factor
        )
        return StageSchedule(config, scheduler)
    epochs = math.ceil(updates / (config.steps_per_epoch or 1))
    cosine_epochs = max(1, epochs - config.warmup_epochs)
    if config.warmup_epochs == 0:
        cosine = CosineAnnealingLR(optimizer, T_max=cosine_epochs, eta_min=config.min_lr)
        return StageSchedule(config, cosine)
    warmup = LinearLR(
        optimizer,
        start_factor=config.warmup_lr / lr,
        end_factor=1.0,
        total_iters=config.warmup_epochs,
    )
    cosine = CosineAnnealingLR(optimizer, T_max=cosine_epochs, eta_min=config.min_lr)
    scheduler = SequentialLR(optimizer, [warmup, cosine], milestones=[config.warmup_epochs])
    return StageSchedule(config, scheduler)
