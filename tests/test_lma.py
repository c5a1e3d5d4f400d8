"""LMA (stage two): hypergradient, ordering penalty, clamping, alternation, Adam task steps."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from tiny_backbones import TinyClipWise, TinyConfig, TinyStepWise, geometry, moving_square_clips
from torch.func import functional_call

from seemore.backbones.base import ClipGeometry
from seemore.backbones.predrnn_v2 import PredRNNV2, PredRNNV2Config
from seemore.config import BDNConfig, LMAConfig
from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import Objective, PlainObjective
from seemore.method.updater import AdamUpdater


def plain_step_wise(seed: int = 0) -> PlainObjective:
    torch.manual_seed(seed)
    return PlainObjective(TinyStepWise(TinyConfig(), geometry()))


def bdn_clip_wise(seed: int = 0) -> BidirectionalObjective:
    torch.manual_seed(seed)
    return BidirectionalObjective(
        TinyClipWise(TinyConfig(), geometry()), TinyClipWise(TinyConfig(), geometry()), BDNConfig()
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    clip = moving_square_clips(2, geometry())
    return clip, torch.ones(2, clip.shape[1] - 2)


def lma(
    objective: Objective,
    lr: float = 1e-3,
    updates_per_iteration: int = 1,
    resume: bool = True,
    **config: Any,
) -> LMAUpdater:
    config.setdefault("a_max", 2e-3)
    return LMAUpdater(
        objective,
        lr,
        LMAConfig(**config),
        nullcontext,
        None,
        updates_per_iteration=updates_per_iteration,
        resume=resume,
    )


@pytest.mark.parametrize("make_objective", [plain_step_wise, bdn_clip_wise])
def test_hypergradient_matches_finite_differences(
    make_objective: Callable[[], Objective],
) -> None:
    objective = make_objective().double()
    clip, mask = (t.double() for t in batch())
    updater = lma(objective, lr=0.05, a_max=1.0)
    with torch.no_grad():
        # Distinct rates per level, so a mix-up between levels shows.
        updater.rates.copy_(torch.linspace(0.02, 0.08, len(updater.rates)))
    objective.zero_grad()
    updater.loss_and_backward(clip, mask)
    directions = updater.advance_moments()
    hypergradient, _ = updater.lookahead_hypergradient(clip, mask, directions)

    level_of = {
        name: level
        for level, parameters in enumerate(updater.level_parameters)
        for name in parameters
    }
    theta = {name: p.detach().clone() for name, p in objective.named_parameters()}

    def lookahead_loss(rates: torch.Tensor) -> float:
        params = {n: theta[n] - rates[level_of[n]] * directions[n] for n in theta}
        with torch.no_grad():
            return float(functional_call(objective, params, (clip, mask)).loss)

    rates = updater.rates.detach().clone()
    step = 1e-6
    for level in range(len(rates)):
        offset = torch.zeros_like(rates)
        offset[level] = step
        estimate = (lookahead_loss(rates + offset) - lookahead_loss(rates - offset)) / (2 * step)
        relative = abs(float(hypergradient[level]) - estimate) / abs(estimate)
        assert relative < 1e-3, (updater.level_names[level], float(hypergradient[level]), estimate)


def test_adam_direction_is_what_adam_would_step() -> None:
    objective = plain_step_wise()
    reference = copy.deepcopy(objective)
    clip, mask = batch()
    updater = lma(objective, lr=1e-3, meta_steps=0)
    adam = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for _ in range(3):
        updater.step(clip, mask)
        adam.zero_grad()
        reference(clip, mask).loss.backward()
        adam.step()
    for mine, theirs in zip(objective.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_ordering_penalty_is_zero_only_for_ordered_rates() -> None:
    updater = lma(bdn_clip_wise(), order_lambda=2.0, order_weight=10.0)
    assert updater.level_chains == [[0, 1, 2], [3, 4, 5]]
    ordered = torch.tensor([1.0, 2.0, 5.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    assert float(updater.ordering_penalty(ordered)) == 0.0
    # Only within a network: f's deepest rate may exceed g's shallowest one.
    equal = torch.ones(6, dtype=torch.float64)
    # Each network: relu(2·1 − 1) twice.
    assert float(updater.ordering_penalty(equal)) == pytest.approx(10.0 * 4)
    one_inversion = torch.tensor([1.0, 2.0, 3.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    assert float(updater.ordering_penalty(one_inversion)) == pytest.approx(10.0 * 1.0)


def test_rates_never_leave_the_clamp() -> None:
    a_max = 2e-3
    updater = lma(plain_step_wise(), lr=1e-3, a_max=a_max, meta_lr=1.0, cycle=1, meta_steps=1)
    clip, mask = batch()
    seen = []
    for _ in range(6):
        logs = updater.step(clip, mask)
        rates = [logs[f"rate/{name}"] for name in updater.level_names]
        assert all(0.0 <= rate <= a_max for rate in rates)
        seen.extend(rates)
    # A step of 1.0 from 1e-3 lands far outside [0, a_max]: the clamp was exercised.
    assert min(seen) == 0.0 or max(seen) == a_max


def test_meta_steps_change_the_rates_and_leave_the_weights() -> None:
    objective = plain_step_wise()
    updater = lma(objective, lr=1e-3, a_max=2e-3, meta_lr=1e-4, cycle=4, meta_steps=2)
    clip, mask = batch()
    before = {n: p.detach().clone() for n, p in objective.named_parameters()}
    flags = []
    for _ in range(2):
        flags.append(updater.step(clip, mask)["meta_step"])
    assert all(torch.equal(before[n], p) for n, p in objective.named_parameters())
    assert not torch.allclose(updater.rates, torch.full_like(updater.rates, 1e-3))
    for _ in range(6):
        flags.append(updater.step(clip, mask)["meta_step"])
    assert flags == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert not all(torch.equal(before[n], p) for n, p in objective.named_parameters())


def test_task_steps_use_each_levels_rate() -> None:
    objective = plain_step_wise()
    updater = lma(objective, lr=1e-3, a_max=1e-3, meta_steps=0)
    with torch.no_grad():
        updater.rates[0] = 0.0  # freeze the shallowest level only
    before = {n: p.detach().clone() for n, p in objective.named_parameters()}
    updater.step(*batch())
    for level, parameters in enumerate(updater.level_parameters):
        for name, parameter in parameters.items():
            assert torch.equal(before[name], parameter) == (level == 0), name


def test_every_step_logs_the_same_keys_with_every_rate() -> None:
    updater = lma(bdn_clip_wise(), cycle=2, meta_steps=1)
    clip, mask = batch()
    meta_logs, task_logs = updater.step(clip, mask), updater.step(clip, mask)
    assert meta_logs.keys() == task_logs.keys()
    rate_keys = {key for key in meta_logs if key.startswith("rate/")}
    levels = ("encoder", "translator", "decoder")
    assert rate_keys == {f"rate/{role}.{level}" for role in "fg" for level in levels}
    assert meta_logs["lookahead_loss"] == meta_logs["lookahead_loss"]  # a number
    assert task_logs["lookahead_loss"] != task_logs["lookahead_loss"]  # NaN: no lookahead


def test_passes_count_the_lookahead() -> None:
    updater = lma(plain_step_wise(), cycle=3, meta_steps=1)
    clip, mask = batch()
    updater.step(clip, mask)
    assert updater.passes.as_dict() == {"forward_passes": 2, "backward_passes": 2, "meta_steps": 1}
    updater.step(clip, mask)
    assert updater.passes.as_dict() == {"forward_passes": 3, "backward_passes": 3, "meta_steps": 1}


def test_state_dict_resumes_identically() -> None:
    clip, mask = batch()
    objective = plain_step_wise()
    updater = lma(objective, meta_lr=1e-4, a_max=2e-3, cycle=3, meta_steps=1)
    for _ in range(4):
        updater.step(clip, mask)
    resumed_objective = copy.deepcopy(objective)
    resumed = lma(resumed_objective, meta_lr=1e-4, a_max=2e-3, cycle=3, meta_steps=1)
    resumed.load_state_dict(copy.deepcopy(updater.state_dict()))
    for _ in range(3):
        expected, got = updater.step(clip, mask), resumed.step(clip, mask)
        assert {k: float(v) for k, v in expected.items()} == pytest.approx(
            {k: float(v) for k, v in got.items()}, nan_ok=True
        )
    for mine, theirs in zip(objective.parameters(), resumed_objective.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_refuses_a_start_rate_above_the_clamp() -> None:
    with pytest.raises(ValueError, match=r"stage2\.lr = 0\.001.*a_max = 0\.0002"):
        lma(plain_step_wise(), lr=1e-3, a_max=2e-4)
    with pytest.raises(ValueError, match=r"meta_steps = 5 exceeds method\.lma\.cycle = 4"):
        lma(plain_step_wise(), cycle=4, meta_steps=5)


class HeadlessLevels(TinyStepWise):
    def levels(self) -> list[tuple[str, list[str]]]:
        return super().levels()[:-1]


def test_refuses_parameters_outside_every_level() -> None:
    objective = PlainObjective(HeadlessLevels(TinyConfig(), geometry()))
    with pytest.raises(ValueError, match=r"in no level.*networks\.f\.head\.weight"):
        lma(objective)


# --- Options of the reference recipes (docs/recipes.md): cycle unit, moments, adapter level.


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        # Iterations 1..6 with two updates each (reverse_input): meta when i mod 4 < 2, i.e.
        # i = 1, 4, 5; both updates of an iteration are of its kind.
        ("iteration", [1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0]),
        # Updates 0..11 counted one by one: meta when k mod 4 < 2.
        ("update", [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]),
    ],
)
def test_cycle_counts_iterations_or_updates(unit: str, expected: list[int]) -> None:
    updater = lma(
        plain_step_wise(), updates_per_iteration=2, cycle=4, meta_steps=2, cycle_unit=unit
    )
    clip, mask = batch()
    flags = [updater.step(clip, mask)["meta_step"] for _ in range(12)]
    assert flags == [float(flag) for flag in expected]


def gradient_at(objective: Objective, clip: torch.Tensor, mask: torch.Tensor) -> dict:
    probe = copy.deepcopy(objective)
    probe.zero_grad()
    probe(clip, mask).loss.backward()
    return {name: p.grad.detach().clone() for name, p in probe.named_parameters()}


@pytest.mark.parametrize("moments", ["separate", "shared"])
def test_task_step_reads_its_own_or_the_shared_moments(moments: str) -> None:
    """One meta step on batch 1, then one task step on batch 2, both at the same θ (a meta step
    never moves θ). The task step's Adam direction, by hand (β = 0.9, 0.999, ε = 1e-8):
    separate: the task moments saw only g2 (t = 1): u = g2 / (|g2| + ε);
    shared: the moments saw g1 then g2 (t = 2): m = 0.09 g1 + 0.1 g2, v = 0.000999 g1² +
    0.001 g2², u = (m / 0.19) / (sqrt(v / 0.001999) + ε)."""
    objective = plain_step_wise()
    updater = lma(objective, lr=1e-3, meta_lr=1e-5, cycle=2, meta_steps=1, moments=moments)
    first, second = moving_square_clips(2, geometry(), seed=1), moving_square_clips(2, geometry())
    mask = torch.ones(2, first.shape[1] - 2)
    g1, g2 = gradient_at(objective, first, mask), gradient_at(objective, second, mask)
    theta = {n: p.detach().clone() for n, p in objective.named_parameters()}
    assert updater.step(first, mask)["meta_step"] == 1.0
    if moments == "separate":
        assert (updater.lookahead_adam_steps, updater.adam_steps) == (1, 0)
        assert all(not m.any() for m in updater.exp_avg.values())  # task moments untouched
    rates = updater.rates.detach().tolist()
    assert updater.step(second, mask)["meta_step"] == 0.0
    assert updater.adam_steps == (1 if moments == "separate" else 2)
    for level, parameters in enumerate(updater.level_parameters):
        for name, parameter in parameters.items():
            a, b = g1[name].double(), g2[name].double()
            if moments == "separate":
                u = b / (b.abs() + 1e-8)
            else:
                m = 0.09 * a + 0.1 * b
                v = 0.999 * 0.001 * a**2 + 0.001 * b**2
                u = (m / (1 - 0.9**2)) / ((v / (1 - 0.999**2)).sqrt() + 1e-8)
            expected = theta[name].double() - rates[level] * u
            torch.testing.assert_close(parameter.double(), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("moments", ["separate", "shared"])
def test_stage_two_moments_fresh_or_resumed_from_stage_one(moments: str) -> None:
    objective = plain_step_wise()
    stage_one = AdamUpdater(objective, 1e-3, nullcontext, None)
    for _ in range(3):
        stage_one.step(*batch())
    saved = stage_one.state_dict()
    fresh = lma(objective, resume=False, moments=moments)
    fresh.resume_moments(saved)
    assert fresh.adam_steps == 0 and all(not m.any() for m in fresh.exp_avg.values())
    resumed = lma(objective, resume=True, moments=moments)
    resumed.resume_moments(saved)
    first = next(iter(resumed.exp_avg))
    index = [name for name, _ in objective.named_parameters()].index(first)
    assert torch.equal(resumed.exp_avg[first], saved["adam"]["state"][index]["exp_avg"])
    assert resumed.adam_steps == 3
    if moments == "separate":  # the lookahead's set starts from stage one's too
        assert resumed.lookahead_adam_steps == 3
        assert torch.equal(resumed.lookahead_exp_avg[first], resumed.exp_avg[first])


def predrnn_v2_pair(adapter_level: str) -> BidirectionalObjective:
    torch.manual_seed(0)
    config = PredRNNV2Config(
        num_hidden=[4, 4], filter_size=3, patch_size=1, adapter_level=adapter_level
    )
    clip_geometry = ClipGeometry(1, 4, 4, 2, 2)
    return BidirectionalObjective(
        PredRNNV2(config, clip_geometry), PredRNNV2(config, clip_geometry), BDNConfig()
    )


def test_predrnn_v2_adapter_is_its_own_level_outside_the_chain_or_in_the_head() -> None:
    # The authors': per network 0, 1 (layers), conv_last, adapter; the penalty chains
    # layer0 < layer1 < conv_last and never reads the adapter's rate.
    own = lma(predrnn_v2_pair("own"))
    assert own.level_names == [
        f"{role}.{level}" for role in "fg" for level in ("layer0", "layer1", "head", "adapter")
    ]
    assert own.level_chains == [[0, 1, 2], [4, 5, 6]]
    assert list(own.level_parameters[3]) == ["networks.f.adapter.weight"]
    assert list(own.level_parameters[2]) == ["networks.f.conv_last.weight"]
    ordered = torch.tensor([1.0, 2.0, 4.0, 0.0, 1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    assert float(own.ordering_penalty(ordered)) == 0.0  # adapter rates 0 and 9: no penalty
    ordered[2] = 3.0  # conv_last below 2 x layer1 in f: relu(2·2 − 3) = 1
    assert float(own.ordering_penalty(ordered)) == pytest.approx(10.0)
    # seemore's: the adapter shares the head's rate, three levels per network.
    merged = lma(predrnn_v2_pair("head"))
    levels = ("layer0", "layer1", "head")
    assert merged.level_names == [f"{role}.{level}" for role in "fg" for level in levels]
    assert merged.level_chains == [[0, 1, 2], [3, 4, 5]]
    assert sorted(merged.level_parameters[2]) == [
        "networks.f.adapter.weight",
        "networks.f.conv_last.weight",
    ]
