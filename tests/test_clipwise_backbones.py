"""SimVP (gSTA, IncepU) and TAU: the clip-wise interface, rollout, TAU's divergence term,
reference parameter counts and FLOPs, and a BDN step and an LMA meta step on each."""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from seemore.backbones import BACKBONES, BackboneKind, ClipGeometry, build_backbone
from seemore.backbones.base import Backbone, BackboneConfig
from seemore.backbones.profile import count_flops, count_parameters
from seemore.backbones.reference import REFERENCE_DIR, REFERENCE_GEOMETRY, reference_config
from seemore.backbones.simvp import SimVP, SimVPConfig
from seemore.backbones.tau import TAU, TAUConfig, differential_divergence
from seemore.config import BDNConfig, ConfigError, LMAConfig, validate_params
from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater

GEOMETRY = ClipGeometry(channels=2, height=8, width=12, input_frames=3, output_frames=3)
CASES: dict[str, tuple[str, BackboneConfig]] = {
    "gsta": ("simvp", SimVPConfig(hid_S=4, hid_T=8, N_S=4, N_T=3, mlp_ratio=2.0, drop_path=0.1)),
    "incepu": ("simvp", SimVPConfig(translator="incepu", hid_S=8, hid_T=16, N_S=2, N_T=3)),
    "tau": ("tau", TAUConfig(hid_S=4, hid_T=8, N_S=4, N_T=2, mlp_ratio=2.0, drop_path=0.1)),
}
NAMES = sorted(CASES)

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


def make(name: str, seed: int = 0, geometry: ClipGeometry = GEOMETRY) -> Backbone:
    torch.manual_seed(seed)
    backbone, config = CASES[name]
    return build_backbone(backbone, config, geometry)


def clip(frames: int = 6, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 2, 8, 12, generator=generator)


