"""Stage lr schedules (OpenSTL's onecycle / cosine via torch.optim.lr_scheduler), checked
against values computed by hand from their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from seemore.method.settings import LRScheduleConfig
from seemore.schedules import build_schedule


def lrs(config: LRScheduleConfig, lr: float, updates: int) -> list[float]:
    """The lr each of `updates` updates uses."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=lr)
    schedule = build_schedule(optimizer, config, lr, updates)
    seen = []
    for _ in range(updates):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_update()
    return seen


def test_constant_keeps_the_stage_lr() -> None:
    assert lrs(LRScheduleConfig(), 1e-3, 5) == [1e-3] * 5


def test_onecycle_by_hand() -> None:
    # max 1e-3 over 10 updates: starts at max/25, peaks at update 0.3*10 - 1 = 2, ends at
    # start/1e4 at update 9, cosine in between: f(a, b, p) = b + (a - b)(cos(pi p) + 1)/2.
    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) * (math.cos(math.pi * pct) + 1) / 2

    start, peak, low = 1e-3 / 25, 1e-3, 1e-3 / 25 / 1e4
    expected = [anneal(start, peak, t / 2) for t in range(3)]
    expected += [anneal(peak, low, (t - 2) / 7) for t in range(3, 10)]
    got = lrs(LRScheduleConfig(kind="onecycle"), 1e-3, 10)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(4e-5) and got[2] == pytest.approx(1e-3)


def test_cosine_steps_per_epoch_after_a_linear_warmup_by_hand() -> None:
    # 10 updates of 2 per epoch = 5 epochs: 2 of warm-up from 1e-5, then cosine over 3 to 1e-6.
    config = LRScheduleConfig(
        kind="cosine", steps_per_epoch=2, warmup_epochs=2, warmup_lr=1e-5, min_lr=1e-6
    )
    lr, low = 1e-3, 1e-6
    per_epoch = [1e-5, 1e-5 + (lr - 1e-5) / 2]
    per_epoch += [low + (lr - low) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    expected = [value for value in per_epoch for _ in range(2)]
    assert lrs(config, lr, 10) == pytest.approx(expected, rel=1e-9)


def test_cosine_needs_its_epoch_length() -> None:
    with pytest.raises(ValueError, match="steps_per_epoch"):
        LRScheduleConfig(kind="cosine")


def test_the_stage_updater_follows_its_schedule_and_keeps_it_on_resume() -> None:
    from contextlib import nullcontext

    from tiny_backbones import TinyConfig, TinyStepWise, geometry, moving_square_clips

    from seemore.method.objective import PlainObjective
    from seemore.method.updater import AdamUpdater

    objective = PlainObjective(TinyStepWise(TinyConfig(), geometry()))
    clip = moving_square_clips(2, geometry())
    mask = torch.ones(2, clip.shape[1] - 2)
    stage_one = AdamUpdater(
        objective, 1e-3, nullcontext, None, schedule=LRScheduleConfig(kind="onecycle"), updates=10
    )
    seen = []
    for _ in range(3):
        seen.append(stage_one.optimizer.param_groups[0]["lr"])
        stage_one.step(clip, mask)
    assert seen == pytest.approx(lrs(LRScheduleConfig(kind="onecycle"), 1e-3, 10)[:3])
    # Stage two (constant 1e-4) resumes stage one's moments, not its lr or cycled betas.
    stage_two = AdamUpdater(objective, 1e-4, nullcontext, None)
    stage_two.resume_moments(stage_one.state_dict())
    group = stage_two.optimizer.param_groups[0]
    assert (group["lr"], group["betas"]) == (1e-4, (0.9, 0.999))
    assert stage_two.optimizer.state_dict()["state"], "moments not resumed"
