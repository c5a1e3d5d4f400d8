"""PredRNN-V2 (Wang et al., TPAMI 2022): stacked spatiotemporal LSTM cells with memory
decoupling, as in the authors' thuml/predrnn-pytorch (`predrnn_v2`, `SpatioTemporalLSTMCell_v2`).

- Cells and memory flow are PredRNN's (predrnn.py): per layer a temporal memory C and hidden
  state H, one spatiotemporal memory M zig-zagging through the stack (so every layer has the
  same width); the ST-LSTM cell there also returns the memory increments used below.
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.predrnn import (
    SpatioTemporalLSTMCell,
    SpatiotemporalMemoryConfig,
    StackCarry,
    zero_stack_carry,
)
from seemore.backbones.stepwise import (
    StepResult,
    StepwiseBackbone,
    layer_levels,
    levels_by_prefix,
    stacked_cells,
    state_size,
)
from seemore.config import NonNegativeFloat


class PredRNNV2Config(SpatiotemporalMemoryConfig):
    """decouple_beta: weight of the memory decoupling loss."""

    decouple_beta: NonNegativeFloat = 0.1


@BACKBONES.register("predrnn_v2")
class PredRNNV2(StepwiseBackbone):
    config_class = PredRNNV2Config
    config: PredRNNV2Config

    def __init__(self, config: PredRNNV2Config, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=config.patch_size)
        height, width = state_size(config, geometry)
        self.cell_list = stacked_cells(
            SpatioTemporalLSTMCell, self.patch_channels, config, height, width
        )
        hidden = config.num_hidden[-1]
        self.conv_last = nn.Conv2d(hidden, self.patch_channels, kernel_size=1, bias=False)
        self.adapter = nn.Conv2d(hidden, hidden, kernel_size=1, bias=False)

    def init_carry(self, frame: Tensor) -> StackCarry:
        return zero_stack_carry(frame, self.config.num_hidden)

    def step(self, frame: Tensor, carry: StackCarry) -> StepResult:
        hidden, cell, memory = list(carry.hidden), list(carry.cell), carry.memory
        decoupling = []
        layer_input = frame
        for i, layer in enumerate(self.cell_list):
            update = layer(layer_input, hidden[i], cell[i], memory)
            hidden[i], cell[i], memory = update.hidden, update.cell, update.memory
            layer_input = hidden[i]
            decoupling.append(self._decoupling(update.delta_cell, update.delta_memory))
        aux = self.config.decouple_beta * torch.stack(decoupling).mean()
        return StepResult(
            frame=self.conv_last(hidden[-1]),
            state=hidden[-1],
            carry=StackCarry(hidden, cell, memory),
            aux=aux,
        )

    def _decoupling(self, delta_c: Tensor, delta_m: Tensor) -> Tensor:
        """Mean |cos| over batch and channels between the adapted increments, each channel's
        map taken as one vector."""
        adapted_c = self.adapter(delta_c).flatten(2)
        adapted_m = self.adapter(delta_m).flatten(2)
        return F.cosine_similarity(adapted_c, adapted_m, dim=2).abs().mean()

    def levels(self) -> list[tuple[str, list[str]]]:
        return levels_by_prefix(
            self,
            [*layer_levels("cell_list", len(self.cell_list)), ("head", ["conv_last", "adapter"])],
        )
