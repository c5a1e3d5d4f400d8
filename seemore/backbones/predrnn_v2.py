"""PredRNN-V2 (Wang et al., TPAMI 2022): stacked spatiotemporal LSTM cells with memory
decoupling, as in the authors' thuml/predrnn-pytorch (`predrnn_v2`, `SpatioTemporalLSTMCell_v2`).

The network is PredRNN's (predrnn.py, subclassed here): per layer a temporal memory C and
hidden state H, one spatiotemporal memory M zig-zagging through the stack (so every layer has
the same width), a 1x1 conv of the top hidden state as output, in patch space. V2 adds:
- Decoupling loss: a shared 1x1 `adapter` maps the increments dC = i*g and dM = i'*g' of each
  layer (the ST-LSTM cell returns them); per channel, the absolute cosine similarity of the two
  over space, averaged over batch, channels, layers and steps, times `decouple_beta`.

Parameter names equal the reference implementation's (`cell_list.*`, `conv_last`, `adapter`),
so its state dicts load. `states[:, i]` is the top layer's hidden state `[num_hidden, H/p, W/p]`
when frame i+1 is predicted (what SeeMore's reference code distils).

Levels (`adapter_level`): one per ST-LSTM layer, bottom to top, then
- `head` (seemore's): the 1x1 output conv together with the adapter: both are projections
  outside the recurrence reading the cells' outputs, and the adapter only shapes the
  decoupling regulariser, so it needs no rate of its own;
- `own` (the authors'): `head` = the output conv, and `adapter` a level of its own that LMA
  rates outside the ordering chain (six rates for four layers, as in their meta-learner).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.predrnn import CellUpdate, PredRNN, PredRNNConfig
from seemore.backbones.stepwise import layer_levels, levels_by_prefix
from seemore.schema import NonNegativeFloat


class PredRNNV2Config(PredRNNConfig):
    """decouple_beta: weight of the memory decoupling loss."""

    decouple_beta: NonNegativeFloat = 0.1
    # Where LMA puts the adapter: in the head's level, or its own level outside the ordering.
    adapter_level: Literal["head", "own"] = "head"


@BACKBONES.register("predrnn_v2")
class PredRNNV2(PredRNN):
    """PredRNN with the decoupling loss as each step's regulariser and the `adapter` it needs."""

    description = "PredRNN-V2 (Wang et al., 2022): PredRNN + decoupling loss, reverse sampling"
    config_class = PredRNNV2Config
    config: PredRNNV2Config
    head_modules: ClassVar[tuple[str, ...]] = ("conv_last", "adapter")

    def __init__(self, config: PredRNNV2Config, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry)
        hidden = config.num_hidden[-1]
        self.adapter = nn.Conv2d(hidden, hidden, kernel_size=1, bias=False)

    def levels(self) -> list[tuple[str, list[str]]]:
        if self.config.adapter_level == "head":
            return super().levels()
        return levels_by_prefix(
            self,
            [
                *layer_levels("cell_list", len(self.cell_list)),
                ("head", ["conv_last"]),
                ("adapter", ["adapter"]),
            ],
        )

    def unchained_levels(self) -> set[str]:
        return {"adapter"} if self.config.adapter_level == "own" else set()

    def step_aux(self, updates: list[CellUpdate]) -> Tensor:
        decoupling = [self._decoupling(u.delta_cell, u.delta_memory) for u in updates]
        return self.config.decouple_beta * torch.stack(decoupling).mean()

    def _decoupling(self, delta_c: Tensor, delta_m: Tensor) -> Tensor:
        """Mean |cos| over batch and channels between the adapted increments, each channel's
        map taken as one vector."""
        adapted_c = self.adapter(delta_c).flatten(2)
        adapted_m = self.adapter(delta_m).flatten(2)
        return F.cosine_similarity(adapted_c, adapted_m, dim=2).abs().mean()
