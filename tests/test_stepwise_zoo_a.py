"""PredRNN, PredRNN++ and MIM: levels, hand-computed cells, parameter counts and FLOPs
against OpenSTL's published ones, configuration rules. The backbone interface is checked in
test_backbone_contract.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from backbone_cases import CASES, clip, make, reference_network
from pydantic import ValidationError

from seemore.backbones import BACKBONES
from seemore.backbones.mim import MIMBlock, MIMConfig
from seemore.backbones.predrnn import PredRNNConfig, SpatioTemporalLSTMCell
from seemore.backbones.predrnn_pp import CausalLSTMCell, GradientHighwayUnit, PredRNNppConfig
from seemore.backbones.profile import count_flops, count_parameters
from seemore.backbones.reference import REFERENCE_GEOMETRY, reference_config
from seemore.config import ConfigError, validate_params

NAMES = ["mim", "predrnn", "predrnn_pp"]
STATE = (1, *CASES["mim"].state_shape)  # one state map of the tiny networks

# OpenSTL's model zoo (docs/en/model_zoos/video_benchmarks.md, traffic_benchmarks.md): Params
# and FLOPs per backbone and benchmark at its configs/<dataset>/<Method>.py; its FLOPs column
# counts multiply-adds (fvcore), at the benchmark's full horizon.
PUBLISHED_PARAMETERS = {
    ("predrnn", "moving_mnist"): 23.8e6,
    ("predrnn", "kth"): 23.6e6,
    ("predrnn", "human36m"): 24.6e6,
    ("predrnn", "taxibj"): 23.66e6,
    ("predrnn_pp", "moving_mnist"): 38.6e6,
    ("predrnn_pp", "kth"): 38.3e6,
    ("predrnn_pp", "human36m"): 39.3e6,
    ("predrnn_pp", "taxibj"): 38.40e6,
    ("mim", "moving_mnist"): 38.0e6,
    ("mim", "kth"): 39.8e6,
    ("mim", "human36m"): 47.6e6,
    ("mim", "taxibj"): 37.86e6,
}
PUBLISHED_MOVING_MNIST_MACS = {"predrnn": 116.0e9, "predrnn_pp": 171.7e9, "mim": 179.2e9}


def openstl_unused_parameters(name: str, config: PredRNNConfig) -> int:
    """Parameters OpenSTL builds but its forward never uses (left out here): PredRNN++'s
    causal cell `conv_o` (2h -> h, k x k) per layer; MIM-N's 1x1 `conv_last` (2h -> h)."""
    hidden, layers, k = config.num_hidden[0], len(config.num_hidden), config.filter_size
    if name == "predrnn_pp":
        return layers * 2 * hidden * hidden * k * k
    if name == "mim":
        return (layers - 1) * 2 * hidden * hidden
    return 0


@pytest.mark.parametrize("name", NAMES)
def test_the_head_level_is_the_output_conv_alone(name: str) -> None:
    assert make(name).levels()[-1] == ("head", ["conv_last.weight"])


def owners(parameter_names: list[str]) -> set[str]:
    """The modules holding these parameters: `cell_list.1`, `gradient_highway`, ..."""
    parts = [name.split(".") for name in parameter_names]
    return {".".join(p[:2]) if p[1].isdigit() else p[0] for p in parts}


def test_levels_put_each_helper_module_with_the_layer_it_feeds() -> None:
    levels = dict(make("predrnn_pp").levels())
    assert owners(levels["layer0"]) == {"cell_list.0"}
    assert owners(levels["layer1"]) == {"cell_list.1", "gradient_highway"}
    assert owners(levels["layer2"]) == {"cell_list.2"}
    levels = dict(make("mim").levels())
    assert owners(levels["layer0"]) == {"stlstm_layer.0"}
    for layer in (1, 2):
        assert owners(levels[f"layer{layer}"]) == {
            f"stlstm_layer.{layer}",
            f"stlstm_layer_diff.{layer - 1}",
        }


def test_mim_nonstationary_modules_start_at_the_second_step() -> None:
    # No hidden-state difference exists at step 0, so MIM-N must not act on the first
    # prediction, and must act on the second.
    network = make("mim")
    original = clip()
    with torch.no_grad():
        before = network(original, torch.ones(2, 4)).frames
        for parameter in network.stlstm_layer_diff.parameters():
            parameter.add_(0.3)
        after = network(original, torch.ones(2, 4)).frames
    assert torch.equal(after[:, 0], before[:, 0])
    assert not torch.equal(after[:, 1], before[:, 1])


