"""LMA's lookahead in mixed precision (issue 13): θ − a·u is formed in fp32 from the fp32
master weights and autocast covers only the forward, so the rate gradient under CPU bf16
autocast stays close to the fp32 one; precision is chosen by what the device runs natively."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from tiny_backbones import TinyConfig, TinyStepWise, geometry, moving_square_clips

from seemore.method.lma import LMAUpdater
from seemore.method.objective import PlainObjective
from seemore.method.settings import LMAConfig
from seemore.train import precision_for


def hypergradient(autocast) -> torch.Tensor:
    torch.manual_seed(0)
    objective = PlainObjective(TinyStepWise(TinyConfig(hidden=8), geometry(size=8)))
    updater = LMAUpdater(objective, 1e-3, LMAConfig(a_max=2e-3), autocast, None)
    clip = moving_square_clips(4, geometry(size=8))
    mask = torch.ones(4, clip.shape[1] - 2)
    objective.zero_grad()
    updater.loss_and_backward(clip, mask)
    gradient, _ = updater.lookahead_hypergradient(clip, mask, updater.advance_moments())
    for parameter in objective.parameters():
        assert parameter.dtype == torch.float32  # master weights stay fp32
    return gradient


def test_rate_gradient_under_bf16_autocast_matches_fp32() -> None:
    full = hypergradient(nullcontext)
    mixed = hypergradient(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert full.dtype == mixed.dtype == torch.float64
    assert not torch.equal(full, mixed)  # bf16 did run
    # bf16 keeps 8 mantissa bits: a few per cent on a sum of products.
    torch.testing.assert_close(mixed, full, rtol=5e-2, atol=1e-3 * full.abs().max().item())


def test_cpu_trains_in_fp32() -> None:
    name, autocast = precision_for(torch.device("cpu"))
    assert name == "fp32"
    with autocast():
        assert not torch.is_autocast_enabled("cpu")
