"""The backbone interface (DESIGN.md §4): what training, evaluation and SeeMore rely on."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class BackboneKind(enum.StrEnum):
    STEP_WISE = "step-wise"  # recurrent: predicts frame t+1 from frames <= t
    CLIP_WISE = "clip-wise"  # recurrent-free: maps the input clip to the output clip


@dataclass(frozen=True)
class ClipGeometry:
    """Shape facts a backbone is built for; they come from the dataset section."""

    channels: int
    height: int
    width: int
    input_frames: int
    output_frames: int

    @property
    def total_frames(self) -> int:
        return self.input_frames + self.output_frames


class Output(NamedTuple):
    """What `Backbone.forward` returns.

    frames:   predictions `[B, P, C, H, W]` for the frames `backbone.predicted_frames(T)`
              of the clip (step-wise: 1..T-1; clip-wise: input_frames..T-1).
    states:   per-frame representations `[B, P, ...]`, aligned with `frames`: `states[:, i]`
              is what the network held when it produced `frames[:, i]`.
    aux_loss: the backbone's own regulariser (e.g. PredRNN-V2's decoupling loss), already
              weighted; a zero scalar when it has none.
    encoded:  clip-wise backbones only: the encoder's latents of the observed input frames
              `[B, input_frames, ...]`, aligned with frame indices 0..input_frames-1; None
              for step-wise backbones.
    """

    frames: Tensor
    states: Tensor
    aux_loss: Tensor
    encoded: Tensor | None = None


class BackboneConfig(BaseModel):
    """Base of every backbone's params.yaml section; each backbone extends it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        """Problems of this configuration for a clip geometry (empty when it fits)."""
        return []


class Backbone(nn.Module):
    """Base class: subclasses set `kind` and `config_class` and implement `forward`/`levels`."""

    kind: ClassVar[BackboneKind]
    config_class: ClassVar[type[BackboneConfig]]
    # One line for `seemore --help`: the published model it implements.
    description: ClassVar[str]

    def __init__(self, config: BackboneConfig, geometry: ClipGeometry) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        """Predict from `clip` `[B, T, C, H, W]` in [0, 1].

        `sampling_mask` `[B, T-2]` (step-wise only) is the weight of the true frame as the
        input at steps 1..T-2 during training (scheduled sampling); None means inference:
        true frames for the first `input_frames` steps, the network's own predictions after.
        """
        raise NotImplementedError

    def levels(self) -> list[tuple[str, list[str]]]:
        """Parameters grouped into ordered levels, shallow to deep, each parameter exactly
        once: `[(level_name, [parameter names as in named_parameters()]), ...]`."""
        raise NotImplementedError

    def unchained_levels(self) -> set[str]:
        """Names of levels that LMA rates without the shallow-to-deep ordering penalty."""
        return set()

    def predicted_frames(self, total_frames: int) -> slice:
        """Which frame indices of a `total_frames` clip `forward` predicts."""
        if self.kind is BackboneKind.STEP_WISE:
            return slice(1, total_frames)
        return slice(self.geometry.input_frames, total_frames)

    def training_loss(
        self, clip: Tensor, sampling_mask: Tensor | None = None
    ) -> tuple[Tensor, Output]:
        """Frame MSE over every predicted frame plus the backbone's aux loss."""
        out = self(clip, sampling_mask)
        target = clip[:, self.predicted_frames(clip.shape[1])]
        loss = torch.nn.functional.mse_loss(out.frames, target) + out.aux_loss
        return loss, out
