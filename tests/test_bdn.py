"""BDN (stage one): the two directions, their alignment and distillation terms."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
from tiny_backbones import (
    TinyClipWise,
    TinyConfig,
    TinyStepWise,
    geometry,
    moving_square_clips,
)

from seemore.backbones import Backbone, Output
from seemore.config import BDNConfig
from seemore.method.bdn import BidirectionalObjective
from seemore.method.updater import AdamUpdater

BATCH = 2


def ones_mask(clip: torch.Tensor) -> torch.Tensor:
    return torch.ones(clip.shape[0], clip.shape[1] - 2)


def memoryless_step_wise() -> TinyStepWise:
    torch.manual_seed(0)
    network = TinyStepWise(TinyConfig(), geometry())
    with torch.no_grad():
        for cell in network.cells:
            cell["recurrent"].weight.zero_()
    return network


def period_two_clip() -> torch.Tensor:
    """Frames A, B, A, B, ...: frame k-1 equals frame k+1 for every interior k."""
    torch.manual_seed(1)
    pair = torch.rand(BATCH, 2, 1, 6, 6)
    return pair.repeat(1, geometry().total_frames // 2, 1, 1, 1)


def test_step_wise_distillation_is_zero_for_consistent_directions() -> None:
    # A memoryless network predicts frame k from frame k-1 alone (forward) or from frame k+1
    # alone (backward); on an A, B, A, B clip both see the same frame for every interior k.
    # An off-by-one alignment, or comparing g's outputs unflipped, would compare A with B.
    forward_net = memoryless_step_wise()
    objective = BidirectionalObjective(forward_net, copy.deepcopy(forward_net), BDNConfig())
    clip = period_two_clip()
    terms = objective(clip, ones_mask(clip)).terms
    assert float(terms["distill_state"]) == 0.0
    assert float(terms["distill_frame"]) == 0.0

    different_frames = torch.rand_like(clip)
    terms = objective(different_frames, ones_mask(clip)).terms
    assert float(terms["distill_state"]) > 1e-6
    assert float(terms["distill_frame"]) > 1e-6


def test_step_wise_distillation_is_positive_for_different_networks() -> None:
    forward_net = memoryless_step_wise()
    backward_net = copy.deepcopy(forward_net)
    with torch.no_grad():
        backward_net.head.bias.add_(0.5)
        backward_net.cells[1]["input"].bias.add_(0.5)
    objective = BidirectionalObjective(forward_net, backward_net, BDNConfig())
    clip = period_two_clip()
    terms = objective(clip, ones_mask(clip)).terms
    assert float(terms["distill_state"]) > 1e-6
    assert float(terms["distill_frame"]) > 1e-6


def mirror_clip_wise() -> TinyClipWise:
    """Encoder and decoder copy the frame through latent channel 0, the translator reverses
    time: on a palindromic clip it predicts the future exactly, in latents and in frames."""
    network = TinyClipWise(TinyConfig(), geometry())
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        network.encoder.weight[0, 0, 1, 1] = 1.0
        network.decoder.weight[0, 0, 1, 1] = 1.0
        network.translator["time"].weight.copy_(torch.eye(3).flip(0))
    return network


def palindromic_clip() -> torch.Tensor:
    torch.manual_seed(2)
    history = torch.rand(BATCH, 3, 1, 6, 6)
    return torch.cat([history, history.flip(1)], dim=1)


def test_clip_wise_terms_are_zero_for_consistent_directions() -> None:
    forward_net = mirror_clip_wise()
    objective = BidirectionalObjective(forward_net, copy.deepcopy(forward_net), BDNConfig())
    result = objective(palindromic_clip(), None)
    assert float(result.terms["loss_forward"]) == 0.0
    assert float(result.terms["distill_state"]) == 0.0
    assert float(result.terms["distill_frame"]) == 0.0
    assert float(result.terms["backtrack"]) == 0.0
    assert float(result.loss.detach()) == 0.0


def test_clip_wise_terms_are_positive_when_directions_disagree() -> None:
    forward_net = mirror_clip_wise()
    backward_net = copy.deepcopy(forward_net)
    with torch.no_grad():
        backward_net.translator["time"].weight.copy_(torch.eye(3))
    objective = BidirectionalObjective(forward_net, backward_net, BDNConfig())
    terms = objective(palindromic_clip(), None).terms
    assert float(terms["distill_state"]) > 1e-6
    assert float(terms["backtrack"]) > 1e-6


def test_backtracking_sees_the_forward_prediction() -> None:
    # g is exact on the true reversed clip, so backtracking is non-zero only through f.
    backward_net = mirror_clip_wise()
    forward_net = copy.deepcopy(backward_net)
    with torch.no_grad():
        forward_net.decoder.bias.add_(0.3)
    objective = BidirectionalObjective(forward_net, backward_net, BDNConfig())
    terms = objective(palindromic_clip(), None).terms
    assert float(terms["loss_backward"]) == 0.0
    assert float(terms["backtrack"]) > 1e-3


def test_backward_network_learns_the_reversed_clip() -> None:
    torch.manual_seed(3)
    forward_net = TinyStepWise(TinyConfig(), geometry())
    backward_net = TinyStepWise(TinyConfig(), geometry())
    objective = BidirectionalObjective(forward_net, backward_net, BDNConfig())
    clip = torch.rand(BATCH, 6, 1, 6, 6)
    terms = objective(clip, ones_mask(clip)).terms
    expected_backward, _ = backward_net.training_loss(clip.flip(1), ones_mask(clip))
    expected_forward, _ = forward_net.training_loss(clip, ones_mask(clip))
    torch.testing.assert_close(terms["loss_backward"], expected_backward.detach())
    torch.testing.assert_close(terms["loss_forward"], expected_forward.detach())


@pytest.mark.parametrize("network_class", [TinyStepWise, TinyClipWise])
def test_loss_is_the_weighted_sum_of_its_terms(network_class: type[Backbone]) -> None:
    torch.manual_seed(4)
    config = BDNConfig(state_weight=0.3, frame_weight=2.0, backtrack_weight=0.7)
    shape = geometry(2, 4)  # output > input: clip-wise directions share predicted frames
    objective = BidirectionalObjective(
        network_class(TinyConfig(), shape), network_class(TinyConfig(), shape), config
    )
    clip = torch.rand(BATCH, 6, 1, 6, 6)
    result = objective(clip, ones_mask(clip))
    terms = result.terms
    expected = (
        terms["loss_forward"]
        + terms["loss_backward"]
        + 0.3 * terms["distill_state"]
        + 2.0 * terms["distill_frame"]
        + 0.7 * terms.get("backtrack", torch.tensor(0.0))
    )
    torch.testing.assert_close(result.loss.detach(), expected)
    assert float(terms["distill_frame"]) > 0


@pytest.mark.parametrize("network_class", [TinyStepWise, TinyClipWise])
@pytest.mark.parametrize("mutual", [True, False])
def test_non_mutual_distillation_trains_only_the_forward_network(
    network_class: type[Backbone], mutual: bool
) -> None:
    torch.manual_seed(5)
    forward_net = network_class(TinyConfig(), geometry())
    backward_net = network_class(TinyConfig(), geometry())
    clip = torch.rand(BATCH, 6, 1, 6, 6)

    def gradients(distill: bool) -> tuple[torch.Tensor, torch.Tensor]:
        weight = 1.0 if distill else 0.0
        config = BDNConfig(
            state_weight=weight, frame_weight=weight, backtrack_weight=weight, mutual=mutual
        )
        objective = BidirectionalObjective(forward_net, backward_net, config)
        objective.zero_grad()
        objective(clip, ones_mask(clip)).loss.backward()
        return tuple(  # type: ignore[return-value]
            torch.cat([p.grad.flatten() for p in net.parameters()])
            for net in (forward_net, backward_net)
        )

    plain_forward, plain_backward = gradients(distill=False)
    distilled_forward, distilled_backward = gradients(distill=True)
    assert not torch.allclose(plain_forward, distilled_forward)
    assert torch.allclose(plain_backward, distilled_backward) is not mutual


@pytest.mark.parametrize("network_class", [TinyStepWise, TinyClipWise])
def test_a_short_bdn_run_lowers_distillation(network_class: type[Backbone]) -> None:
    torch.manual_seed(6)
    shape = geometry()
    objective = BidirectionalObjective(
        network_class(TinyConfig(), shape), network_class(TinyConfig(), shape), BDNConfig()
    )
    clip = moving_square_clips(4, shape)
    mask = ones_mask(clip)

    def distillation() -> float:
        with torch.no_grad():
            terms = objective(clip, mask).terms
        return float(terms["distill_state"] + terms["distill_frame"])

    before = distillation()
    updater = AdamUpdater(objective, 1e-2, nullcontext, None)
    for _ in range(40):
        updater.step(clip, mask)
    assert distillation() < 0.5 * before


def test_general_clip_wise_horizons_are_aligned_and_trainable() -> None:
    torch.manual_seed(7)
    for shape in (geometry(2, 4), geometry(4, 2)):
        objective = BidirectionalObjective(
            TinyClipWise(TinyConfig(), shape), TinyClipWise(TinyConfig(), shape), BDNConfig()
        )
        result = objective(torch.rand(BATCH, 6, 1, 6, 6), None)
        result.loss.backward()
        assert all(p.grad is not None for p in objective.parameters())
        assert (float(result.terms["distill_frame"]) > 0) == (
            shape.output_frames > shape.input_frames
        )


def test_refuses_networks_of_different_architectures() -> None:
    with pytest.raises(ValueError, match="TinyStepWise and TinyClipWise"):
        BidirectionalObjective(
            TinyStepWise(TinyConfig(), geometry()),
            TinyClipWise(TinyConfig(), geometry()),
            BDNConfig(),
        )
    with pytest.raises(ValueError, match="one clip geometry"):
        BidirectionalObjective(
            TinyStepWise(TinyConfig(), geometry()),
            TinyStepWise(TinyConfig(), geometry(2, 4)),
            BDNConfig(),
        )


class ClipWiseWithoutEncoding(TinyClipWise):
    def forward(self, clip: torch.Tensor, sampling_mask: torch.Tensor | None = None) -> Output:
        return super().forward(clip, sampling_mask)._replace(encoded=None)


def test_clip_wise_backbone_without_encodings_is_refused() -> None:
    objective = BidirectionalObjective(
        ClipWiseWithoutEncoding(TinyConfig(), geometry()),
        ClipWiseWithoutEncoding(TinyConfig(), geometry()),
        BDNConfig(),
    )
    with pytest.raises(ValueError, match="no `encoded` latents"):
        objective(torch.rand(BATCH, 6, 1, 6, 6), None)


@pytest.mark.parametrize(
    ("network_class", "levels"),
    [
        (TinyStepWise, ["layer0", "layer1", "head"]),
        (TinyClipWise, ["encoder", "translator", "decoder"]),
    ],
)
def test_level_groups_cover_both_networks(network_class: type[Backbone], levels: list[str]) -> None:
    objective = BidirectionalObjective(
        network_class(TinyConfig(), geometry()),
        network_class(TinyConfig(), geometry()),
        BDNConfig(),
    )
    groups = objective.level_groups()
    assert [[name for name, _ in network] for network in groups] == [
        [f"{role}.{level}" for level in levels] for role in ("f", "g")
    ]
    grouped = [name for network in groups for _, names in network for name in names]
    assert sorted(grouped) == sorted(name for name, _ in objective.named_parameters())
    assert all(names for network in groups for _, names in network)
