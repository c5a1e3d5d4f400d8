"""PredRNN++: causal LSTM cells with a gradient highway unit (GHU) between the first two layers.

Wang et al., "PredRNN++: Towards A Resolution of the Deep-in-Time Dilemma in Spatiotemporal
Predictive Learning", ICML 2018; as in OpenSTL (`PredRNNpp_Model`, `CausalLSTMCell`, `GHU`).

- The causal LSTM updates its temporal memory C first, then derives the spatiotemporal
  memory M from the new C and the M of the layer below (a cascade, where ST-LSTM has two
  parallel memories); its output gate is a tanh of input, hidden state and both memories.
- The GHU sits between layer 0 and layer 1, with its own state z carried across steps: a
  short path for gradients through time. Its convolutions start uniform in +-0.001.
- The spatiotemporal memory zig-zags through the stack as in PredRNN.

Parameter names equal OpenSTL's, so its state dicts load once the dead keys below are dropped.
Departures from OpenSTL, both bugs there: its causal cell builds an output convolution
`conv_o` over [C, M] that forward never uses (3.3M of its published 38.6M parameters at the
Moving MNIST configuration, and absent from its published FLOPs); it is left out, so the
count here is OpenSTL's minus that block for the same function. Its GHU's LayerNorm is sized
for half the gate channels (a crash with `layer_norm`); here it covers all of them.
States: the top layer's hidden state. Levels: one per layer (the GHU with layer 1, the only
layer it feeds), then the output conv.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.predrnn import (
    FORGET_BIAS,
    SpatiotemporalMemoryConfig,
    StackCarry,
    zero_stack_carry,
)
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

# The reference initialises the GHU's convolutions uniformly in +-0.001, so that the highway
# starts as a near pass-through mix of its input and its state.
HIGHWAY_INIT_RANGE = 1e-3


class PredRNNppConfig(SpatiotemporalMemoryConfig):
    min_layers: ClassVar[int] = 2  # the GHU sits between layer 0 and layer 1


class CausalLSTMCell(nn.Module):
    """Temporal memory `c` from input, hidden state and `c` itself; then the spatiotemporal
    memory `m` from input, the new `c` and the `m` of the layer below; the output gate (tanh,
    as in the paper) reads input, hidden state and both new memories."""

    def __init__(
        self, in_channels: int, hidden: int, config: ConvRecurrentConfig, height: int, width: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv_x = gate_conv(in_channels, 7 * hidden, config, height, width)
        self.conv_h = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_c = gate_conv(hidden, 3 * hidden, config, height, width)
        self.conv_m = gate_conv(hidden, 3 * hidden, config, height, width)
        self.conv_c2m = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_om = gate_conv(hidden, hidden, config, height, width)
        self.conv_last = nn.Conv2d(2 * hidden, hidden, kernel_size=1, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (h, c, m) after one step; `m` comes from the layer below (or the top, last step)."""
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = torch.split(self.conv_x(x), self.hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), self.hidden, dim=1)
        i_c, f_c, g_c = torch.split(self.conv_c(c), self.hidden, dim=1)
        i_m, f_m, m_m = torch.split(self.conv_m(m), self.hidden, dim=1)

        c = torch.sigmoid(f_x + f_h + f_c + FORGET_BIAS) * c + torch.sigmoid(
            i_x + i_h + i_c
        ) * torch.tanh(g_x + g_h + g_c)

        i_cm, g_cm, f_cm, o_c = torch.split(self.conv_c2m(c), self.hidden, dim=1)
        m = torch.sigmoid(f_xm + f_m + f_cm + FORGET_BIAS) * torch.tanh(m_m) + torch.sigmoid(
            i_xm + i_m + i_cm
        ) * torch.tanh(g_xm + g_cm)

        o = torch.tanh(o_x + o_h + o_c + self.conv_om(m))
        return o * torch.tanh(self.conv_last(torch.cat((c, m), dim=1))), c, m


class GradientHighwayUnit(nn.Module):
    """`z' = u * tanh(p) + (1 - u) * z`, with switch `u` and transform `p` from input and `z`."""

    def __init__(self, channels: int, config: ConvRecurrentConfig, height: int, width: int) -> None:
        super().__init__()
        self.channels = channels
        self.z_concat = gate_conv(channels, 2 * channels, config, height, width)
        self.x_concat = gate_conv(channels, 2 * channels, config, height, width)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.uniform_(module.weight, -HIGHWAY_INIT_RANGE, HIGHWAY_INIT_RANGE)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        p, u = torch.split(self.x_concat(x) + self.z_concat(z), self.channels, dim=1)
        switch = torch.sigmoid(u)
        return switch * torch.tanh(p) + (1 - switch) * z


class HighwayCarry(NamedTuple):
    stack: StackCarry
    highway: Tensor  # the GHU's state z


@BACKBONES.register("predrnn_pp")
class PredRNNpp(StepwiseBackbone):
    description = "PredRNN++ (Wang et al., 2018): causal LSTM with a gradient highway unit"
    config_class = PredRNNppConfig
    config: PredRNNppConfig

    def __init__(self, config: PredRNNppConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        height, width = state_size(config, geometry)
        self.cell_list = stacked_cells(CausalLSTMCell, self.patch_channels, config, height, width)
        self.gradient_highway = GradientHighwayUnit(config.num_hidden[0], config, height, width)
        self.conv_last = nn.Conv2d(
            config.num_hidden[-1], self.patch_channels, kernel_size=1, bias=False
        )

    def init_carry(self, frame: Tensor) -> HighwayCarry:
        stack = zero_stack_carry(frame, self.config.num_hidden)
        return HighwayCarry(stack=stack, highway=torch.zeros_like(stack.hidden[0]))

    def step(self, frame: Tensor, carry: HighwayCarry) -> StepResult:
        hidden, cell, memory = list(carry.stack.hidden), list(carry.stack.cell), carry.stack.memory
        highway = carry.highway
        layer_input = frame
        for i, layer in enumerate(self.cell_list):
            hidden[i], cell[i], memory = layer(layer_input, hidden[i], cell[i], memory)
            if i == 0:
                highway = self.gradient_highway(hidden[0], highway)
                layer_input = highway
            else:
                layer_input = hidden[i]
        return StepResult(
            frame=self.conv_last(hidden[-1]),
            state=hidden[-1],
            carry=HighwayCarry(StackCarry(hidden, cell, memory), highway),
        )

    def levels(self) -> list[tuple[str, list[str]]]:
        # The GHU only feeds layer 1, so it shares layer 1's rate.
        cells = layer_levels("cell_list", len(self.cell_list))
        cells[1] = ("layer1", ["cell_list.1", "gradient_highway"])
        return levels_by_prefix(self, [*cells, ("head", ["conv_last"])])