def zero_parameters(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()


def identity(channels: int) -> torch.Tensor:
    return torch.eye(channels).view(channels, channels, 1, 1)


def test_spatiotemporal_lstm_with_zero_weights_gives_hand_computed_values() -> None:
    # Every gate sigmoid(0) = 1/2 except forget gates sigmoid(1); candidates tanh(0) = 0.
    cell = make("predrnn").cell_list[1]
    assert isinstance(cell, SpatioTemporalLSTMCell)
    zero_parameters(cell)
    ones = torch.ones(1, 4, 2, 2)
    forget = torch.sigmoid(torch.tensor(1.0))
    with torch.no_grad():
        cell.conv_last.weight[:, :4] = identity(4)  # H reads C only
        h, c, m, delta_c, delta_m = cell(torch.rand(1, 4, 2, 2), ones, ones, 2 * ones)
    torch.testing.assert_close(c, forget * ones)
    torch.testing.assert_close(m, 2 * forget * ones)
    torch.testing.assert_close(h, 0.5 * torch.tanh(forget) * ones)
    assert delta_c.abs().max() == delta_m.abs().max() == 0  # i * g with g = tanh(0)


def test_spatiotemporal_lstm_increments_are_what_the_memories_gain() -> None:
    # C' = f * C + dC and M' = f' * M + dM: from zero memories the new memories are the
    # increments themselves, which PredRNN-V2's decoupling loss compares.
    cell = make("predrnn").cell_list[1]
    zeros = torch.zeros(1, 4, 2, 2)
    with torch.no_grad():
        update = cell(torch.rand(1, 4, 2, 2), torch.rand(1, 4, 2, 2), zeros, zeros)
    assert update.delta_cell.abs().min() > 0 and update.delta_memory.abs().min() > 0
    torch.testing.assert_close(update.cell, update.delta_cell)
    torch.testing.assert_close(update.memory, update.delta_memory)


def test_causal_lstm_with_zero_weights_gives_hand_computed_values() -> None:
    # M' = f' * tanh(W_mm M) + i' * g': with W_mm the identity and zero gates, sigmoid(1) *
    # tanh(M); the output gate is tanh (not sigmoid) of W_mo M' alone.
    cell = make("predrnn_pp").cell_list[1]
    assert isinstance(cell, CausalLSTMCell)
    zero_parameters(cell)
    c_prev, m_prev = torch.full((1, 4, 2, 2), 0.7), torch.full((1, 4, 2, 2), -1.5)
    forget = torch.sigmoid(torch.tensor(1.0))
    with torch.no_grad():
        cell.conv_m[0].weight[8:12, :, 1, 1] = torch.eye(4)  # the M -> M' slice
        cell.conv_om[0].weight[:, :, 1, 1] = torch.eye(4)
        cell.conv_last.weight[:, :4] = identity(4)  # H reads C only
        h, c, m = cell(torch.rand(1, 4, 2, 2), torch.rand(1, 4, 2, 2), c_prev, m_prev)
    torch.testing.assert_close(c, forget * c_prev)
    torch.testing.assert_close(m, forget * torch.tanh(m_prev))
    torch.testing.assert_close(h, torch.tanh(m) * torch.tanh(c))


def test_gradient_highway_with_zero_weights_halves_its_state_and_starts_near_zero() -> None:
    highway = make("predrnn_pp").gradient_highway
    assert isinstance(highway, GradientHighwayUnit)
    weights = list(highway.parameters())
    assert all(w.abs().max() <= 1e-3 for w in weights)
    assert all(w.abs().max() > 0 for w in weights)
    zero_parameters(highway)
    z = torch.rand(1, 4, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(highway(torch.rand(1, 4, 2, 2), z), 0.5 * z)


def test_mim_block_with_zero_weights_gives_hand_computed_values() -> None:
    # MIM-S (forget peephole 1, output peephole 1) is the only path for the temporal memory:
    # S' = sigmoid(1 + S) * S, C' = sigmoid(S') * tanh(S') (+ i * g = 0), M' = sigmoid(1) * M.
    # Peephole weights are per position: states of the network's size.
    block = make("mim").stlstm_layer[1]
    assert isinstance(block, MIMBlock)
    zero_parameters(block)
    stationary, m_prev = torch.full(STATE, 0.4), torch.full(STATE, 2.0)
    with torch.no_grad():
        block.ct_weight[4:] = 1.0  # forget half of the input/forget peepholes
        block.oc_weight.fill_(1.0)
        block.conv_last.weight[:, :4] = identity(4)  # H reads C only
        h, c, m, s = block(*(torch.rand(STATE) for _ in range(4)), m_prev, stationary)
    expected_s = torch.sigmoid(1 + stationary) * stationary
    torch.testing.assert_close(s, expected_s)
    torch.testing.assert_close(c, torch.sigmoid(expected_s) * torch.tanh(expected_s))
    torch.testing.assert_close(m, torch.sigmoid(torch.tensor(1.0)) * m_prev)
    torch.testing.assert_close(h, 0.5 * torch.tanh(c))


@pytest.mark.parametrize(("name", "dataset"), sorted(PUBLISHED_PARAMETERS))
def test_reference_parameter_counts_match_openstl(name: str, dataset: str) -> None:
    network = reference_network(name, dataset)
    ours = count_parameters(network)
    openstl = ours + openstl_unused_parameters(name, network.config)
    assert abs(openstl - PUBLISHED_PARAMETERS[name, dataset]) <= 0.01 * openstl
    if name != "predrnn_pp":  # the unused block is 8.5 % of OpenSTL's PredRNN++
        assert abs(ours - PUBLISHED_PARAMETERS[name, dataset]) <= 0.01 * ours


def test_moving_mnist_parameter_counts_exactly() -> None:
    # OpenSTL's models at configs/mmnist, instantiated: 23,838,720 / 38,584,320 / 38,043,648.
    assert count_parameters(reference_network("predrnn", "moving_mnist")) == 23_838_720
    assert count_parameters(reference_network("predrnn_pp", "moving_mnist")) == (
        38_584_320 - 4 * 2 * 128 * 128 * 5 * 5
    )
    assert count_parameters(reference_network("mim", "moving_mnist")) == 38_043_648 - 3 * 32_768


@pytest.mark.parametrize("name", NAMES)
def test_moving_mnist_flops_match_openstl(name: str) -> None:
    # Our FLOPs count a multiply-add as 2; OpenSTL's (fvcore) as 1. Neither counts the unused
    # blocks, so PredRNN++ matches here too.
    macs = count_flops(reference_network(name, "moving_mnist")) / 2
    published = PUBLISHED_MOVING_MNIST_MACS[name]
    assert abs(macs - published) <= 0.01 * published


def test_reference_configurations_follow_openstl_per_benchmark() -> None:
    # 4 x 128 hidden, 5x5 filters everywhere; patch sizes as in OpenSTL's configs (MIM on KTH
    # uses 4 where PredRNN and PredRNN++ use 2).
    patch_sizes = {"moving_mnist": 4, "kth": 2, "human36m": 4, "taxibj": 2}
    for name in NAMES:
        for dataset in REFERENCE_GEOMETRY:
            config, _ = reference_config(name, dataset)
            assert config.num_hidden == [128] * 4 and config.filter_size == 5
            assert not config.layer_norm
            expected = 4 if (name, dataset) == ("mim", "kth") else patch_sizes[dataset]
            assert config.patch_size == expected, (name, dataset)


@pytest.mark.parametrize(
    ("config_class", "bad", "message"),
    [
        (PredRNNConfig, {"num_hidden": [8, 16]}, "same width"),
        (MIMConfig, {"num_hidden": [8, 4, 8]}, "same width"),
        (PredRNNConfig, {"num_hidden": []}, "at least 1 item"),
        (PredRNNppConfig, {"filter_size": 4}, "filter_size = 4 is even"),
        (MIMConfig, {"stride": 2}, "Input should be 1"),
        (PredRNNConfig, {"decouple_beta": 0.1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_configurations_are_refused(config_class: type, bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config_class.model_validate({"num_hidden": [8, 8], **bad})


def test_params_file_errors_name_the_backbone_key(embedded_raw: dict[str, Any]) -> None:
    embedded_raw["experiment"].update(datasets=["moving_mnist"], backbones=NAMES)
    models = embedded_raw["models"]["moving_mnist"]
    for name in NAMES:
        models[name] = {"num_hidden": [8, 8], "filter_size": 3, "patch_size": 4}
    params = validate_params(embedded_raw)
    configured = params.models["moving_mnist"]
    assert all(isinstance(configured[n], BACKBONES.get(n).config_class) for n in NAMES)
    models["mim"]["num_hidden"] = [8]
    with pytest.raises(
        ConfigError, match=r"models\.moving_mnist\.mim\.num_hidden = \[8\]: .*at least 2"
    ):
        validate_params(embedded_raw)
    models["mim"]["num_hidden"] = [8, 8]
    models["predrnn_pp"]["patch_size"] = 5
    with pytest.raises(
        ConfigError, match=r"models\.moving_mnist\.predrnn_pp with data\.\w+: patch_size = 5"
    ):
        validate_params(embedded_raw)


def test_a_single_layer_is_enough_for_predrnn_only() -> None:
    assert PredRNNConfig(num_hidden=[8]).num_hidden == [8]
    for config_class in (PredRNNppConfig, MIMConfig):
        with pytest.raises(ValidationError, match="has 1 layer"):
            config_class(num_hidden=[8])
