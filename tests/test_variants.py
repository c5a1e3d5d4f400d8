"""The four ablation variants: what each builds, and inference parity of a SeeMore model."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from tiny_backbones import TinyClipWise, TinyConfig, TinyStepWise, geometry, moving_square_clips

from seemore.backbones import Backbone
from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import PlainObjective
from seemore.method.settings import (
    LMAConfig,
    MethodConfig,
    ScheduledSamplingConfig,
    StageTwoConfig,
    TrainingConfig,
)
from seemore.method.updater import AdamUpdater
from seemore.method.variants import VARIANTS, build_objective, build_updater

METHOD = MethodConfig(lma=LMAConfig(a_max=2e-3, cycle=4, meta_steps=1))
STAGE = StageTwoConfig(steps=4, lr=1e-3, scheduled_sampling=ScheduledSamplingConfig())
TRAINING = TrainingConfig(
    batch_size=2, reverse_input=False, grad_clip=None, stage1=STAGE, stage2=STAGE
)


def make_step_wise() -> Backbone:
    return TinyStepWise(TinyConfig(), geometry())


@pytest.mark.parametrize(
    ("name", "objective_class", "stage_two_updater"),
    [
        ("baseline", PlainObjective, AdamUpdater),
        ("bdn", BidirectionalObjective, AdamUpdater),
        ("lma", PlainObjective, LMAUpdater),
        ("seemore", BidirectionalObjective, LMAUpdater),
    ],
)
def test_variant_builds_its_objective_and_updaters(
    name: str, objective_class: type, stage_two_updater: type
) -> None:
    variant = VARIANTS.get(name)
    objective = build_objective(variant, make_step_wise, METHOD)
    assert type(objective) is objective_class
    stage_one = build_updater(variant, 1, objective, TRAINING, METHOD, nullcontext)
    stage_two = build_updater(variant, 2, objective, TRAINING, METHOD, nullcontext)
    assert type(stage_one) is AdamUpdater
    assert type(stage_two) is stage_two_updater


def test_the_four_variants_are_registered() -> None:
    assert {"baseline", "bdn", "lma", "seemore"} <= set(VARIANTS.names())


@pytest.mark.parametrize("network_class", [TinyStepWise, TinyClipWise])
def test_seemore_inference_network_is_a_plain_backbone(network_class: type[Backbone]) -> None:
    def make_network() -> Backbone:
        return network_class(TinyConfig(), geometry())

    torch.manual_seed(0)
    clip = moving_square_clips(2, geometry())
    mask = torch.ones(2, clip.shape[1] - 2)
    seemore = VARIANTS.get("seemore")
    objective = build_objective(seemore, make_network, METHOD)
    for stage in (1, 2):
        updater = build_updater(seemore, stage, objective, TRAINING, METHOD, nullcontext)
        for _ in range(4):
            updater.step(clip, mask)
    trained = objective.forward_network
    baseline = build_objective(VARIANTS.get("baseline"), make_network, METHOD).forward_network

    assert type(trained) is type(baseline) is network_class
    count = sum(p.numel() for p in trained.parameters())
    assert count == sum(p.numel() for p in baseline.parameters())
    fresh = make_network()
    fresh.load_state_dict(trained.state_dict())
    with torch.no_grad():
        expected = trained.eval()(clip).frames
        got = fresh.eval()(clip).frames
        assert got.shape == baseline.eval()(clip).frames.shape
    torch.testing.assert_close(got, expected)
