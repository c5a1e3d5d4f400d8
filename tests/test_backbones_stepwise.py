"""The shared step-wise rollout and patching, on a recording stub backbone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from seemore.backbones.base import BackboneConfig, ClipGeometry
from seemore.backbones.patch import from_patches, patch_geometry_problems, to_patches
from seemore.backbones.stepwise import StepResult, StepwiseBackbone, levels_by_prefix

GEOMETRY = ClipGeometry(channels=2, height=4, width=6, input_frames=3, output_frames=3)


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
