"""E3D-LSTM, PhyDNet and MAU: hand-computed parts (recall attention, the moment loss, MAU's
attention), their options, parameter counts and FLOPs against OpenSTL's, configuration rules.
The backbone interface is checked in test_backbone_contract.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from backbone_cases import CASES, GEOMETRY, clip, make, mask, reference_network
from pydantic import ValidationError

from seemore.backbones import BACKBONES, ClipGeometry
from seemore.backbones.e3d_lstm import E3DLSTM, E3DLSTMConfig, EideticCell
from seemore.backbones.mau import MAUConfig, MotionAwareUnit
from seemore.backbones.patch import to_patches
from seemore.backbones.phydnet import PhyCell, PhyDNet, PhyDNetConfig, moment_matrix
from seemore.backbones.profile import count_flops, count_parameters
from seemore.backbones.reference import REFERENCE_GEOMETRY, reference_config
from seemore.config import ConfigError, validate_params

NAMES = ["e3d_lstm", "mau", "phydnet"]

# OpenSTL's model zoo (docs/en/model_zoos/video_benchmarks.md): Params and FLOPs (fvcore:
# multiply-adds) at configs/mmnist/<Method>.py.
PUBLISHED_MOVING_MNIST = {
    "e3d_lstm": (51.0e6, 298.9e9),
    "phydnet": (3.1e6, 15.3e9),
    "mau": (4.5e6, 17.8e9),
}
# OpenSTL's models at configs/<dataset>/<Method>.py, instantiated and counted. For MAU the
# count excludes two 1x1 convs OpenSTL builds but never uses (merge 2h -> h and conv_last_sr
# 2c -> c, both with bias): 8,259 / 8,259 / 8,277 / 8,266 parameters.
OPENSTL_PARAMETERS = {
    ("e3d_lstm", "moving_mnist"): 51_347_456,
    ("e3d_lstm", "kth"): 53_510_144,
    ("e3d_lstm", "human36m"): 60_850_176,
    ("e3d_lstm", "taxibj"): 50_987_008,
    ("phydnet", "moving_mnist"): 3_091_732,
    ("phydnet", "kth"): 3_091_732,
    ("phydnet", "human36m"): 3_092_886,
    ("phydnet", "taxibj"): 3_092_309,
    ("mau", "moving_mnist"): 4_483_588 - 8_259,
    ("mau", "kth"): 20_138_372 - 8_259,
    ("mau", "human36m"): 20_212_504 - 8_277,
    ("mau", "taxibj"): 4_409_868 - 8_266,
}


def test_mau_without_downsampling_has_no_decoder_level() -> None:
    network = make("mau", sr_size=1)
    assert [level for level, _ in network.levels()] == ["encoder", "layer0", "layer1", "head"]
    assert network(clip()).states.shape == (2, 5, 4, 8, 12)


# --- E3D-LSTM -----------------------------------------------------------------------------


def test_recall_is_softmax_attention_over_every_past_position() -> None:
    generator = torch.Generator().manual_seed(0)
    gate = torch.rand(1, 3, 2, 2, 1, generator=generator)
    past = torch.randn(1, 3, 4, 2, 1, generator=generator)
    recalled = EideticCell.recall(gate, past)
    queries = gate[0].reshape(3, -1).T  # positions x channels
    keys = past[0].reshape(3, -1).T
    for position in range(queries.shape[0]):
        weights = torch.softmax(keys @ queries[position], dim=0)  # unscaled dot products
        expected = weights @ keys
        got = recalled[0].reshape(3, -1)[:, position]
        torch.testing.assert_close(got, expected)
    # One past position: every query recalls exactly it.
    single = past[:, :, :1, :1]
    torch.testing.assert_close(EideticCell.recall(gate, single), single.expand_as(gate))


def test_eidetic_cell_with_zero_weights_gives_hand_computed_values() -> None:
    # Gates sigmoid(0) = 1/2, candidates tanh(0) = 0; the memory's forget gate sigmoid(1).
    cell = make("e3d_lstm").cells[1]
    assert isinstance(cell, EideticCell)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.zero_()
        cell.conv_memory.conv.weight[12:16, :, 0, 1, 1] = torch.eye(4)  # m_m reads M
        cell.fuse.weight[:, 4:, 0, 0, 0] = torch.eye(4)  # H reads the new memory only
        cell.norm_cell.weight.fill_(1.0)
    generator = torch.Generator().manual_seed(0)
    x, h, c, memory = (torch.randn(1, 4, 2, 4, 6, generator=generator) for _ in range(4))
    past = torch.randn(1, 4, 6, 4, 6, generator=generator)
    with torch.no_grad():
        new_h, new_c, new_memory = cell(x, h, c, memory, past)
    recalled = EideticCell.recall(torch.full_like(c, 0.5), past)
    torch.testing.assert_close(new_c, torch.nn.functional.layer_norm(c + recalled, c.shape[1:]))
    forget = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(new_memory, forget * torch.tanh(memory))
    torch.testing.assert_close(new_h, 0.5 * torch.tanh(new_memory))


def test_e3d_window_and_eidetic_memory_grow_as_expected() -> None:
    network = make("e3d_lstm", window_length=3)
    assert isinstance(network, E3DLSTM)
    patches = to_patches(clip(), 2)
    with torch.no_grad():
        carry = network.init_carry(patches[:, 0])
        assert [torch.count_nonzero(x).item() for x in carry.recent_inputs] == [0, 0]
        for t in range(4):
            carry = network.step(patches[:, t], carry).carry
            # The window keeps the last two inputs; the eidetic memory every earlier cell state
            # (the initial one included), a whole window per step.
            recent = torch.stack(carry.recent_inputs, dim=1)
            expected = patches[:, max(t - 1, 0) : t + 1]
            assert torch.equal(recent[:, -expected.shape[1] :], expected)
            assert carry.past_cells[0].shape[2] == 3 * (t + 1)
    out = network(clip())
    assert out.states.shape == (2, 5, 4, 3, 4, 6)


def test_e3d_temporal_padding_is_tensorflow_same() -> None:
    # Kernel 2 over a 2-frame window: slot 0 sees both frames, slot 1 the last one and zeros.
    network = make("e3d_lstm")
    assert isinstance(network, E3DLSTM)
    conv = network.cells[0].conv_h
    torch.manual_seed(0)
    x = torch.rand(1, 4, 2, 4, 6)
    with torch.no_grad():
        y = conv(x)
        last_only = conv(torch.stack([x[:, :, 1], torch.zeros_like(x[:, :, 1])], dim=2))
    assert y.shape == (1, 16, 2, 4, 6)
    torch.testing.assert_close(y[:, :, 1], last_only[:, :, 0])
    assert not torch.allclose(y[:, :, 0], y[:, :, 1])


def test_e3d_strided_gates_keep_the_state_size() -> None:
    network = make("e3d_lstm", conv_stride=2)
    out = network(clip())
    assert out.states.shape == (2, 5, *CASES["e3d_lstm"].state_shape)


# --- PhyDNet ------------------------------------------------------------------------------


def constrained_filters(kernel_size: int, channels: int) -> torch.Tensor:
    """Filters whose moments are exactly the targets: K = M^-1 E_pq M^-T for every channel."""
    inverse = torch.linalg.inv(moment_matrix(kernel_size))
    count = kernel_size * kernel_size
    targets = torch.eye(count, dtype=torch.float64).reshape(count, kernel_size, kernel_size)
    kernels = inverse @ targets @ inverse.T
    return kernels[:, None].expand(count, channels, kernel_size, kernel_size).float()


def test_moment_matrix_is_the_taylor_expansion() -> None:
    # Offsets -1, 0, 1; row i holds x**i / i!.
    expected = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 1.0], [0.5, 0.0, 0.5]])
    torch.testing.assert_close(moment_matrix(3).float(), expected)
    # A hand-made check: the identity tap and the central difference are moments (0,0), (0,1).
    filters = constrained_filters(3, 1)[:, 0]
    torch.testing.assert_close(filters[0], torch.tensor([[0, 0, 0], [0, 1.0, 0], [0, 0, 0]]))
    torch.testing.assert_close(
        filters[1], torch.tensor([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]]), atol=1e-6, rtol=0
    )


def test_moment_loss_is_zero_for_constrained_filters_and_positive_otherwise() -> None:
    cell = PhyCell(channels=4, kernel_size=7)
    with torch.no_grad():
        cell.filters.copy_(constrained_filters(7, 4))
    assert cell.moment_loss().item() < 1e-8
    with torch.no_grad():
        cell.filters[10, 2, 3, 4] += 0.1
    broken = cell.moment_loss().item()
    assert broken > 1e-6
    # One broken channel out of four: the loss sums channels, averaging each channel's moments.
    m = moment_matrix(7).float()
    error = (m @ (0.1 * torch.eye(7)[:, 3:4] @ torch.eye(7)[4:5]) @ m.T) ** 2
    torch.testing.assert_close(torch.tensor(broken), error.sum() / 49**2, rtol=1e-3, atol=0)


def test_phydnet_aux_loss_is_the_weighted_moment_loss_per_step() -> None:
    network = make("phydnet")
    assert isinstance(network, PhyDNet)
    for frames in (6, 9):
        aux = network(clip(frames)).aux_loss
        torch.testing.assert_close(aux, network.phycell.moment_loss() / (frames - 1))
    heavy = make("phydnet", moment_weight=2.5)
    torch.testing.assert_close(heavy(clip()).aux_loss, 2.5 * network(clip()).aux_loss)
    assert make("phydnet", moment_weight=0.0)(clip()).aux_loss.item() == 0.0
    with torch.no_grad():
        network.phycell.filters.copy_(constrained_filters(3, 64))
    assert network(clip()).aux_loss.item() < 1e-8


def test_phycell_corrects_toward_the_observation_by_its_gain() -> None:
    cell = PhyCell(channels=2, kernel_size=3)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.zero_()
    x, h = torch.rand(1, 2, 3, 3), torch.rand(1, 2, 3, 3)
    # F(h) = 0 and gain sigmoid(0) = 1/2: halfway between the prediction h and the observation.
    torch.testing.assert_close(cell(x, h), 0.5 * (h + x))


# --- MAU ----------------------------------------------------------------------------------


def test_mau_attention_weighs_past_temporal_states_by_spatial_match() -> None:
    unit = make("mau").cells[0]
    assert isinstance(unit, MotionAwareUnit)
    with torch.no_grad():
        for parameter in unit.parameters():
            parameter.zero_()  # every conv and norm outputs 0; sigmoid gates are 1/2
        unit.conv_s_next[0].weight[:, :, 1, 1] = torch.eye(4)
        unit.conv_s_next[1].weight.fill_(1.0)  # s_next = LayerNorm(s)
        unit.conv_t[0].weight[4:8, :, 1, 1] = torch.eye(4)  # t_t reads the fused T
        unit.conv_t[1].weight.fill_(1.0)
    generator = torch.Generator().manual_seed(0)
    s, t = (
        torch.randn(1, 4, 4, 6, generator=generator),
        torch.randn(1, 4, 4, 6, generator=generator),
    )
    past_t = torch.randn(3, 1, 4, 4, 6, generator=generator)
    s_next = torch.nn.functional.layer_norm(s, (4, 4, 6))
    past_s = torch.stack([0.05 * s_next, -0.05 * s_next, torch.zeros_like(s)])
    similarity = torch.stack([(p * s_next).sum() for p in past_s]) / math.sqrt(4 * 4 * 6)
    weights = torch.softmax(similarity, dim=0)
    assert weights.min() > 0.1  # a real mixture, not a one-hot pick
    trend = (weights.view(3, 1, 1, 1, 1) * past_t).sum(dim=0)
    fused = 0.5 * t + 0.5 * trend  # the T gate sigmoid(LayerNorm(0)) = 1/2
    normed = torch.nn.functional.layer_norm(
        torch.cat([torch.zeros_like(fused), fused, torch.zeros_like(fused)], dim=1), (12, 4, 6)
    )
    with torch.no_grad():
        new_t, new_s = unit(t, s, past_t, past_s)
    # new T = sigmoid(t_g) * t_t + (1 - sigmoid(t_g)) * s_t, with s_t = 0.
    torch.testing.assert_close(new_t, torch.sigmoid(normed[:, :4]) * normed[:, 4:8])
    torch.testing.assert_close(new_s, 0.5 * normed[:, 8:12])


@pytest.mark.parametrize("model_mode", ["normal", "recall"])
@pytest.mark.parametrize("cell_mode", ["normal", "residual"])
def test_mau_modes_run_and_differ(model_mode: str, cell_mode: str) -> None:
    network = make("mau", model_mode=model_mode, cell_mode=cell_mode)
    out = network(clip(), mask())
    base = make("mau")(clip(), mask())
    assert out.frames.shape == base.frames.shape
    assert torch.isfinite(out.frames).all()
    assert (model_mode, cell_mode) == ("normal", "normal") or not torch.equal(
        out.frames, base.frames
    )


# --- configurations, reference counts, FLOPs ----------------------------------------------


@pytest.mark.parametrize(("name", "dataset"), sorted(OPENSTL_PARAMETERS))
def test_reference_parameter_counts_equal_openstl(name: str, dataset: str) -> None:
    network = reference_network(name, dataset)
    assert count_parameters(network) == OPENSTL_PARAMETERS[name, dataset]


@pytest.mark.parametrize("name", NAMES)
def test_moving_mnist_counts_within_one_percent_of_published(name: str) -> None:
    ours = count_parameters(reference_network(name, "moving_mnist"))
    published = PUBLISHED_MOVING_MNIST[name][0]
    assert abs(ours - published) <= 0.01 * published


@pytest.mark.parametrize("name", ["phydnet", "mau"])
def test_moving_mnist_flops_match_openstl(name: str) -> None:
    # Ours count a multiply-add as 2, OpenSTL's (fvcore) as 1.
    macs = count_flops(reference_network(name, "moving_mnist")) / 2
    published = PUBLISHED_MOVING_MNIST[name][1]
    assert abs(macs - published) <= 0.01 * published


def test_e3d_moving_mnist_flops_follow_from_its_layers() -> None:
    # OpenSTL computes one time slot per gate convolution and copies it to the window's two
    # (298.9G MACs published); like the authors' TensorFlow code we compute both slots.
    slots, grid, steps, hidden, frame = 2, 16 * 16, 19, 128, 16
    taps = 2 * 5 * 5
    per_layer = (4 + 4 + 1 + 1) * hidden * hidden * taps * slots * grid
    per_layer += 2 * hidden * hidden * slots * grid  # the 1x1x1 fusion of cell and memory
    x_convs = (frame + 3 * hidden) * 7 * hidden * taps * slots * grid
    head = hidden * frame * slots * grid
    convs = steps * (4 * per_layer + x_convs + head)
    # Recall at step t: 512 queries over 512 * (t + 1) keys, 128 channels, two products.
    attention = 4 * sum(2 * (slots * grid) ** 2 * (t + 1) * hidden for t in range(steps))
    assert count_flops(reference_network("e3d_lstm", "moving_mnist")) == 2 * (convs + attention)


def test_reference_configurations_are_openstl_per_benchmark() -> None:
    expected = {
        "e3d_lstm": ("patch_size", {"moving_mnist": 4, "kth": 8, "human36m": 8, "taxibj": 2}),
        "phydnet": ("downsample", {"moving_mnist": 4, "kth": 4, "human36m": 4, "taxibj": 2}),
        "mau": ("sr_size", {"moving_mnist": 4, "kth": 2, "human36m": 4, "taxibj": 2}),
    }
    for name, (key, values) in expected.items():
        for dataset in REFERENCE_GEOMETRY:
            config, _ = reference_config(name, dataset)
            assert getattr(config, key) == values[dataset], (name, dataset)
    assert reference_config("e3d_lstm", "kth")[0].conv_stride == 2


@pytest.mark.parametrize(
    ("config_class", "bad", "message"),
    [
        (E3DLSTMConfig, {"num_hidden": [8, 16]}, "same width"),
        (E3DLSTMConfig, {"num_hidden": [8], "filter_size": 4}, "odd"),
        (E3DLSTMConfig, {"num_hidden": [8], "window": 2}, "Extra inputs are not permitted"),
        (MAUConfig, {"num_hidden": [8, 4]}, "same width"),
        (MAUConfig, {"num_hidden": [8], "sr_size": 3}, "power of two"),
        (MAUConfig, {"num_hidden": [8], "cell_mode": "fancy"}, "'normal' or 'residual'"),
        (PhyDNetConfig, {"downsample": 8}, "Input should be 2 or 4"),
        (PhyDNetConfig, {"encoder_channels": 24}, "multiple of 16"),
        (PhyDNetConfig, {"convlstm_hidden": [128, 32]}, "latent width"),
        (PhyDNetConfig, {"phycell_kernel": 6}, "odd"),
        (PhyDNetConfig, {"moment_weight": -1.0}, "greater than or equal to 0"),
    ],
)
def test_bad_configurations_are_refused(config_class: type, bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config_class.model_validate(bad)


def test_geometries_that_do_not_fit_are_refused() -> None:
    e3d = E3DLSTMConfig(num_hidden=[4], patch_size=5, temporal_filter_size=3)
    problems = e3d.check_geometry(GEOMETRY)
    assert len(problems) == 3 and "patch_size = 5" in problems[0] and "window" in problems[2]
    mau = MAUConfig(num_hidden=[4], patch_size=2, sr_size=4)
    problems = mau.check_geometry(GEOMETRY)  # 8 / 2 = 4 fits; 12 / 2 = 6 does not
    assert problems == [
        "sr_size = 4 does not divide the patched frame width 6 (12 / patch_size 2); "
        "expected a divisor"
    ]
    phydnet = PhyDNetConfig(downsample=4)
    assert phydnet.check_geometry(GEOMETRY) == []
    odd = ClipGeometry(channels=1, height=10, width=12, input_frames=2, output_frames=2)
    assert phydnet.check_geometry(odd) == [
        "downsample = 4 does not divide the frame height 10; expected a divisor of 10"
    ]


def test_params_file_errors_name_the_backbone_key(embedded_raw: dict[str, Any]) -> None:
    embedded_raw["experiment"].update(datasets=["moving_mnist"], backbones=NAMES)
    models = embedded_raw["models"]["moving_mnist"]
    models["e3d_lstm"] = {"num_hidden": [8, 8], "patch_size": 4}
    models["phydnet"] = {"encoder_channels": 16, "convlstm_hidden": [32]}
    models["mau"] = {"num_hidden": [8, 8], "sr_size": 4}
    params = validate_params(embedded_raw)
    configured = params.models["moving_mnist"]
    assert all(isinstance(configured[n], BACKBONES.get(n).config_class) for n in NAMES)
    models["mau"]["tau"] = 0
    with pytest.raises(ConfigError, match=r"models\.moving_mnist\.mau\.tau = 0: .*greater than 0"):
        validate_params(embedded_raw)
    models["mau"]["tau"] = 2
    models["e3d_lstm"]["patch_size"] = 5
    with pytest.raises(
        ConfigError, match=r"models\.moving_mnist\.e3d_lstm with data\.moving_mnist: patch"
    ):
        validate_params(embedded_raw)
