"""MIM: Memory In Memory networks.

Wang et al., "Memory In Memory: A Predictive Neural Network for Learning Higher-Order
Non-Stationarity from Spatiotemporal Dynamics", CVPR 2019; as in OpenSTL (`MIM_Model`,
`MIMBlock`, `MIMN`).

- The bottom layer is an ST-LSTM; every higher layer is a MIM block: an ST-LSTM whose
  forget-gated temporal memory is replaced by two cascaded recurrent modules, MIM-N (the
  non-stationary module, over differences of hidden states between steps) and MIM-S (the
  stationary module, turning MIM-N's output and the previous temporal memory into the
  memory's update). Both are ConvLSTMs with Hadamard peephole weights.
- MIM-N of layer 1 reads the step difference of the bottom hidden state; MIM-N of layer l > 1
  reads the output of MIM-N of layer l - 1. At step 0 there is no difference yet and no
  MIM-N steps (their states stay zero).
- The spatiotemporal memory zig-zags through the stack as in PredRNN.

Parameter names equal OpenSTL's, so its state dicts load once the dead keys below are dropped.
Departures from OpenSTL, both bugs there: it keeps MIM-S's cell state on the module, detached,
across sequences and batches; here it is carried per sequence like every other state. Its
MIM-N builds an output convolution that forward never uses (0.26 % of its parameters at the
Moving MNIST configuration); it is left out.
States: the top layer's hidden state. Levels: one per layer (a MIM block with the MIM-N that
feeds it), then the output conv.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.predrnn import (
    FORGET_BIAS,
    SpatioTemporalLSTMCell,
    SpatiotemporalMemoryConfig,
)
from seemore.backbones.stepwise import (
    ConvRecurrentConfig,
    StepResult,
    StepwiseBackbone,
    gate_conv,
    levels_by_prefix,
    state_size,
)


class MIMConfig(SpatiotemporalMemoryConfig):
    min_layers: ClassVar[int] = 2  # one ST-LSTM below at least one MIM block


def peephole_lstm(
    x_gates: Tensor, h_gates: Tensor, c: Tensor, ct_weight: Tensor, oc_weight: Tensor
) -> tuple[Tensor, Tensor]:
    """One step of the convolutional LSTM inside MIM-N and MIM-S, from the gate maps of its
    input and hidden state: input and forget gates also see the previous cell state, the
    output gate the new one, through per-position (Hadamard) weights. -> (h, c)."""
    i_h, g_h, f_h, o_h = torch.chunk(h_gates, 4, dim=1)
    i_x, g_x, f_x, o_x = torch.chunk(x_gates, 4, dim=1)
    i_c, f_c = torch.chunk(c.repeat(1, 2, 1, 1) * ct_weight, 2, dim=1)
    i = torch.sigmoid(i_x + i_h + i_c)
    f = torch.sigmoid(f_x + f_h + f_c + FORGET_BIAS)
    c = f * c + i * torch.tanh(g_x + g_h)
    return torch.sigmoid(o_x + o_h + c * oc_weight) * torch.tanh(c), c


class MIMN(nn.Module):
    """The non-stationary module: a peephole ConvLSTM over hidden-state differences."""

    def __init__(
        self, in_channels: int, hidden: int, config: ConvRecurrentConfig, height: int, width: int
    ) -> None:
        super().__init__()
        self.conv_h_concat = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_x_concat = gate_conv(in_channels, 4 * hidden, config, height, width)
        # Peephole weights start at zero, as in the reference.
        self.ct_weight = nn.Parameter(torch.zeros(2 * hidden, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(hidden, height, width))

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return peephole_lstm(
            self.conv_x_concat(x), self.conv_h_concat(h), c, self.ct_weight, self.oc_weight
        )


class MIMBlock(nn.Module):
    """An ST-LSTM whose forget-gated temporal memory is replaced by MIM-S, which reads MIM-N's
    output with the previous temporal memory as its hidden state.

    The input's gate maps are shared by the temporal and the spatiotemporal update, as in the
    reference: 4 maps from the input (`conv_x_cc`), 3 from the hidden state (`conv_t_cc`), 4
    from the spatiotemporal memory (`conv_s_cc`); MIM-S's own weights are the `*_concat` convs
    and the peephole weights.
    """

    def __init__(
        self, in_channels: int, hidden: int, config: ConvRecurrentConfig, height: int, width: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv_t_cc = gate_conv(hidden, 3 * hidden, config, height, width)
        self.conv_s_cc = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_x_cc = gate_conv(in_channels, 4 * hidden, config, height, width)
        self.conv_h_concat = gate_conv(hidden, 4 * hidden, config, height, width)
        self.conv_x_concat = gate_conv(hidden, 4 * hidden, config, height, width)
        self.ct_weight = nn.Parameter(torch.zeros(2 * hidden, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(hidden, height, width))
        self.conv_last = nn.Conv2d(2 * hidden, hidden, kernel_size=1, bias=False)

    def forward(
        self, x: Tensor, difference: Tensor, h: Tensor, c: Tensor, m: Tensor, stationary: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`difference`: MIM-N's output; `stationary`: MIM-S's cell state.
        -> (h, c, m, MIM-S cell state) after one step."""
        i_x, g_x, f_x, o_x = torch.split(self.conv_x_cc(x), self.hidden, dim=1)
        i_t, g_t, o_t = torch.split(self.conv_t_cc(h), self.hidden, dim=1)
        i_s, g_s, f_s, o_s = torch.split(self.conv_s_cc(m), self.hidden, dim=1)

        m = torch.sigmoid(f_x + f_s + FORGET_BIAS) * m + torch.sigmoid(i_x + i_s) * torch.tanh(
            g_x + g_s
        )
        remembered, stationary = peephole_lstm(
            self.conv_x_concat(difference),
            self.conv_h_concat(c),
            stationary,
            self.ct_weight,
            self.oc_weight,
        )
        c = remembered + torch.sigmoid(i_x + i_t) * torch.tanh(g_x + g_t)

        o = torch.sigmoid(o_x + o_t + o_s)
        h = o * torch.tanh(self.conv_last(torch.cat((c, m), dim=1)))
        return h, c, m, stationary


