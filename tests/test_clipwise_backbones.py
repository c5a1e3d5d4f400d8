"""SimVP (gSTA, IncepU) and TAU: the clip-wise latent space and rollout, TAU's divergence term,
reference parameter counts and FLOPs, configuration rules. The backbone interface is checked in
test_backbone_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from backbone_cases import CASES, GEOMETRY, clip, make, on_meta
from pydantic import ValidationError

from seemore.backbones import ClipGeometry
from seemore.backbones.base import BackboneConfig
from seemore.backbones.profile import count_flops, count_parameters
from seemore.backbones.reference import REFERENCE_DIR, REFERENCE_GEOMETRY, reference_config
from seemore.backbones.simvp import SimVP, SimVPConfig
from seemore.backbones.tau import TAUConfig, differential_divergence
from seemore.config import ConfigError, validate_params

NAMES = ["gsta", "incepu", "tau"]

# Exact counts of OpenSTL's SimVP_Model (chengtan9907/OpenSTL, openstl/models/simvp_model.py)
# at each reference configuration, obtained by instantiating it; the published (rounded)
# figures of its model zoo (docs/en/model_zoos/{video,traffic}_benchmarks.md) beside them.
OPENSTL_PARAMETERS = {
    ("gsta", "moving_mnist"): (46_769_665, 46.8e6),
    ("gsta", "kth"): (15_632_961, 15.6e6),
    ("gsta", "human36m"): (11_327_235, 11.3e6),
    ("gsta", "taxibj"): (9_961_058, 9.96e6),
    ("incepu", "moving_mnist"): (57_946_113, 58.0e6),
    ("incepu", "kth"): (12_152_385, 12.2e6),
    ("incepu", "human36m"): (41_156_355, 41.2e6),
    ("incepu", "taxibj"): (13_794_914, 13.79e6),
    ("tau", "moving_mnist"): (44_656_001, 44.7e6),
    ("tau", "kth"): (14_955_201, 15.0e6),
    ("tau", "human36m"): (37_647_363, 37.6e6),
    ("tau", "taxibj"): (9_545_442, 9.55e6),
}
# Published Moving MNIST FLOPs (G) of one 10->10 clip, counted by fvcore, which counts a
# multiply-add as one operation; torch's FlopCounterMode counts it as two.
OPENSTL_MMNIST_GMACS = {"gsta": 16.5, "incepu": 19.4, "tau": 16.0}


def reference(name: str, dataset: str) -> tuple[BackboneConfig, ClipGeometry]:
    if name == "incepu":
        table = yaml.safe_load((REFERENCE_DIR / "simvp.yaml").read_text())
        section = table["translator_incepu"][dataset]
        return SimVPConfig.model_validate(section, strict=False), REFERENCE_GEOMETRY[dataset]
    return reference_config(CASES[name].backbone, dataset)


@pytest.mark.parametrize("name", NAMES)
def test_encoded_and_states_are_the_encoder_and_translator_latents(name: str) -> None:
    # The decoding of the states into the frames is checked for every backbone by the contract.
    network = make(name).eval()
    latent_shape = CASES[name].state_shape
    given = clip(6)
    with torch.no_grad():
        out = network(given)
        latent, _ = network.encoder(given[:, :3].reshape(6, 2, 8, 12))
        torch.testing.assert_close(out.encoded, latent.reshape(2, 3, *latent_shape))
        translated = network.translator(out.encoded.flatten(1, 2))
        torch.testing.assert_close(out.states, translated.reshape(2, 3, *latent_shape))


@pytest.mark.parametrize("name", NAMES)
def test_the_sampling_mask_never_changes_the_prediction(name: str) -> None:
    network = make(name).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            network(clip(6), torch.zeros(2, 4)).frames, network(clip(6)).frames
        )


@pytest.mark.parametrize("name", NAMES)
def test_longer_horizon_rolls_out_on_its_own_predictions(name: str) -> None:
    network = make(name).eval()
    latent_shape = CASES[name].state_shape
    given = clip(3 + 7)
    with torch.no_grad():
        out = network(given)
        assert out.frames.shape == (2, 7, 2, 8, 12)
        assert out.states.shape == (2, 7, *latent_shape)
        assert out.encoded.shape == (2, 3, *latent_shape)
        torch.testing.assert_close(out.frames[:, :3], network(given[:, :6]).frames)
        # The second pass reads the first pass's predictions as its input frames.
        second = network(torch.cat([out.frames[:, :3], given[:, :3]], dim=1))
        torch.testing.assert_close(out.frames[:, 3:6], second.frames)
        torch.testing.assert_close(out.states[:, 3:6], second.states)
        short = network(given[:, :4])
        torch.testing.assert_close(short.frames, out.frames[:, :1])
        assert short.states.shape == (2, 1, *latent_shape)


@pytest.mark.parametrize("name", NAMES)
def test_the_head_level_is_the_1x1_readout_alone(name: str) -> None:
    # The level names (IncepU's down then up, as its data flows) are in backbone_cases.py.
    assert make(name).levels()[-1] == ("head", ["head.weight", "head.bias"])


def test_divergence_on_a_hand_computed_case() -> None:
    # Predicted: both pixels move by 0.3, so p = softmax([3, 3]) = [1/2, 1/2]. Target: pixel 2
    # moves by 0.1*ln 3 more, so q = softmax([0, ln 3]) = [1/4, 3/4].
    predicted = torch.tensor([0.0, 0.0, 0.3, 0.3]).reshape(1, 2, 1, 1, 2)
    target = torch.tensor([0.0, 0.0, 0.0, 0.1 * math.log(3)]).reshape(1, 2, 1, 1, 2)
    kl_p_q = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    value = differential_divergence(predicted, target, temperature=0.1)
    # KL(p || q) (not KL(q || p)), averaged over the two pixels as OpenSTL's mean does.
    assert value.item() == pytest.approx(kl_p_q / 2, rel=1e-5)
    assert value.item() != pytest.approx(
        (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)) / 2, rel=1e-3
    )
    assert differential_divergence(target, target, 0.1).item() == pytest.approx(0.0, abs=1e-7)
    assert differential_divergence(predicted[:, :1], target[:, :1], 0.1).item() == 0.0


def test_divergence_matches_an_independent_numpy_computation() -> None:
    generator = torch.Generator().manual_seed(5)
    predicted = torch.rand(2, 4, 2, 3, 2, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 4, 2, 3, 2, generator=generator, dtype=torch.float64)
    temperature = 0.25
    p_gap = np.diff(predicted.numpy(), axis=1).reshape(2, 3, -1) / temperature
    q_gap = np.diff(target.numpy(), axis=1).reshape(2, 3, -1) / temperature
    p = np.exp(p_gap) / np.exp(p_gap).sum(-1, keepdims=True)
    q = np.exp(q_gap) / np.exp(q_gap).sum(-1, keepdims=True)
    expected = (p * np.log(p / q)).mean()
    value = differential_divergence(predicted, target, temperature)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_tau_aux_loss_is_the_weighted_divergence_against_the_true_future() -> None:
    network = make("tau")
    given = clip(6)
    torch.manual_seed(0)
    out = network(given)
    expected = 0.1 * differential_divergence(out.frames, given[:, 3:], temperature=0.1)
    torch.testing.assert_close(out.aux_loss, expected)
    assert out.aux_loss > 0
    torch.manual_seed(0)
    loss, _ = network.training_loss(given)
    frame_mse = torch.nn.functional.mse_loss(out.frames, given[:, 3:])
    torch.testing.assert_close(loss, frame_mse + out.aux_loss)

    assert make("tau", alpha=0.0)(given).aux_loss.item() == 0.0


@pytest.mark.parametrize(("name", "dataset"), sorted(OPENSTL_PARAMETERS))
def test_reference_parameter_counts_match_openstl(name: str, dataset: str) -> None:
    network = on_meta(CASES[name].backbone, *reference(name, dataset))
    exact, published = OPENSTL_PARAMETERS[name, dataset]
    assert count_parameters(network) == exact
    assert abs(count_parameters(network) - published) <= 0.01 * published


@pytest.mark.parametrize("name", sorted(OPENSTL_MMNIST_GMACS))
def test_reference_moving_mnist_flops_match_openstl(name: str) -> None:
    network = on_meta(CASES[name].backbone, *reference(name, "moving_mnist"))
    multiply_adds = count_flops(network) / 2
    published = OPENSTL_MMNIST_GMACS[name] * 1e9
    assert abs(multiply_adds - published) <= 0.01 * published


def test_reference_translator_keys_match_the_translator() -> None:
    table = yaml.safe_load((REFERENCE_DIR / "simvp.yaml").read_text())
    assert all(table[dataset]["translator"] == "gsta" for dataset in REFERENCE_GEOMETRY)
    incepu = table["translator_incepu"]
    assert sorted(incepu) == sorted(REFERENCE_GEOMETRY)
    assert all(section["translator"] == "incepu" for section in incepu.values())


def test_frame_size_the_encoder_cannot_halve_is_refused() -> None:
    config = SimVPConfig(hid_S=4, hid_T=8, N_S=4, N_T=2)
    odd = ClipGeometry(channels=1, height=10, width=12, input_frames=3, output_frames=3)
    problems = config.check_geometry(odd)
    assert len(problems) == 1 and "N_S = 4" in problems[0] and "height 10" in problems[0]
    assert config.check_geometry(GEOMETRY) == []
    with pytest.raises(ValueError, match="height 10"):
        SimVP(config, odd)


def test_incepu_group_widths_are_checked_against_the_input_frames() -> None:
    config = SimVPConfig(translator="incepu", hid_S=2, hid_T=16, N_S=2, N_T=2)
    problems = config.check_geometry(GEOMETRY)  # 3 frames * 2 channels = 6 stacked channels
    assert len(problems) == 1 and "input_frames * hid_S = 6" in problems[0]
    narrow = SimVPConfig(translator="incepu", hid_S=8, hid_T=24, N_S=2, N_T=2)
    assert any("hid_T // 2 = 12" in p for p in narrow.check_geometry(GEOMETRY))


@pytest.mark.parametrize(
    ("config_class", "bad", "message"),
    [
        (SimVPConfig, {"spatio_kernel_enc": 4}, "odd"),
        (SimVPConfig, {"hid_S": 5}, "multiple of 2"),
        (SimVPConfig, {"N_T": 1}, "greater than or equal to 2"),
        (SimVPConfig, {"translator": "vit"}, "gsta"),
        (SimVPConfig, {"translator": "incepu", "drop_path": 0.1}, "drop_path"),
        (SimVPConfig, {"heads": 2}, "Extra inputs"),
        (TAUConfig, {"temperature": 0.0}, "greater than 0"),
        (TAUConfig, {"alpha": -0.1}, "greater than or equal to 0"),
        (TAUConfig, {"drop_path": 1.0}, "less than 1"),
    ],
)
def test_bad_configurations_are_refused(
    config_class: type[BackboneConfig], bad: dict, message: str
) -> None:
    section = {"hid_S": 4, "hid_T": 8, "N_S": 4, "N_T": 2, **bad}
    with pytest.raises(ValidationError, match=message):
        config_class.model_validate(section)


def test_params_file_names_the_backbone_and_dataset_of_a_misfit(embedded_raw: dict) -> None:
    embedded_raw["experiment"].update(datasets=["moving_mnist"], backbones=["tau"])
    embedded_raw["models"]["moving_mnist"]["tau"] = {"hid_S": 4, "hid_T": 8, "N_S": 14, "N_T": 2}
    with pytest.raises(
        ConfigError, match=r"models\.moving_mnist\.tau with data\.moving_mnist: N_S = 14"
    ):
        validate_params(embedded_raw)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 3, 2, 8, 12), "nothing to predict"), ((2, 6, 1, 8, 12), r"expected \[B, T, 2, 8, 12\]")],
)
def test_clips_it_cannot_read_are_refused(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make("tau")(torch.zeros(shape))
