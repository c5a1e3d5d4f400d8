"""The ablation variants (DESIGN.md §5). A variant is a stage-one objective and a stage-two
updater; every other training option applies to all variants alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seemore.method.settings import MethodConfig, TrainingConfig
from seemore.registry import Registry

# Torch only where a variant is built: the pipeline plans from this table without torch.
if TYPE_CHECKING:
    from seemore.backbones import Backbone
    from seemore.method.objective import Objective
    from seemore.method.updater import Autocast, Updater


@dataclass(frozen=True)
class Variant:
    label: str
    # Stage one (and the continued objective of stage two) trains f and g with distillation.
    bidirectional: bool
    # Stage two learns one rate per level (LMA) instead of plain Adam fine-tuning.
    meta_adapted: bool
    # One line for `seemore --help`.
    description: str


VARIANTS: Registry[Variant] = Registry("variant", __name__)

VARIANTS.register("baseline")(
    Variant(
        "baseline",
        bidirectional=False,
        meta_adapted=False,
        description="one network, plain Adam in both stages (no SeeMore)",
    )
)
VARIANTS.register("bdn")(
    Variant(
        "bdn",
        bidirectional=True,
        meta_adapted=False,
        description="bidirectional distillation (BDN), plain Adam in stage two",
    )
)
VARIANTS.register("lma")(
    Variant(
        "lma",
        bidirectional=False,
        meta_adapted=True,
        description="one network, level-specific meta-adaptation (LMA) in stage two",
    )
)
VARIANTS.register("seemore")(
    Variant(
        "seemore",
        bidirectional=True,
        meta_adapted=True,
        description="SeeMore: BDN, then LMA in stage two",
    )
)


def build_objective(
    variant: Variant, make_network: Callable[[], Backbone], method: MethodConfig
) -> Objective:
    if variant.bidirectional:
        from seemore.method.bdn import BidirectionalObjective

        return BidirectionalObjective(make_network(), make_network(), method.bdn)
    from seemore.method.objective import PlainObjective

    return PlainObjective(make_network())


def build_updater(
    variant: Variant,
    stage: int,
    objective: Objective,
    training: TrainingConfig,
    method: MethodConfig,
    autocast: Autocast,
) -> Updater:
    """Stage two's `resume_moments` continues stage one's moments only when
    `training.stage2.moments` is `resumed`; with `fresh` it leaves the new ones alone."""
    from seemore.method.updater import AdamUpdater

    stage_config = training.stage1 if stage == 1 else training.stage2
    updates = stage_config.steps * training.updates_per_iteration
    if stage == 1:
        return AdamUpdater(
            objective,
            stage_config.lr,
            autocast,
            training.grad_clip,
            schedule=stage_config.lr_schedule,
            updates=updates,
        )
    resume = training.stage2.moments == "resumed"
    if variant.meta_adapted:
        from seemore.method.lma import LMAUpdater

        return LMAUpdater(
            objective,
            training.stage2.lr,
            method.lma,
            autocast,
            training.grad_clip,
            updates_per_iteration=training.updates_per_iteration,
            resume=resume,
        )
    return AdamUpdater(
        objective,
        stage_config.lr,
        autocast,
        training.grad_clip,
        resume=resume,
        schedule=stage_config.lr_schedule,
        updates=updates,
    )
