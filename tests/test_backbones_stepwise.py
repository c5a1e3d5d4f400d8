"""The shared step-wise rollout and patching, on a recording stub backbone; the settings that
every backbone of the convolutional recurrent family (`ConvRecurrentConfig`) shares, on each."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from backbone_cases import CASES, clip, make
from backbone_cases import GEOMETRY as BACKBONE_GEOMETRY
from torch import Tensor, nn

from seemore.backbones.base import BackboneConfig, ClipGeometry
from seemore.backbones.patch import from_patches, patch_geometry_problems, to_patches
from seemore.backbones.profile import count_parameters
from seemore.backbones.stepwise import (
    ConvRecurrentConfig,
    StepResult,
    StepwiseBackbone,
    levels_by_prefix,
)

GEOMETRY = ClipGeometry(channels=2, height=4, width=6, input_frames=3, output_frames=3)
CONV_RECURRENT = [
    name for name in sorted(CASES) if isinstance(CASES[name].config, ConvRecurrentConfig)
]


class RecordingStub(StepwiseBackbone):
    """Predicts `scale * input + step count`; records every input it is given."""

    config_class = BackboneConfig

    def __init__(self, geometry: ClipGeometry = GEOMETRY, patch_size: int = 2) -> None:
        super().__init__(BackboneConfig(), geometry, patch_size=patch_size)
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.inputs: list[Tensor] = []

    def init_carry(self, frame: Tensor) -> Any:
        return 0

    def step(self, frame: Tensor, carry: Any) -> StepResult:
        self.inputs.append(frame.detach().clone())
        prediction = self.scale * frame + carry
        aux = torch.tensor(float(carry))
        return StepResult(frame=prediction, state=prediction.mean(dim=1), carry=carry + 1, aux=aux)


def test_patches_round_trip_and_match_reference_channel_order() -> None:
    clip = torch.rand(2, 3, 2, 8, 12)
    patches = to_patches(clip, 4)
    assert patches.shape == (2, 3, 32, 2, 3)
    assert torch.equal(from_patches(patches, 4), clip)
    # Reference (channels-last numpy) layout: channel index (dy*p + dx)*C + c.
    assert patches[0, 0, (1 * 4 + 3) * 2 + 1, 1, 2] == clip[0, 0, 1, 1 * 4 + 1, 2 * 4 + 3]
    last = clip.permute(0, 1, 3, 4, 2).numpy()
    ref = last.reshape(2, 3, 2, 4, 3, 4, 2).transpose(0, 1, 2, 4, 3, 5, 6).reshape(2, 3, 2, 3, 32)
    np.testing.assert_array_equal(ref.transpose(0, 1, 4, 2, 3), patches.numpy())


def test_patch_size_that_does_not_divide_is_refused() -> None:
    geometry = ClipGeometry(channels=1, height=64, width=60, input_frames=10, output_frames=10)
    problems = patch_geometry_problems(8, geometry)
    assert len(problems) == 1 and "60" in problems[0] and "8" in problems[0]
    assert patch_geometry_problems(4, geometry) == []
    with pytest.raises(ValueError, match="does not divide"):
        to_patches(torch.zeros(1, 1, 1, 6, 6), 4)


def test_inference_feeds_true_frames_then_predictions() -> None:
    stub = RecordingStub()
    clip = torch.rand(2, 7, 2, 4, 6)  # longer than the training horizon of 6
    out = stub(clip)
    patches = to_patches(clip, 2)
    assert out.frames.shape == (2, 6, 2, 4, 6)
    assert out.states.shape == (2, 6, 2, 3)
    predictions = to_patches(out.frames, 2)
    for t, given in enumerate(stub.inputs):
        expected = patches[:, t] if t < GEOMETRY.input_frames else predictions[:, t - 1]
        torch.testing.assert_close(given, expected)
    torch.testing.assert_close(out.aux_loss, torch.tensor(2.5))  # mean of 0..5


def test_sampling_mask_mixes_true_frame_and_previous_prediction() -> None:
    stub = RecordingStub()
    clip = torch.rand(3, 6, 2, 4, 6)
    mask = torch.tensor([[1.0, 0.0, 0.25, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = stub(clip, mask)
    patches, predictions = to_patches(clip, 2), to_patches(out.frames, 2)
    torch.testing.assert_close(stub.inputs[0], patches[:, 0])
    for t in range(1, 5):
        m = mask[:, t - 1].view(3, 1, 1, 1)
        expected = m * patches[:, t] + (1 - m) * predictions[:, t - 1]
        torch.testing.assert_close(stub.inputs[t], expected)


def test_bad_shapes_are_refused_with_the_expected_shape() -> None:
    stub = RecordingStub()
    with pytest.raises(ValueError, match=r"expected \[B, T, 2, 4, 6\]"):
        stub(torch.rand(1, 5, 1, 4, 6))
    with pytest.raises(ValueError, match=r"expected \[B, T-2\] = \[1, 3\]"):
        stub(torch.rand(1, 5, 2, 4, 6), torch.ones(1, 4))


def test_levels_by_prefix_refuses_gaps_and_overlaps() -> None:
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert levels_by_prefix(module, [("a", ["0"]), ("b", ["1"])]) == [
        ("a", ["0.weight", "0.bias"]),
        ("b", ["1.weight", "1.bias"]),
    ]
    with pytest.raises(ValueError, match=r"in no level \['1.weight', '1.bias'\]"):
        levels_by_prefix(module, [("a", ["0"])])
    with pytest.raises(ValueError, match=r"in several levels \['0.weight'\]"):
        levels_by_prefix(module, [("a", ["0"]), ("b", ["0.weight", "1"])])
    with pytest.raises(ValueError, match="has no parameters"):
        levels_by_prefix(module, [("a", ["0", "1"]), ("c", ["2"])])


def test_the_recurrent_family_is_every_convolutional_recurrent_backbone() -> None:
    assert CONV_RECURRENT == ["convlstm", "mim", "predrnn", "predrnn_pp", "predrnn_v2"]


@pytest.mark.parametrize("name", CONV_RECURRENT)
def test_a_patch_size_that_does_not_tile_the_frame_is_refused(name: str) -> None:
    # The tiny cases' frames are 8 x 12.
    assert CASES[name].config.check_geometry(BACKBONE_GEOMETRY) == []
    config = CASES[name].config.model_copy(update={"patch_size": 5})
    problems = config.check_geometry(BACKBONE_GEOMETRY)
    assert len(problems) == 2
    assert "patch_size = 5" in problems[0] and "height 8" in problems[0]
    assert "patch_size = 5" in problems[1] and "width 12" in problems[1]
    with pytest.raises(ValueError, match="patch_size = 5 does not divide"):
        make(name, patch_size=5)


@pytest.mark.parametrize("name", CONV_RECURRENT)
def test_layer_norm_variant_trains_every_parameter_and_keeps_them_in_levels(name: str) -> None:
    network = make(name, layer_norm=True)
    assert count_parameters(network) > count_parameters(make(name))
    loss, out = network.training_loss(clip(), torch.full((2, 4), 0.5))
    assert torch.isfinite(out.frames).all()
    loss.backward()
    for parameter_name, parameter in network.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name
    listed = [p for _, members in network.levels() for p in members]
    assert sorted(listed) == sorted(p for p, _ in network.named_parameters())
    assert len(listed) == len(set(listed))
