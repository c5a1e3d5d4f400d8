"""E3D-LSTM (Wang et al., "Eidetic 3D LSTM", ICLR 2019).

Each step sees a temporal window of the latest `window_length` (patched) input frames; the
gates are 3D convolutions over that window. The cell state is updated through a recall gate:
self-attention from the gate over every past cell state of the layer (the eidetic memory),
then a layer norm. A spatiotemporal memory zigzags through the layers as in PredRNN. A 3D
convolution over the window maps the top hidden state to the next frame.

Layer sizes follow OpenSTL's port (bias-free convolutions, the cell-state layer norm, a
`(window, 1, 1)` output convolution), so parameter counts match it. Where that port departs
from the authors' TensorFlow code we follow the latter: the gate convolutions use 'same'
padding in time (no nearest-neighbour copy of a single output slot), the recall attends with
channels as features over all past positions, and the spatiotemporal memory is updated.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
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

# The spatiotemporal memory's forget gate starts biased open, as in the reference code.
FORGET_BIAS = 1.0


class E3DLSTMConfig(BackboneConfig):
    # Hidden channels per layer; all equal because the memory flows through every layer.
    num_hidden: SameWidths
    filter_size: OddKernel = 5
    # Temporal extent of the gate convolutions (the reference uses a 2x5x5 kernel).
    temporal_filter_size: PositiveInt = 2
    # Input frames per step: the current one and the `window_length - 1` before it.
    window_length: PositiveInt = 2
    patch_size: PositiveInt = 4
    # Spatial stride of the gate convolutions; >1 computes gates on a coarser grid and
    # repeats them back (OpenSTL's KTH setting uses 2 to cut cost).
    conv_stride: PositiveInt = 1

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        problems = patch_geometry_problems(self.patch_size, geometry)
        if self.temporal_filter_size > self.window_length:
            problems.append(
                f"temporal_filter_size = {self.temporal_filter_size} exceeds window_length = "
                f"{self.window_length}; expected at most the window"
            )
        return problems


class WindowConv(nn.Module):
    """Bias-free 3D convolution on `[B, C, window, H, W]` that keeps window length and spatial
    size: 'same' padding as TensorFlow pads (the odd extra slot after the window)."""

    def __init__(
        self, in_channels: int, out_channels: int, temporal: int, spatial: int, stride: int
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(temporal, spatial, spatial),
            stride=(1, stride, stride),
            padding=(0, spatial // 2, spatial // 2),
            bias=False,
        )
        before = (temporal - 1) // 2
        self.time_padding = (0, 0, 0, 0, before, temporal - 1 - before)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.pad(x, self.time_padding))
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-3:], mode="nearest")
        return y


class EideticCell(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden: int,
        window: int,
        height: int,
        width: int,
        config: E3DLSTMConfig,
    ) -> None:
        super().__init__()
        self.hidden = hidden

        def conv(cin: int, cout: int) -> WindowConv:
            return WindowConv(
                cin, cout, config.temporal_filter_size, config.filter_size, config.conv_stride
            )

        self.conv_x = conv(in_channels, 7 * hidden)
        self.conv_h = conv(hidden, 4 * hidden)
        self.conv_memory = conv(hidden, 4 * hidden)
        self.conv_cell_out = conv(hidden, hidden)
        self.conv_memory_out = conv(hidden, hidden)
        self.fuse = nn.Conv3d(2 * hidden, hidden, kernel_size=1, bias=False)
        self.norm_cell = nn.LayerNorm([hidden, window, height, width])

    @staticmethod
    def recall(gate: Tensor, past_cells: Tensor) -> Tensor:
        """Attention from every position of `gate` `[B, C, w, H, W]` over every position of
        `past_cells` `[B, C, n, H, W]`, channels as features, unscaled as in the paper."""
        query = gate.flatten(2).transpose(1, 2).unsqueeze(1)
        keys = past_cells.flatten(2).transpose(1, 2).unsqueeze(1)
        attended = F.scaled_dot_product_attention(query, keys, keys, scale=1.0)
        return attended.squeeze(1).transpose(1, 2).reshape(gate.shape)

    def forward(
        self, x: Tensor, h: Tensor, c: Tensor, memory: Tensor, past_cells: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        i_x, g_x, r_x, o_x, mi_x, mg_x, mf_x = torch.split(self.conv_x(x), self.hidden, dim=1)
        i_h, g_h, r_h, o_h = torch.split(self.conv_h(h), self.hidden, dim=1)
        recall_gate = torch.sigmoid(r_x + r_h)
        new_c = self.norm_cell(c + self.recall(recall_gate, past_cells))
        new_c = new_c + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)

        mi_m, mf_m, mg_m, mm_m = torch.split(self.conv_memory(memory), self.hidden, dim=1)
        new_memory = torch.sigmoid(mf_x + mf_m + FORGET_BIAS) * torch.tanh(mm_m)
        new_memory = new_memory + torch.sigmoid(mi_x + mi_m) * torch.tanh(mg_x + mg_m)

        output_gate = torch.tanh(
            o_x + o_h + self.conv_cell_out(new_c) + self.conv_memory_out(new_memory)
        )
        fused = self.fuse(torch.cat([new_c, new_memory], dim=1))
        new_h = torch.tanh(fused) * torch.sigmoid(output_gate)
        return new_h, new_c, new_memory


class E3DCarry(NamedTuple):
    recent_inputs: list[Tensor]  # the window_length - 1 inputs before the current one
    hidden: list[Tensor]
    cells: list[Tensor]
    past_cells: list[Tensor]  # per layer, every earlier cell state along the window axis
    memory: Tensor


@BACKBONES.register("e3d_lstm")
class E3DLSTM(StepwiseBackbone):
    description = "E3D-LSTM (Wang et al., 2019): 3D-conv LSTM with eidetic self-attention memory"
    config_class = E3DLSTMConfig
    config: E3DLSTMConfig

    def __init__(self, config: E3DLSTMConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        self.window = config.window_length
        height, width = geometry.height // config.patch_size, geometry.width // config.patch_size
        self.cells = nn.ModuleList(
            EideticCell(
                self.patch_channels if i == 0 else config.num_hidden[i - 1],
                hidden,
                self.window,
                height,
                width,
                config,
            )
            for i, hidden in enumerate(config.num_hidden)
        )
        self.head = nn.Conv3d(
            config.num_hidden[-1],
            self.patch_channels,
            kernel_size=(self.window, 1, 1),
            stride=(self.window, 1, 1),
            bias=False,
        )

    def init_carry(self, frame: Tensor) -> E3DCarry:
        batch, _, height, width = frame.shape
        zeros = [
            frame.new_zeros(batch, cell.hidden, self.window, height, width) for cell in self.cells
        ]
        empty = [z[:, :, :0] for z in zeros]
        recent = [torch.zeros_like(frame)] * (self.window - 1)
        return E3DCarry(recent, zeros, zeros, empty, zeros[0])

    def step(self, frame: Tensor, carry: E3DCarry) -> StepResult:
        x = torch.stack([*carry.recent_inputs, frame], dim=2)
        memory = carry.memory
        hidden, cells, past_cells = [], [], []
        for i, cell in enumerate(self.cells):
            history = torch.cat([carry.past_cells[i], carry.cells[i]], dim=2)
            h, c, memory = cell(x, carry.hidden[i], carry.cells[i], memory, history)
            hidden.append(h)
            cells.append(c)
            past_cells.append(history)
            x = h
        prediction = self.head(x).squeeze(2)
        recent = [*carry.recent_inputs[1:], frame] if self.window > 1 else []
        return StepResult(
            frame=prediction, state=x, carry=E3DCarry(recent, hidden, cells, past_cells, memory)
        )

    def levels(self) -> list[tuple[str, list[str]]]:
        return levels_by_prefix(self, [*layer_levels("cells", len(self.cells)), ("head", ["head"])])