class MIMCarry(NamedTuple):
    hidden: list[Tensor]  # per layer
    cell: list[Tensor]  # per layer: temporal memory
    memory: Tensor  # spatiotemporal memory that left the top layer
    stationary: list[Tensor]  # per MIM block (layers 1..): MIM-S cell state
    difference_hidden: list[Tensor]  # per MIM block: MIM-N hidden state, its output
    difference_cell: list[Tensor]  # per MIM block: MIM-N cell state
    has_previous: bool  # whether a previous bottom hidden state exists to difference against


@BACKBONES.register("mim")
class MIM(StepwiseBackbone):
    description = "MIM (Wang et al., 2019): memory in memory for non-stationary dynamics"
    config_class = MIMConfig
    config: MIMConfig

    def __init__(self, config: MIMConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        height, width = state_size(config, geometry)
        widths = [self.patch_channels, *config.num_hidden]
        layers = len(config.num_hidden)
        self.stlstm_layer = nn.ModuleList(
            [SpatioTemporalLSTMCell(widths[0], widths[1], config, height, width)]
            + [MIMBlock(widths[i], widths[i + 1], config, height, width) for i in range(1, layers)]
        )
        # stlstm_layer_diff[i - 1] is the MIM-N feeding the MIM block of layer i; it reads the
        # hidden state of layer i - 1 (its difference, or MIM-N i - 2's output).
        self.stlstm_layer_diff = nn.ModuleList(
            MIMN(widths[i], widths[i + 1], config, height, width) for i in range(1, layers)
        )
        self.conv_last = nn.Conv2d(widths[-1], self.patch_channels, kernel_size=1, bias=False)

    def init_carry(self, frame: Tensor) -> MIMCarry:
        batch, _, height, width = frame.shape
        zeros = [frame.new_zeros(batch, n, height, width) for n in self.config.num_hidden]
        return MIMCarry(
            hidden=list(zeros),
            cell=list(zeros),
            memory=zeros[0],
            stationary=zeros[1:],
            difference_hidden=zeros[1:],
            difference_cell=zeros[1:],
            has_previous=False,
        )

    def step(self, frame: Tensor, carry: MIMCarry) -> StepResult:
        hidden, cell = list(carry.hidden), list(carry.cell)
        stationary = list(carry.stationary)
        difference_hidden, difference_cell = (
            list(carry.difference_hidden),
            list(carry.difference_cell),
        )
        hidden[0], cell[0], memory, _, _ = self.stlstm_layer[0](
            frame, hidden[0], cell[0], carry.memory
        )
        difference = hidden[0] - carry.hidden[0]
        for i in range(1, len(self.stlstm_layer)):
            d = i - 1  # index among the MIM blocks and their MIM-N modules
            if carry.has_previous:
                difference_hidden[d], difference_cell[d] = self.stlstm_layer_diff[d](
                    difference, difference_hidden[d], difference_cell[d]
                )
            difference = difference_hidden[d]
            hidden[i], cell[i], memory, stationary[d] = self.stlstm_layer[i](
                hidden[i - 1], difference, hidden[i], cell[i], memory, stationary[d]
            )
        return StepResult(
            frame=self.conv_last(hidden[-1]),
            state=hidden[-1],
            carry=MIMCarry(
                hidden, cell, memory, stationary, difference_hidden, difference_cell, True
            ),
        )

    def levels(self) -> list[tuple[str, list[str]]]:
        # A MIM block and the MIM-N that feeds it form one level.
        blocks = [
            (f"layer{i}", [f"stlstm_layer.{i}", f"stlstm_layer_diff.{i - 1}"])
            for i in range(1, len(self.stlstm_layer))
        ]
        return levels_by_prefix(
            self, [("layer0", ["stlstm_layer.0"]), *blocks, ("head", ["conv_last"])]
        )
