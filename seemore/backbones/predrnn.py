"""PredRNN (v1): a stack of spatiotemporal LSTM (ST-LSTM) cells.

Wang et al., "PredRNN: Recurrent Neural Networks for Predictive Learning using Spatiotemporal
LSTMs", NeurIPS 2017; as in thuml/predrnn-pytorch (`predrnn`) and OpenSTL.

- Each layer keeps a temporal memory C and hidden state H; one spatiotemporal memory M
  zig-zags through the stack: up the layers within a step, then from the top layer at step t
  to the bottom layer at step t+1. Every layer therefore has the same width.
- Gates: bias-free convolutions; forget gates get +1. The output gate also reads [C, M], and
  H = o * tanh(1x1 conv of [C, M]). Output: a 1x1 conv of the top hidden state.

Parameter names equal the reference implementation's (`cell_list.*`, `conv_last`). States:
the top layer's hidden state. Levels: one per layer, bottom to top, then the output conv.

`SpatiotemporalMemoryConfig` here is shared with PredRNN++ and MIM, which keep this memory
flow, and the ST-LSTM cell with MIM (its bottom layer). PredRNN-V2 subclasses PredRNN: its
`step_aux` turns the memory increments the cell returns into the decoupling loss.
"""

from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import torch
from pydantic import field_validator
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.fields import SameWidths
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

FORGET_BIAS = 1.0


class SpatiotemporalMemoryConfig(ConvRecurrentConfig):
    """num_hidden: all layers of the same width, since the spatiotemporal memory passes
    through every layer.
    stride: the reference's gate-convolution stride; only 1 keeps the state size."""

    # Fewest layers the architecture is defined for.
    min_layers: ClassVar[int] = 1

    num_hidden: SameWidths
    stride: Literal[1] = 1

    @field_validator("num_hidden")
    @classmethod
    def _enough_layers(cls, value: list[int]) -> list[int]:
        if len(value) < cls.min_layers:
            raise ValueError(
                f"num_hidden = {value} has {len(value)} layer(s); expected at least "
                f"{cls.min_layers}"
            )
        return value


class PredRNNConfig(SpatiotemporalMemoryConfig):
    """The settings of PredRNN, which PredRNN-V2 extends."""


class CellUpdate(NamedTuple):
    """One ST-LSTM step: the new hidden state and memories, and the memories' increments
    `i * g` (PredRNN-V2's decoupling loss compares them; PredRNN and MIM do not use them)."""

    hidden: Tensor
    cell: Tensor
    memory: Tensor
    delta_cell: Tensor
    delta_memory: Tensor


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(
        self, in_channels: int, hidden: int, config: ConvRecurrentConfig, height: int, width: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv_x = gate_conv(in_channels, 7 * hidden, config, height, width)
        self.conv_h = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_m = gate_conv(hidden, 3 * hidden, config, height, width)
        self.conv_o = gate_conv(2 * hidden, hidden, config, height, width)
        self.conv_last = nn.Conv2d(2 * hidden, hidden, kernel_size=1, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> CellUpdate:
        """One step; `m` comes from the layer below (or the top, last step)."""
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
        return CellUpdate(h, c, m, delta_c, delta_m)


class StackCarry(NamedTuple):
    """Per-layer hidden states and temporal memories, and the spatiotemporal memory that
    left the top layer."""

    hidden: list[Tensor]
    cell: list[Tensor]
    memory: Tensor


def zero_stack_carry(frame: Tensor, num_hidden: list[int]) -> StackCarry:
    batch, _, height, width = frame.shape
    zeros = [frame.new_zeros(batch, n, height, width) for n in num_hidden]
    return StackCarry(hidden=list(zeros), cell=list(zeros), memory=zeros[0])


@BACKBONES.register("predrnn")
class PredRNN(StepwiseBackbone):
    description = "PredRNN (Wang et al., 2017): ST-LSTM with a zigzag spatiotemporal memory"
    config_class = PredRNNConfig
    config: PredRNNConfig
    # The modules of the last level: projections outside the recurrence.
    head_modules: ClassVar[tuple[str, ...]] = ("conv_last",)

    def __init__(self, config: PredRNNConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        height, width = state_size(config, geometry)
        self.cell_list = stacked_cells(
            SpatioTemporalLSTMCell, self.patch_channels, config, height, width
        )
        self.conv_last = nn.Conv2d(
            config.num_hidden[-1], self.patch_channels, kernel_size=1, bias=False
        )

    def init_carry(self, frame: Tensor) -> StackCarry:
        return zero_stack_carry(frame, self.config.num_hidden)

    def step(self, frame: Tensor, carry: StackCarry) -> StepResult:
        hidden, cell, memory = list(carry.hidden), list(carry.cell), carry.memory
        updates = []
        layer_input = frame
        for i, layer in enumerate(self.cell_list):
            update = layer(layer_input, hidden[i], cell[i], memory)
            hidden[i], cell[i], memory = update.hidden, update.cell, update.memory
            updates.append(update)
            layer_input = hidden[i]
        return StepResult(
            frame=self.conv_last(hidden[-1]),
            state=hidden[-1],
            carry=StackCarry(hidden, cell, memory),
            aux=self.step_aux(updates),
        )

    def step_aux(self, updates: list[CellUpdate]) -> Tensor | None:
        """The step's regulariser from each layer's cell update, bottom to top; none here."""
        return None

    def levels(self) -> list[tuple[str, list[str]]]:
        return levels_by_prefix(
            self, [*layer_levels("cell_list", len(self.cell_list)), ("head", self.head_modules)]
        )
