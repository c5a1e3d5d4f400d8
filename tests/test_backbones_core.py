"""PredRNN-V2 and ConvLSTM: the backbone interface, rollout semantics, parameter counts."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from seemore.backbones import BACKBONES, BackboneKind, ClipGeometry, build_backbone
from seemore.backbones.base import Backbone
from seemore.backbones.convlstm import ConvLSTM, ConvLSTMConfig
from seemore.backbones.patch import to_patches
from seemore.backbones.predrnn import SpatioTemporalLSTMCell
from seemore.backbones.predrnn_v2 import PredRNNV2, PredRNNV2Config
from seemore.backbones.profile import count_flops, count_parameters
from seemore.backbones.reference import REFERENCE_GEOMETRY, reference_config

GEOMETRY = ClipGeometry(channels=2, height=8, width=12, input_frames=3, output_frames=3)
PATCH = 2
HIDDEN = [4, 4]
CONFIGS = {
    "predrnn_v2": PredRNNV2Config(num_hidden=HIDDEN, filter_size=3, patch_size=PATCH),
    "convlstm": ConvLSTMConfig(num_hidden=[3, 4], filter_size=3, patch_size=PATCH),
}
NAMES = sorted(CONFIGS)

# The authors' PredRNN-V2 (thuml/predrnn-pytorch, core/models/predrnn_v2.py) at the paper
# configuration, counted from its layer definitions: bias-free convs of each ST-LSTM cell
# conv_x (in -> 7*128), conv_h (128 -> 4*128), conv_m (128 -> 3*128), conv_o (256 -> 128),
# all 5x5, plus the cell's 1x1 conv_last (256 -> 128); the model's 1x1 conv_last (128 -> 16)
# and 1x1 adapter (128 -> 128). Cross-checked by instantiating their model.
AUTHORS_PREDRNN_V2_PAPER_PARAMETERS = 23_855_104


def make(name: str, seed: int = 0, geometry: ClipGeometry = GEOMETRY) -> Backbone:
    torch.manual_seed(seed)
    return build_backbone(name, CONFIGS[name], geometry)


def clip(frames: int = 6, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 2, 8, 12, generator=generator)


def test_registered_as_step_wise() -> None:
    assert BACKBONES.get("predrnn_v2") is PredRNNV2
    assert BACKBONES.get("convlstm") is ConvLSTM
    assert PredRNNV2.kind is ConvLSTM.kind is BackboneKind.STEP_WISE


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("frames", [6, 9])
def test_output_shapes_any_horizon(name: str, frames: int) -> None:
    network = make(name)
    out = network(clip(frames))
    hidden = CONFIGS[name].num_hidden[-1]
    assert out.frames.shape == (2, frames - 1, 2, 8, 12)
    assert out.states.shape == (2, frames - 1, hidden, 8 // PATCH, 12 // PATCH)
    assert out.aux_loss.shape == ()
    assert out.encoded is None
    assert network.predicted_frames(frames) == slice(1, frames)


@pytest.mark.parametrize("name", NAMES)
def test_states_are_what_produced_each_frame(name: str) -> None:
    # Both heads are a 1x1 conv of the top hidden state: frame i must be head(states[:, i]).
    network = make(name)
    out = network(clip(), torch.rand(2, 4))
    for i in range(out.frames.shape[1]):
        torch.testing.assert_close(
            to_patches(out.frames, PATCH)[:, i], network.conv_last(out.states[:, i])
        )


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter_with_finite_gradients(name: str) -> None:
    network = make(name)
    loss, _ = network.training_loss(clip(), torch.full((2, 4), 0.5))
    loss.backward()
    for parameter_name, parameter in network.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_network_and_deterministic_cpu_runs(name: str) -> None:
    first, second, other = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    mask = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    a, b = first(clip(), mask), second(clip(), mask)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.states, b.states)
    assert torch.equal(a.aux_loss, b.aux_loss)
    assert not torch.equal(a.frames, other(clip(), mask).frames)
    grads = []
    for _ in range(2):
        first.zero_grad()
        first.training_loss(clip(), mask)[0].backward()
        grads.append([p.grad.clone() for p in first.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*grads, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_levels_cover_every_parameter_once_shallow_to_deep(name: str) -> None:
    network = make(name)
    levels = network.levels()
    assert [level for level, _ in levels] == ["layer0", "layer1", "head"]
    flat = [p for _, members in levels for p in members]
    assert flat == [p for p, _ in network.named_parameters()]
    assert all(p.startswith(f"cell_list.{i}.") for i in range(2) for p in levels[i][1])
    assert "conv_last.weight" in levels[-1][1]


def test_predrnn_v2_adapter_sits_in_the_head_level() -> None:
    assert make("predrnn_v2").levels()[-1] == ("head", ["conv_last.weight", "adapter.weight"])


@pytest.mark.parametrize("name", NAMES)
def test_inference_never_reads_frames_after_the_inputs(name: str) -> None:
    # With mask None the steps from input_frames on are fed the network's own predictions and
    # the last frame is never an input, so no prediction may depend on frames >= input_frames.
    network = make(name)
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
    first_affected = GEOMETRY.input_frames - 1  # output index of frame input_frames
    assert torch.equal(moved[:, :first_affected], reference.frames[:, :first_affected])
    assert (moved[:, first_affected:] - reference.frames[:, first_affected:]).abs().amax(
        dim=(0, 2, 3, 4)
    ).min() > 0


@pytest.mark.parametrize("name", NAMES)
def test_all_ones_mask_is_teacher_forcing(name: str) -> None:
    network = make(name)
    ones = torch.ones(2, 4)
    original = clip()
    with torch.no_grad():
        forced = network(original, ones)
        # Within the input horizon inference also feeds true frames: identical outputs.
        short = original[:, : GEOMETRY.input_frames + 1]
        masked, inferred = network(short, torch.ones(2, 2)), network(short)
    assert torch.equal(masked.frames, inferred.frames)
    assert torch.equal(masked.states, inferred.states)
    # Teacher forcing is causal in the true frames: frame k moves predictions of frames > k only.
    # The last frame is only ever a target.
    for k in range(1, 6):
        changed = original.clone()
        changed[:, k] += 0.5
        with torch.no_grad():
            moved = network(changed, ones).frames
        assert torch.equal(moved[:, :k], forced.frames[:, :k])  # k = 5: every prediction
        if k < 5:
            assert not torch.equal(moved[:, k], forced.frames[:, k])


@pytest.mark.parametrize("name", NAMES)
def test_all_zeros_mask_runs_free_from_the_first_frame(name: str) -> None:
    network = make(name)
    original = clip()
    changed = original.clone()
    changed[:, 1:] = torch.rand_like(changed[:, 1:])
    with torch.no_grad():
        assert torch.equal(
            network(original, torch.zeros(2, 4)).frames, network(changed, torch.zeros(2, 4)).frames
        )


def test_predrnn_v2_decoupling_loss_is_weighted_and_bounded() -> None:
    torch.manual_seed(0)
    base = PredRNNV2(CONFIGS["predrnn_v2"], GEOMETRY)
    aux = base(clip()).aux_loss
    assert 0 < aux.item() <= 0.1  # |cos| <= 1, times decouple_beta 0.1
    for beta in (0.0, 0.3):
        other = PredRNNV2(
            CONFIGS["predrnn_v2"].model_copy(update={"decouple_beta": beta}), GEOMETRY
        )
        other.load_state_dict(base.state_dict())
        torch.testing.assert_close(other(clip()).aux_loss, aux * beta / 0.1)
    assert make("convlstm")(clip()).aux_loss.item() == 0.0


def test_predrnn_v2_decoupling_is_absolute_cosine_per_channel() -> None:
    network = make("predrnn_v2")
    with torch.no_grad():
        network.adapter.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    x = torch.rand(2, 4, 3, 3) + 0.1
    assert network._decoupling(x, 2 * x).item() == pytest.approx(1.0)
    assert network._decoupling(x, -x).item() == pytest.approx(1.0)
    stripes = torch.zeros(2, 4, 3, 3)
    stripes[..., 0, :] = 1.0
    orthogonal = torch.zeros(2, 4, 3, 3)
    orthogonal[..., 1, :] = 1.0
    assert network._decoupling(stripes, orthogonal).item() == pytest.approx(0.0)


def test_predrnn_v2_paper_configuration_matches_the_authors_parameter_count() -> None:
    config, geometry = reference_config("predrnn_v2", "moving_mnist")
    assert config == PredRNNV2Config(num_hidden=[128] * 4, filter_size=5, patch_size=4)
    assert count_parameters(PredRNNV2(config, geometry)) == AUTHORS_PREDRNN_V2_PAPER_PARAMETERS


def test_convlstm_reference_count_is_openstl_less_its_unused_convolutions() -> None:
    config, geometry = reference_config("convlstm", "moving_mnist")
    openstl_reported = 15_083_520  # OpenSTL ConvLSTM_Model, mmnist config, all parameters
    unused_per_layer = 2 * 128 * 128 * 5 * 5 + 2 * 128 * 128  # cell conv_o and conv_last
    expected = openstl_reported - 4 * unused_per_layer
    assert count_parameters(ConvLSTM(config, geometry)) == expected


@pytest.mark.parametrize("name", NAMES)
def test_reference_configurations_fit_their_benchmarks(name: str) -> None:
    for dataset in REFERENCE_GEOMETRY:
        config, geometry = reference_config(name, dataset)
        assert isinstance(config, CONFIGS[name].__class__)
        assert config.check_geometry(geometry) == []


@pytest.mark.parametrize("name", NAMES)
def test_flops_are_positive_and_linear_in_batch(name: str) -> None:
    network = make(name)
    network.train()
    single, double = count_flops(network), count_flops(network, batch_size=2)
    assert isinstance(single, int) and single > 0
    assert double == 2 * single
    assert network.training  # the mode is restored


def test_flops_grow_with_the_width() -> None:
    narrow = make("convlstm")
    wide = ConvLSTM(ConvLSTMConfig(num_hidden=[6, 8], filter_size=3, patch_size=PATCH), GEOMETRY)
    assert count_flops(wide) > count_flops(narrow)


@pytest.mark.parametrize("config_class", [PredRNNV2Config, ConvLSTMConfig])
def test_patch_size_must_divide_the_frame(config_class: type) -> None:
    config = config_class(num_hidden=[4], filter_size=3, patch_size=5)
    problems = config.check_geometry(ClipGeometry(1, 64, 62, 10, 10))
    assert len(problems) == 2
    assert "patch_size = 5" in problems[0] and "height 64" in problems[0]
    assert "width 62" in problems[1]
    assert (
        config_class(num_hidden=[4], patch_size=4).check_geometry(REFERENCE_GEOMETRY["kth"]) == []
    )


@pytest.mark.parametrize(
    ("config_class", "bad", "message"),
    [
        (PredRNNV2Config, {"filter_size": 4}, "filter_size = 4 is even"),
        (ConvLSTMConfig, {"filter_size": 2}, "filter_size = 2 is even"),
        (PredRNNV2Config, {"num_hidden": [8, 16]}, "same width"),
        (PredRNNV2Config, {"num_hidden": []}, "at least 1 item"),
        (ConvLSTMConfig, {"num_hidden": [8, 0]}, "greater than 0"),
        (PredRNNV2Config, {"stride": 2}, "Input should be 1"),
        (PredRNNV2Config, {"decouple_beta": -0.1}, "greater than or equal to 0"),
        (ConvLSTMConfig, {"decouple_beta": 0.1}, "Extra inputs are not permitted"),
        (ConvLSTMConfig, {"layer_norm": "yes"}, "valid boolean"),
    ],
)
def test_bad_configurations_are_refused(config_class: type, bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config_class.model_validate({"num_hidden": [8, 8], **bad})


@pytest.mark.parametrize("name", NAMES)
def test_layer_norm_variant_runs_and_is_counted_per_level(name: str) -> None:
    config = CONFIGS[name].model_copy(update={"layer_norm": True})
    network = build_backbone(name, config, GEOMETRY)
    plain = make(name)
    assert count_parameters(network) > count_parameters(plain)
    out = network(clip())
    assert torch.isfinite(out.frames).all()
    flat = [p for _, members in network.levels() for p in members]
    assert sorted(flat) == sorted(p for p, _ in network.named_parameters())


def test_predrnn_v2_runs_predrnns_spatiotemporal_lstm_cells() -> None:
    # The cell's hand-computed values are checked in test_stepwise_zoo_a.py.
    cells = make("predrnn_v2").cell_list
    assert all(type(cell) is SpatioTemporalLSTMCell for cell in cells)


def test_convlstm_cell_with_zero_gate_weights_gives_hand_computed_values() -> None:
    # All gate convolutions zero: every gate is sigmoid(0) = 1/2, forget gates included
    # (OpenSTL's ConvLSTM adds no forget bias); candidates are tanh(0) = 0.
    conv_lstm = make("convlstm").cell_list[1]
    for parameter in conv_lstm.parameters():
        torch.nn.init.zeros_(parameter)
    with torch.no_grad():
        ones = torch.ones(1, 4, 2, 2)
        h, c = conv_lstm(torch.rand(1, 3, 2, 2), ones, ones)
        torch.testing.assert_close(c, 0.5 * ones)
        torch.testing.assert_close(h, 0.5 * torch.tanh(torch.tensor(0.5)) * ones)


def test_predrnn_v2_decoupling_compares_increments_after_the_shared_adapter() -> None:
    # Per channel the two increments are orthogonal, but an adapter that sums the channels
    # maps both to the same map: |cos| = 1 after the adapter (it would be 0 before).
    network = make("predrnn_v2")
    with torch.no_grad():
        network.adapter.weight.fill_(1.0)
    delta_c, delta_m = torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 4, 3)
    for channel in range(4):
        delta_c[0, channel, channel] = 1.0
        delta_m[0, channel, (channel + 1) % 4] = 1.0
    assert network._decoupling(delta_c, delta_m).item() == pytest.approx(1.0)
