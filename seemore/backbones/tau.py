"""TAU: Temporal Attention Unit (Tan et al., "Temporal Attention Unit: Towards Efficient
Spatiotemporal Predictive Learning", CVPR 2023), after OpenSTL's implementation.

The translator is SimVP's gSTA stack with the attention core replaced: statical attention (the
decomposed large-kernel depth-wise conv and a 1x1 conv) times dynamical attention (a
squeeze-and-excitation over channels), times the core's input.

Its differential divergence regularisation is the aux loss: for the predicted and the true
future, the differences of consecutive future frames are flattened per difference, divided by a
temperature and turned into distributions by a softmax; the loss is KL(predicted || true),
averaged over every element as OpenSTL does (so it is the per-difference KL divided by C*H*W),
times `alpha`. The true future comes from the clip given to `forward`. (OpenSTL returns 0 for
fewer than three future frames; here two suffice for one difference. It also guards the log
with an eps of 1e-12 where this uses log-softmax.)

The squeeze-and-excitation linears are initialised like the rest of the block (truncated normal,
std 0.02); in OpenSTL they keep PyTorch's default only because the block's initialiser runs
before its attention is swapped in.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.clipwise import ClipwiseBackbone, ClipwiseConfig, MetaTranslator, Translator
from seemore.backbones.simvp import AttentionMlpBlock, depthwise_large_kernel


class TAUConfig(ClipwiseConfig):
    mlp_ratio: float = Field(8.0, ge=1.0)
    drop: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    # Weight and softmax temperature of the differential divergence regularisation.
    alpha: float = Field(0.1, ge=0.0)
    temperature: float = Field(0.1, gt=0.0)


def excitation_width(channels: int) -> int:
    """Hidden width of the squeeze-and-excitation, as the reference computes it: `channels`
    divided by a reduction of `max(channels // 16, 4)` (about 16 for wide translators)."""
    return max(channels // max(channels // 16, 4), 1)


class TemporalAttentionCore(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.spatial = depthwise_large_kernel(channels)
        self.mix = nn.Conv2d(channels, channels, 1)
        width = excitation_width(channels)
        self.excite = nn.Sequential(
            nn.Linear(channels, width, bias=False),
            nn.ReLU(),
            nn.Linear(width, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        statical = self.mix(self.spatial(x))
        dynamical = self.excite(x.mean(dim=(2, 3)))[:, :, None, None]
        return dynamical * statical * x


def differential_divergence(predicted: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Mean over all elements of `p * (log p - log q)`, where p and q are softmaxes (over C*H*W)
    of consecutive-frame differences of `predicted` and `target` `[B, T, C, H, W]`, divided by
    `temperature`. Zero for fewer than two frames (no difference to compare)."""
    if predicted.shape[1] < 2:
        return predicted.new_zeros(())
    log_p = F.log_softmax(predicted.diff(dim=1).flatten(2) / temperature, dim=-1)
    log_q = F.log_softmax(target.diff(dim=1).flatten(2) / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).mean()


@BACKBONES.register("tau")
class TAU(ClipwiseBackbone):
    description = "TAU (Tan et al., 2023): SimVP with temporal attention units, divergence loss"
    config_class = TAUConfig

    def build_translator(self, config: TAUConfig, channels: int) -> Translator:
        def tau_block(width: int, drop_path: float) -> nn.Module:
            return AttentionMlpBlock(
                width, TemporalAttentionCore(width), config.mlp_ratio, config.drop, drop_path
            )

        return MetaTranslator(channels, config.hid_T, config.N_T, tau_block, config.drop_path)

    def regulariser(self, predicted: Tensor, target: Tensor) -> Tensor:
        config: TAUConfig = self.config
        if config.alpha == 0:
            return predicted.new_zeros(())
        return config.alpha * differential_divergence(predicted, target, config.temperature)
