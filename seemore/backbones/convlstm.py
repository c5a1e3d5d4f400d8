"""ConvLSTM (Shi et al., NeurIPS 2015) in the patch-based stacked form of OpenSTL's
`ConvLSTM_Model`: each layer's gates i, f, g, o come from bias-free convolutions of its input
and its previous hidden state; C = f*C + i*g, H = o*tanh(C); a 1x1 conv of the top hidden
state predicts the next frame in patch space.

Parameter names follow OpenSTL (`cell_list.*.conv_x`, `conv_h`, `conv_last`). OpenSTL's cell
also builds `conv_o` and `conv_last` convolutions that its forward never uses; they are left
out here (they would get no gradient, and LMA adapts every parameter), so at its reference
settings this model has fewer parameters than OpenSTL reports, by exactly those two unused
convolutions per layer.

`states[:, i]` is the top layer's hidden state `[num_hidden[-1], H/p, W/p]` when frame i+1 is
predicted. Levels: one per layer, bottom to top, then `head` (the output conv).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.stepwise import (
    ConvRecurrentConfig,
    StepResult,
    StepwiseBackbone,
    gate_conv,
    layer_levels,
    levels_by_prefix,
    stacked_cells,
    state_size,
)


class ConvLSTMConfig(ConvRecurrentConfig):
    """num_hidden, filter_size, patch_size, layer_norm: see ConvRecurrentConfig; layers may
    differ in width."""


class ConvLSTMCell(nn.Module):
    def __init__(
        self, in_channels: int, hidden: int, config: ConvRecurrentConfig, height: int, width: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv_x = gate_conv(in_channels, 4 * hidden, config, height, width)
        self.conv_h = gate_conv(hidden, 4 * hidden, config, height, width)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        gates = self.conv_x(x) + self.conv_h(h)
        i, f, g, o = torch.split(gates, self.hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


@BACKBONES.register("convlstm")
class ConvLSTM(StepwiseBackbone):
    description = "ConvLSTM (Shi et al., 2015): stacked convolutional LSTM cells"
    config_class = ConvLSTMConfig
    config: ConvLSTMConfig

    def __init__(self, config: ConvLSTMConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        height, width = state_size(config, geometry)
        self.cell_list = stacked_cells(ConvLSTMCell, self.patch_channels, config, height, width)
        self.conv_last = nn.Conv2d(
            config.num_hidden[-1], self.patch_channels, kernel_size=1, bias=False
        )

    def init_carry(self, frame: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        batch, _, height, width = frame.shape
        zeros = [frame.new_zeros(batch, n, height, width) for n in self.config.num_hidden]
        return list(zeros), list(zeros)

    def step(self, frame: Tensor, carry: tuple[list[Tensor], list[Tensor]]) -> StepResult:
        hidden, cell = list(carry[0]), list(carry[1])
        layer_input = frame
        for i, layer in enumerate(self.cell_list):
            hidden[i], cell[i] = layer(layer_input, hidden[i], cell[i])
            layer_input = hidden[i]
        prediction = self.conv_last(hidden[-1])
        return StepResult(frame=prediction, state=hidden[-1], carry=(hidden, cell))

    def levels(self) -> list[tuple[str, list[str]]]:
        return levels_by_prefix(
            self, [*layer_levels("cell_list", len(self.cell_list)), ("head", ["conv_last"])]
        )