def latent_shape(name: str) -> tuple[int, int, int]:
    config = CASES[name][1]
    factor = 2 ** (config.N_S // 2)
    return (config.hid_S, 8 // factor, 12 // factor)


def reference(name: str, dataset: str) -> tuple[BackboneConfig, ClipGeometry]:
    if name == "incepu":
        table = yaml.safe_load((REFERENCE_DIR / "simvp.yaml").read_text())
        section = table["translator_incepu"][dataset]
        return SimVPConfig.model_validate(section, strict=False), REFERENCE_GEOMETRY[dataset]
    return reference_config("simvp" if name == "gsta" else "tau", dataset)


def test_registered_as_clip_wise() -> None:
    assert BACKBONES.get("simvp") is SimVP
    assert BACKBONES.get("tau") is TAU
    assert SimVP.kind is TAU.kind is BackboneKind.CLIP_WISE


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_latent_space(name: str) -> None:
    network = make(name)
    out = network(clip(6))
    assert out.frames.shape == (2, 3, 2, 8, 12)
    assert out.states.shape == (2, 3, *latent_shape(name))
    assert out.encoded is not None
    assert out.encoded.shape == (2, 3, *latent_shape(name))
    assert out.aux_loss.shape == ()
    assert network.predicted_frames(6) == slice(3, 6)


@pytest.mark.parametrize("name", NAMES)
def test_states_are_the_latents_that_produced_each_frame(name: str) -> None:
    network = make(name).eval()
    given = clip(6)
    with torch.no_grad():
        out = network(given)
        inputs = given[:, :3].reshape(6, 2, 8, 12)
        latent, skip = network.encoder(inputs)
        torch.testing.assert_close(out.encoded, latent.reshape(2, 3, *latent_shape(name)))
        translated = network.translator(out.encoded.flatten(1, 2))
        torch.testing.assert_close(out.states, translated.reshape(2, 3, *latent_shape(name)))
        decoded = network.head(network.decoder(out.states.flatten(0, 1), skip))
        torch.testing.assert_close(out.frames, decoded.reshape(2, 3, 2, 8, 12))


@pytest.mark.parametrize("name", NAMES)
def test_future_frames_and_mask_never_change_the_prediction(name: str) -> None:
    network = make(name).eval()
    given = clip(6)
    altered = given.clone()
    altered[:, 3:] = torch.rand_like(altered[:, 3:])
    with torch.no_grad():
        out = network(given)
        torch.testing.assert_close(network(altered).frames, out.frames)
        torch.testing.assert_close(network(given, torch.zeros(2, 4)).frames, out.frames)


@pytest.mark.parametrize("name", NAMES)
def test_longer_horizon_rolls_out_on_its_own_predictions(name: str) -> None:
    network = make(name).eval()
    given = clip(3 + 7)
    with torch.no_grad():
        out = network(given)
        assert out.frames.shape == (2, 7, 2, 8, 12)
        assert out.states.shape == (2, 7, *latent_shape(name))
        assert out.encoded.shape == (2, 3, *latent_shape(name))
        torch.testing.assert_close(out.frames[:, :3], network(given[:, :6]).frames)
        # The second pass reads the first pass's predictions as its input frames.
        second = network(torch.cat([out.frames[:, :3], given[:, :3]], dim=1))
        torch.testing.assert_close(out.frames[:, 3:6], second.frames)
        torch.testing.assert_close(out.states[:, 3:6], second.states)
        short = network(given[:, :4])
        torch.testing.assert_close(short.frames, out.frames[:, :1])
        assert short.states.shape == (2, 1, *latent_shape(name))


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter_with_finite_gradients(name: str) -> None:
    network = make(name)
    loss, _ = network.training_loss(clip(6))
    loss.backward()
    for parameter_name, parameter in network.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    assert any(p.grad.abs().sum() > 0 for p in network.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_network_and_output(name: str) -> None:
    first, second, other = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    outputs = []
    for network in (first, second, other):
        torch.manual_seed(7)  # stochastic depth draws from the global generator in training
        outputs.append(network(clip(6)))
    assert torch.equal(outputs[0].frames, outputs[1].frames)
    assert torch.equal(outputs[0].states, outputs[1].states)
    assert torch.equal(outputs[0].aux_loss, outputs[1].aux_loss)
    assert not torch.equal(outputs[0].frames, outputs[2].frames)


@pytest.mark.parametrize("name", NAMES)
def test_levels_cover_every_parameter_once_shallow_to_deep(name: str) -> None:
    network = make(name)
    levels = network.levels()
    names = [level for level, _ in levels]
    config = CASES[name][1]
    blocks = 2 * config.N_T if name == "incepu" else config.N_T
    assert names[0] == "encoder" and names[-2:] == ["decoder", "head"]
    assert len(names) == blocks + 3 and all(n.startswith("translator.") for n in names[1:-2])
    listed = [p for _, members in levels for p in members]
    assert sorted(listed) == sorted(n for n, _ in network.named_parameters())
    assert len(listed) == len(set(listed))
    assert levels[-1][1] == ["head.weight", "head.bias"]


def test_incepu_levels_follow_the_data_flow_down_then_up() -> None:
    names = [level for level, _ in make("incepu").levels()][1:-2]
    assert names == [f"translator.down{i}" for i in range(3)] + [
        f"translator.up{i}" for i in range(3)
    ]


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

    torch.manual_seed(0)
    silent = build_backbone("tau", CASES["tau"][1].model_copy(update={"alpha": 0.0}), GEOMETRY)
    assert silent(given).aux_loss.item() == 0.0
    assert make("gsta")(given).aux_loss.item() == 0.0


@pytest.mark.parametrize(("name", "dataset"), sorted(OPENSTL_PARAMETERS))
def test_reference_parameter_counts_match_openstl(name: str, dataset: str) -> None:
    config, geometry = reference(name, dataset)
    with torch.device("meta"):  # counts without allocating or initialising weights
        network = build_backbone("tau" if name == "tau" else "simvp", config, geometry)
    exact, published = OPENSTL_PARAMETERS[name, dataset]
    assert count_parameters(network) == exact
    assert abs(count_parameters(network) - published) <= 0.01 * published


@pytest.mark.parametrize("name", sorted(OPENSTL_MMNIST_GMACS))
def test_reference_moving_mnist_flops_match_openstl(name: str) -> None:
    config, geometry = reference(name, "moving_mnist")
    with torch.device("meta"):
        network = build_backbone("tau" if name == "tau" else "simvp", config, geometry)
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
    embedded_raw["experiment"]["backbones"] = ["tau"]
    embedded_raw["models"]["tau"] = {"hid_S": 4, "hid_T": 8, "N_S": 14, "N_T": 2}
    with pytest.raises(ConfigError, match=r"models\.tau with data\.moving_mnist: N_S = 14"):
        validate_params(embedded_raw)


@pytest.mark.parametrize("name", NAMES)
def test_bdn_step_runs_with_finite_loss_and_gradients(name: str) -> None:
    objective = BidirectionalObjective(make(name, seed=0), make(name, seed=1), BDNConfig())
    result = objective(clip(6), None)
    assert torch.isfinite(result.loss)
    assert {"distill_state", "backtrack"} <= result.terms.keys()
    assert result.terms["distill_state"] > 0
    result.loss.backward()
    for parameter_name, parameter in objective.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", NAMES)
def test_lma_meta_step_runs_and_moves_only_the_rates(name: str) -> None:
    objective = BidirectionalObjective(make(name, seed=0), make(name, seed=1), BDNConfig())
    config = LMAConfig(cycle=2, meta_steps=1, a_max=2e-3, meta_lr=1e-4)
    updater = LMAUpdater(objective, 1e-3, config, nullcontext, None)
    weights = {n: p.detach().clone() for n, p in objective.named_parameters()}
    logs = updater.step(clip(6), None)
    assert logs["meta_step"] == 1.0 and math.isfinite(logs["lookahead_loss"])
    assert len(updater.level_names) == 2 * len(objective.forward_network.levels())
    assert not torch.equal(updater.rates.detach(), torch.full_like(updater.rates, 1e-3))
    for parameter_name, parameter in objective.named_parameters():
        assert torch.equal(parameter, weights[parameter_name]), parameter_name


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 3, 2, 8, 12), "nothing to predict"), ((2, 6, 1, 8, 12), r"expected \[B, T, 2, 8, 12\]")],
)
def test_clips_it_cannot_read_are_refused(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make("tau")(torch.zeros(shape))
