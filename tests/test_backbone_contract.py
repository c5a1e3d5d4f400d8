"""The backbone interface (DESIGN.md §4), checked on every registered backbone at the tiny
configurations of backbone_cases.py: output shapes at any horizon, states aligned with the
frames they produced, finite gradients for every parameter, seeded determinism, levels that
cover every parameter once, what inference may read, the scheduled-sampling semantics of
step-wise backbones, reference configurations, and one BDN step and one LMA meta step.

Backbone-specific facts (hand-computed values, published counts) live in each backbone's file.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from backbone_cases import CASES, GEOMETRY, clip, make, mask

from seemore.backbones import BACKBONES, BackboneKind
from seemore.backbones.base import Backbone, Output
from seemore.backbones.patch import to_patches
from seemore.backbones.reference import REFERENCE_GEOMETRY, reference_config
from seemore.config import BDNConfig, LMAConfig
from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.updater import AdamUpdater

NAMES = sorted(CASES)
STEP_WISE = [name for name in NAMES if CASES[name].kind is BackboneKind.STEP_WISE]
# The distillation terms BDN adds for each kind of backbone (DESIGN.md §5).
DISTILLATION_TERMS = {
    BackboneKind.STEP_WISE: ["distill_state", "distill_frame"],
    BackboneKind.CLIP_WISE: ["distill_state", "backtrack"],
}


def training_mask(name: str, seed: int = 0) -> torch.Tensor | None:
    """A scheduled-sampling mask for `clip()` where the backbone takes one (step-wise)."""
    return mask(seed) if CASES[name].kind is BackboneKind.STEP_WISE else None


def seeded_run(
    network: Backbone, given: torch.Tensor, sampling_mask: torch.Tensor | None
) -> Output:
    # Stochastic depth (SimVP, TAU) draws from the global generator in training mode.
    torch.manual_seed(7)
    return network(given, sampling_mask)


def test_every_registered_backbone_has_a_case() -> None:
    assert {case.backbone for case in CASES.values()} == set(BACKBONES.names())


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_its_name_with_its_kind_and_config(name: str) -> None:
    case = CASES[name]
    backbone_class = BACKBONES.get(case.backbone)
    assert backbone_class.kind is case.kind
    assert backbone_class.config_class is type(case.config)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("frames", [6, 9])
def test_output_shapes_at_any_horizon(name: str, frames: int) -> None:
    case = CASES[name]
    network = make(name)
    out = network(clip(frames))
    first = 1 if case.kind is BackboneKind.STEP_WISE else GEOMETRY.input_frames
    assert network.predicted_frames(frames) == slice(first, frames)
    assert out.frames.shape == (2, frames - first, 2, 8, 12)
    assert out.states.shape == (2, frames - first, *case.state_shape)
    assert out.aux_loss.shape == ()
    if case.regularised:
        assert out.aux_loss.item() > 0
    else:
        assert out.aux_loss.item() == 0.0
    if case.kind is BackboneKind.STEP_WISE:
        assert out.encoded is None
    else:  # the input frames' latents, in the space of the states
        assert out.encoded is not None
        assert out.encoded.shape == (2, GEOMETRY.input_frames, *case.state_shape)


@pytest.mark.parametrize("name", NAMES)
def test_states_are_what_produced_each_frame(name: str) -> None:
    network = make(name)
    given = clip()
    out = network(given, training_mask(name))
    torch.testing.assert_close(CASES[name].readout(network, given, out.states), out.frames)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter_with_finite_gradients(name: str) -> None:
    network = make(name)
    loss, _ = network.training_loss(clip(), training_mask(name))
    loss.backward()
    for parameter_name, parameter in network.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_and_gradients_and_no_state_survives_a_call(name: str) -> None:
    first, second, other = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    sampling_mask = training_mask(name)
    a, b = seeded_run(first, clip(), sampling_mask), seeded_run(second, clip(), sampling_mask)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.states, b.states)
    assert torch.equal(a.aux_loss, b.aux_loss)
    assert not torch.equal(a.frames, seeded_run(other, clip(), sampling_mask).frames)
    # A call on another batch first leaves the next call unchanged: every state lives in the
    # carry, none on the module (OpenSTL's MIM keeps MIM-S's memory between calls).
    seeded_run(first, clip(seed=5), training_mask(name, seed=1))
    assert torch.equal(seeded_run(first, clip(), sampling_mask).frames, a.frames)
    gradients = []
    for _ in range(2):
        first.zero_grad()
        torch.manual_seed(7)
        first.training_loss(clip(), sampling_mask)[0].backward()
        gradients.append([p.grad.clone() for p in first.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*gradients, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_levels_cover_every_parameter_once_shallow_to_deep(name: str) -> None:
    network = make(name)
    levels = network.levels()
    assert tuple(level for level, _ in levels) == CASES[name].levels
    listed = [p for _, members in levels for p in members]
    assert sorted(listed) == sorted(p for p, _ in network.named_parameters())
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("name", NAMES)
def test_inference_never_reads_frames_after_the_inputs(name: str) -> None:
    # Inference (no mask) feeds step-wise backbones their own predictions from input_frames on
    # and never the last frame; clip-wise backbones read the input frames only.
    network = make(name).eval()
    original = clip(7)
    changed = original.clone()
    changed[:, GEOMETRY.input_frames :] = torch.rand_like(changed[:, GEOMETRY.input_frames :])
    with torch.no_grad():
        reference, after = network(original), network(changed)
    assert torch.equal(reference.frames, after.frames)
    assert torch.equal(reference.states, after.states)
    # ...while the last input frame does matter for every prediction from it on.
    changed[:, GEOMETRY.input_frames - 1] += 0.5
    with torch.no_grad():
        moved = network(changed).frames
    first_affected = GEOMETRY.input_frames - network.predicted_frames(7).start
    assert torch.equal(moved[:, :first_affected], reference.frames[:, :first_affected])
    assert (moved[:, first_affected:] - reference.frames[:, first_affected:]).abs().amax(
        dim=(0, 2, 3, 4)
    ).min() > 0


@pytest.mark.parametrize("name", STEP_WISE)
def test_inference_is_a_mask_of_true_inputs_then_own_predictions(name: str) -> None:
    network = make(name)
    schedule = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2)  # steps 1, 2 are inputs (3 inputs)
    with torch.no_grad():
        torch.testing.assert_close(network(clip(), schedule).frames, network(clip()).frames)


@pytest.mark.parametrize("name", STEP_WISE)
def test_all_ones_mask_is_teacher_forcing_and_causal(name: str) -> None:
    network = make(name)
    original = clip()
    ones = torch.ones(2, 4)
    with torch.no_grad():
        forced = network(original, ones)
        # Teacher forcing written out with the step API: every step gets the true frame.
        patches = to_patches(original, network.patch_size)
        carry = network.init_carry(patches[:, 0])
        for t in range(original.shape[1] - 1):
            result = network.step(patches[:, t], carry)
            carry = result.carry
            predicted = to_patches(forced.frames, network.patch_size)[:, t]
            torch.testing.assert_close(predicted, result.frame)
            torch.testing.assert_close(forced.states[:, t], result.state)
        # Within the input horizon inference also feeds true frames: identical outputs.
        short = original[:, : GEOMETRY.input_frames + 1]
        masked, inferred = network(short, torch.ones(2, 2)), network(short)
    assert torch.equal(masked.frames, inferred.frames)
    assert torch.equal(masked.states, inferred.states)
    # Causal in the true frames: frame k moves the predictions of frames > k only. The last
    # frame is only ever a target.
    for k in range(1, 6):
        changed = original.clone()
        changed[:, k] += 0.5
        with torch.no_grad():
            moved = network(changed, ones).frames
        assert torch.equal(moved[:, :k], forced.frames[:, :k])  # k = 5: every prediction
        if k < 5:
            assert not torch.equal(moved[:, k], forced.frames[:, k])


@pytest.mark.parametrize("name", STEP_WISE)
def test_all_zeros_mask_runs_free_from_the_first_frame(name: str) -> None:
    network = make(name)
    original = clip()
    changed = original.clone()
    changed[:, 1:] = torch.rand_like(changed[:, 1:])
    zeros = torch.zeros(2, 4)
    with torch.no_grad():
        assert torch.equal(network(original, zeros).frames, network(changed, zeros).frames)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_reference_configurations_fit_their_benchmarks(backbone: str) -> None:
    for dataset in REFERENCE_GEOMETRY:
        config, geometry = reference_config(backbone, dataset)
        assert isinstance(config, BACKBONES.get(backbone).config_class)
        assert config.check_geometry(geometry) == [], (backbone, dataset)


def two_directions(name: str) -> BidirectionalObjective:
    return BidirectionalObjective(make(name, seed=0), make(name, seed=1), BDNConfig())


@pytest.mark.parametrize("name", NAMES)
def test_one_bdn_step_trains_both_directions(name: str) -> None:
    objective = two_directions(name)
    before = {n: p.detach().clone() for n, p in objective.named_parameters()}
    logs = AdamUpdater(objective, 1e-3, nullcontext, None).step(clip(), training_mask(name))
    assert all(math.isfinite(value) for value in logs.values())
    for term in DISTILLATION_TERMS[CASES[name].kind]:
        assert logs[term] > 0, term
    for parameter_name, parameter in objective.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        assert not torch.equal(parameter, before[parameter_name]), parameter_name


@pytest.mark.parametrize("name", NAMES)
def test_one_lma_meta_step_reaches_every_level(name: str) -> None:
    objective = two_directions(name)
    sampling_mask = training_mask(name)
    before = {n: p.detach().clone() for n, p in objective.named_parameters()}
    updater = LMAUpdater(objective, 1e-3, LMAConfig(a_max=2e-3), nullcontext, None)
    assert updater.level_names == [
        f"{role}.{level}" for role in "fg" for level in CASES[name].levels
    ]
    assert updater.is_meta_step()
    objective.zero_grad()
    updater.loss_and_backward(clip(), sampling_mask)
    hypergradient, lookahead_loss = updater.lookahead_hypergradient(
        clip(), sampling_mask, updater.advance_moments()
    )
    assert math.isfinite(lookahead_loss)
    assert torch.isfinite(hypergradient).all() and (hypergradient != 0).all()
    rates = updater.rates.detach().clone()
    logs = updater.step(clip(), sampling_mask)
    assert logs["meta_step"] == 1.0 and math.isfinite(logs["lookahead_loss"])
    assert not torch.equal(updater.rates.detach(), rates)
    for parameter_name, parameter in objective.named_parameters():  # rates move, θ does not
        assert torch.equal(parameter, before[parameter_name]), parameter_name
