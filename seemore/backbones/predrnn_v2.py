"""PredRNN-V2 (Wang et al., TPAMI 2022): stacked spatiotemporal LSTM cells with memory
decoupling, as in the authors' thuml/predrnn-pytorch (`predrnn_v2`, `SpatioTemporalLSTMCell_v2`).

- Each layer keeps a temporal memory C and hidden state H; one spatiotemporal memory M
  zig-zags through the stack: up the layers within a step, then from the top layer at step t
  to the bottom layer at step t+1. Every layer therefore has the same width.
- Gates: bias-free convolutions; forget gates get +1. The output gate also reads [C, M]
  through `conv_o`, and H = o * tanh(1x1 conv of [C, M]).
- Decoupling loss: a shared 1x1 `adapter` maps the increments dC = i*g and dM = i'*g' of each
  layer; per channel, the absolute cosine similarity of the two over space, averaged over
  batch, channels, layers and steps, times `decouple_beta`.
- Output: a 1x1 conv of the top hidden state, in patch space.

Parameter names equal the reference implementation's (`cell_list.*`, `conv_last`, `adapter`),
so its state dicts load. `states[:, i]` is the top layer's hidden state `[num_hidden, H/p, W/p]`
when frame i+1 is predicted (what SeeMore's reference code distils).

Levels: one per ST-LSTM layer, bottom to top, then `head` = the 1x1 output conv together with
the adapter: both are projections outside the recurrence reading the cells' outputs, and the
adapter only shapes the decoupling regulariser, so it is kept off the depth ordering of the
cells.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.stepwise import (
    ConvRecurrentConfig,
    StepResult,
    StepwiseBackbone,
    gate_conv,
    levels_by_prefix,
)
from seemore.config import NonNegativeFloat

FORGET_BIAS = 1.0


class PredRNNV2Config(ConvRecurrentConfig):
    """stride: the reference's gate-convolution stride; only 1 keeps the frame size.
    decouple_beta: weight of the memory decoupling loss."""

    stride: Literal[1] = 1
    decouple_beta: NonNegativeFloat = 0.1

    @field_validator("num_hidden")
    @classmethod
    def _equal_widths(cls, value: list[int]) -> list[int]:
        if len(set(value)) > 1:
            raise ValueError(
                f"num_hidden = {value}: the spatiotemporal memory passes through every layer, "
                "so all layers need the same width"
            )
        return value


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(
        self, in_channels: int, hidden: int, config: PredRNNV2Config, height: int, width: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv_x = gate_conv(in_channels, 7 * hidden, config, height, width)
        self.conv_h = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_m = gate_conv(hidden, 3 * hidden, config, height, width)
        self.conv_o = gate_conv(2 * hidden, hidden, config, height, width)
        self.conv_last = nn.Conv2d(2 * hidden, hidden, kernel_size=1, bias=False)

    def forward(
        self, x: Tensor, h: Tensor, c: Tensor, m: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """-> (h, c, m, delta_c, delta_m) after one step."""
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = torch.split(self.conv_x(x), self.hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), self.hidden, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m), self.hidden, dim=1)

        delta_c = torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
        c = torch.sigmoid(f_x + f_h + FORGET_BIAS) * c + delta_c
        delta_m = torch.sigmoid(i_xm + i_m) * torch.tanh(g_xm + g_m)
        m = torch.sigmoid(f_xm + f_m + FORGET_BIAS) * m + delta_m

        memory = torch.cat((c, m), dim=1)
        o = torch.sigmoid(o_x + o_h + self.conv_o(memory))
        h = o * torch.tanh(self.conv_last(memory))
        return h, c, m, delta_c, delta_m


@BACKBONES.register("predrnn_v2")
class PredRNNV2(StepwiseBackbone):
    config_class = PredRNNV2Config
    config: PredRNNV2Config

    def __init__(self, config: PredRNNV2Config, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        height, width = geometry.height // config.patch_size, geometry.width // config.patch_size
        widths = [self.patch_channels, *config.num_hidden]
        self.cell_list = nn.ModuleList(
            SpatioTemporalLSTMCell(widths[i], widths[i + 1], config, height, width)
            for i in range(len(config.num_hidden))
        )
        hidden = config.num_hidden[-1]
        self.conv_last = nn.Conv2d(hidden, self.patch_channels, kernel_size=1, bias=False)
        self.adapter = nn.Conv2d(hidden, hidden, kernel_size=1, bias=False)

    def init_carry(self, frame: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        batch, _, height, width = frame.shape
        zeros = [frame.new_zeros(batch, n, height, width) for n in self.config.num_hidden]
        return list(zeros), list(zeros), zeros[0]

    def step(self, frame: Tensor, carry: tuple[list[Tensor], list[Tensor], Tensor]) -> StepResult:
        hidden, cell, memory = carry
        hidden, cell = list(hidden), list(cell)
        decoupling = []
        layer_input = frame
        for i, layer in enumerate(self.cell_list):
            hidden[i], cell[i], memory, delta_c, delta_m = layer(
                layer_input, hidden[i], cell[i], memory
            )
            layer_input = hidden[i]
            decoupling.append(self._decoupling(delta_c, delta_m))
        aux = self.config.decouple_beta * torch.stack(decoupling).mean()
        prediction = self.conv_last(hidden[-1])
        return StepResult(frame=prediction, state=hidden[-1], carry=(hidden, cell, memory), aux=aux)

    def _decoupling(self, delta_c: Tensor, delta_m: Tensor) -> Tensor:
        """Mean |cos| over batch and channels between the adapted increments, each channel's
        map taken as one vector."""
        adapted_c = self.adapter(delta_c).flatten(2)
        adapted_m = self.adapter(delta_m).flatten(2)
        return F.cosine_similarity(adapted_c, adapted_m, dim=2).abs().mean()

    def levels(self) -> list[tuple[str, list[str]]]:
        cells = [(f"layer{i}", [f"cell_list.{i}"]) for i in range(len(self.cell_list))]
        return levels_by_prefix(self, [*cells, ("head", ["conv_last", "adapter"])])
