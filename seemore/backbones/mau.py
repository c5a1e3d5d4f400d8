"""MAU (Chang et al., "MAU: A Motion-Aware Unit for Video Prediction and Beyond", NeurIPS 2021).

Frames are encoded (1x1 conv, then `log2(sr_size)` stride-2 convs) to a coarse grid where a
stack of motion-aware units runs. Each unit keeps a temporal state `T` and passes a spatial
state `S` upward. Its attention module weighs the layer's last `tau` temporal states by how
well the spatial inputs they came with match the current one (scaled dot products, softmax
over the `tau` steps), fuses that motion trend into `T` through a gate, and a fusion module
exchanges information between `T` and `S`. Transposed convs decode the top `S` to the frame.

Sizes follow OpenSTL's MAU (layer-normed 5x5 gate convs), so parameter counts match it except
for two 1x1 convs that OpenSTL builds but never uses (8,259 parameters on Moving MNIST).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from pydantic import field_validator
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import BackboneConfig, ClipGeometry
from seemore.backbones.fields import OddKernel, SameWidths
from seemore.backbones.patch import patch_geometry_problems
from seemore.backbones.stepwise import (
    StepResult,
    StepwiseBackbone,
    layer_levels,
    levels_by_prefix,
)
from seemore.schema import PositiveInt

LEAKY_SLOPE = 0.2


class MAUConfig(BackboneConfig):
    # Widths per layer; all equal because S and T pass between layers unchanged in width.
    num_hidden: SameWidths
    filter_size: OddKernel = 5
    patch_size: PositiveInt = 1
    # Downsampling of the frame encoder (a power of two).
    sr_size: PositiveInt = 4
    # How many past steps the attention module looks back.
    tau: PositiveInt = 5
    # residual: each unit adds its spatial input to its spatial output.
    cell_mode: Literal["normal", "residual"] = "normal"
    # recall: the decoder adds the encoder's features of the same resolution (skips).
    model_mode: Literal["normal", "recall"] = "normal"

    @field_validator("sr_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("expected a power of two (stride-2 encoder stages)")
        return value

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        problems = patch_geometry_problems(self.patch_size, geometry)
        if problems:
            return problems
        for name, size in (("height", geometry.height), ("width", geometry.width)):
            patched = size // self.patch_size
            if patched % self.sr_size:
                problems.append(
                    f"sr_size = {self.sr_size} does not divide the patched frame {name} "
                    f"{patched} ({size} / patch_size {self.patch_size}); expected a divisor"
                )
        return problems


def normed_conv(cin: int, cout: int, kernel_size: int, height: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2),
        nn.LayerNorm([cout, height, width]),
    )


class MotionAwareUnit(nn.Module):
    def __init__(self, hidden: int, height: int, width: int, config: MAUConfig) -> None:
        super().__init__()
        self.hidden = hidden
        self.residual = config.cell_mode == "residual"
        self.scale = 1.0 / math.sqrt(hidden * height * width)
        k = config.filter_size
        self.conv_t = normed_conv(hidden, 3 * hidden, k, height, width)
        self.conv_t_next = normed_conv(hidden, hidden, k, height, width)
        self.conv_s = normed_conv(hidden, 3 * hidden, k, height, width)
        self.conv_s_next = normed_conv(hidden, hidden, k, height, width)

    def forward(
        self, t: Tensor, s: Tensor, past_t: Tensor, past_s: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`t`, `s` `[B, C, H, W]`; `past_t`, `past_s` `[tau, B, C, H, W]`."""
        s_next = self.conv_s_next(s)
        similarity = (past_s * s_next).sum(dim=(2, 3, 4)) * self.scale
        weights = torch.softmax(similarity, dim=0)[..., None, None, None]
        trend = (weights * past_t).sum(dim=0)
        gate = torch.sigmoid(self.conv_t_next(t))
        fused_t = gate * t + (1 - gate) * trend

        t_gate, t_t, t_s = torch.split(self.conv_t(fused_t), self.hidden, dim=1)
        s_gate, s_t, s_s = torch.split(self.conv_s(s), self.hidden, dim=1)
        t_gate, s_gate = torch.sigmoid(t_gate), torch.sigmoid(s_gate)
        new_t = t_gate * t_t + (1 - t_gate) * s_t
        new_s = s_gate * s_s + (1 - s_gate) * t_s
        if self.residual:
            new_s = new_s + s
        return new_t, new_s


class MAUCarry(NamedTuple):
    temporal: list[Tensor]
    past_temporal: list[list[Tensor]]  # per layer, its last tau temporal states
    past_spatial: list[list[Tensor]]  # per layer, its last tau spatial inputs


@BACKBONES.register("mau")
class MAU(StepwiseBackbone):
    description = "MAU (Chang et al., 2021): motion-aware unit attending over past motion"
    config_class = MAUConfig
    config: MAUConfig

    def __init__(self, config: MAUConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        self.tau = config.tau
        self.recall = config.model_mode == "recall"
        width = config.num_hidden[0]
        stages = int(math.log2(config.sr_size))
        grid_h = geometry.height // config.patch_size // config.sr_size
        grid_w = geometry.width // config.patch_size // config.sr_size
        self.grid = (grid_h, grid_w)

        def downsample() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(LEAKY_SLOPE)
            )

        self.encoder = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(self.patch_channels, width, 1), nn.LeakyReLU(LEAKY_SLOPE)),
                *(downsample() for _ in range(stages)),
            ]
        )
        self.cells = nn.ModuleList(
            MotionAwareUnit(hidden, grid_h, grid_w, config) for hidden in config.num_hidden
        )
        # Every upsampling stage but the last ends in a LeakyReLU, as in the reference.
        self.decoder = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
                *([nn.LeakyReLU(LEAKY_SLOPE)] if stage < stages - 1 else []),
            )
            for stage in range(stages)
        )
        self.head = nn.Conv2d(width, self.patch_channels, 1)

    def init_carry(self, frame: Tensor) -> MAUCarry:
        zeros = [frame.new_zeros(frame.shape[0], cell.hidden, *self.grid) for cell in self.cells]
        history = [[z] * self.tau for z in zeros]
        return MAUCarry(zeros, history, history)

    def step(self, frame: Tensor, carry: MAUCarry) -> StepResult:
        features = []
        x = frame
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        s = x
        temporal, past_temporal, past_spatial = [], [], []
        for i, cell in enumerate(self.cells):
            t, s_next = cell(
                carry.temporal[i],
                s,
                torch.stack(carry.past_temporal[i]),
                torch.stack(carry.past_spatial[i]),
            )
            past_spatial.append([*carry.past_spatial[i][1:], s])
            past_temporal.append([*carry.past_temporal[i][1:], t])
            temporal.append(t)
            s = s_next
        out = s
        for i, stage in enumerate(self.decoder):
            out = stage(out)
            if self.recall:
                out = out + features[-2 - i]
        return StepResult(
            frame=self.head(out),
            state=s,
            carry=MAUCarry(temporal, past_temporal, past_spatial),
        )

    def levels(self) -> list[tuple[str, list[str]]]:
        cells = layer_levels("cells", len(self.cells))
        decoder = [("decoder", ["decoder"])] if len(self.decoder) else []
        return levels_by_prefix(
            self, [("encoder", ["encoder"]), *cells, *decoder, ("head", ["head"])]
        )
