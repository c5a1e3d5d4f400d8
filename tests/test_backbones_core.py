"""PredRNN-V2 and ConvLSTM: levels, the decoupling loss, hand-computed cells, parameter counts
and FLOPs. The backbone interface is checked in test_backbone_contract.py."""

from __future__ import annotations

import pytest
import torch
from backbone_cases import CASES, GEOMETRY, clip, make
from pydantic import ValidationError

from seemore.backbones.convlstm import ConvLSTM, ConvLSTMConfig
from seemore.backbones.predrnn import SpatioTemporalLSTMCell
from seemore.backbones.predrnn_v2 import PredRNNV2, PredRNNV2Config
from seemore.backbones.profile import count_flops, count_parameters
from seemore.backbones.reference import reference_config

NAMES = ["convlstm", "predrnn_v2"]

# The authors' PredRNN-V2 (thuml/predrnn-pytorch, core/models/predrnn_v2.py) at the paper
# configuration, counted from its layer definitions: bias-free convs of each ST-LSTM cell
# conv_x (in -> 7*128), conv_h (128 -> 4*128), conv_m (128 -> 3*128), conv_o (256 -> 128),
# all 5x5, plus the cell's 1x1 conv_last (256 -> 128); the model's 1x1 conv_last (128 -> 16)
# and 1x1 adapter (128 -> 128). Cross-checked by instantiating their model.
AUTHORS_PREDRNN_V2_PAPER_PARAMETERS = 23_855_104


@pytest.mark.parametrize("name", NAMES)
def test_levels_are_the_cells_bottom_to_top_then_the_head_in_declaration_order(name: str) -> None:
    network = make(name)
    levels = network.levels()
    flat = [p for _, members in levels for p in members]
    assert flat == [p for p, _ in network.named_parameters()]
    assert all(p.startswith(f"cell_list.{i}.") for i in range(2) for p in levels[i][1])
    assert "conv_last.weight" in levels[-1][1]


def test_predrnn_v2_adapter_sits_in_the_head_level() -> None:
    assert make("predrnn_v2").levels()[-1] == ("head", ["conv_last.weight", "adapter.weight"])


def test_predrnn_v2_decoupling_loss_is_weighted_and_bounded() -> None:
    torch.manual_seed(0)
    base = PredRNNV2(CASES["predrnn_v2"].config, GEOMETRY)
    aux = base(clip()).aux_loss
    assert 0 < aux.item() <= 0.1  # |cos| <= 1, times decouple_beta 0.1
    for beta in (0.0, 0.3):
        other = PredRNNV2(
            CASES["predrnn_v2"].config.model_copy(update={"decouple_beta": beta}), GEOMETRY
        )
        other.load_state_dict(base.state_dict())
        torch.testing.assert_close(other(clip()).aux_loss, aux * beta / 0.1)


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
def test_flops_are_positive_and_linear_in_batch(name: str) -> None:
    network = make(name)
    network.train()
    single, double = count_flops(network), count_flops(network, batch_size=2)
    assert isinstance(single, int) and single > 0
    assert double == 2 * single
    assert network.training  # the mode is restored


def test_flops_grow_with_the_width() -> None:
    narrow = make("convlstm")
    wide = make("convlstm", num_hidden=[6, 8])
    assert count_flops(wide) > count_flops(narrow)


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
