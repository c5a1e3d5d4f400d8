"""SimVP: a recurrent-free encoder / translator / decoder (`clipwise.py`) with two translators.

- `gsta` (SimVP v2, Tan et al. 2022, "SimVP: Towards Simple yet Powerful Spatiotemporal
  Predictive Learning"): gated spatiotemporal attention blocks — a large-kernel (21x21,
  decomposed) depth-wise attention gated by a sigmoid, then a convolutional MLP, each with
  BatchNorm, layer scale and a residual.
- `incepu` (SimVP v1, Gao et al., CVPR 2022): a U-Net of grouped Inception blocks (1x1 conv,
  then summed grouped convolutions of kernels 3, 5, 7, 11, each with GroupNorm + LeakyReLU).

Both follow OpenSTL's `SimVP_Model`, so parameter counts match its model zoo.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import ClipGeometry
from seemore.backbones.clipwise import (
    ClipwiseBackbone,
    ClipwiseConfig,
    MetaTranslator,
    Translator,
    drop_path_or_identity,
)

# The 21x21 attention kernel, decomposed as in VAN / SimVP v2: a 5x5 depth-wise conv, then a
# 7x7 depth-wise conv with dilation 3.
LOCAL_KERNEL = 5
DILATED_KERNEL = 7
DILATION = 3
LAYER_SCALE_INIT = 1e-2

INCEPTION_KERNELS = (3, 5, 7, 11)
INCEPTION_GROUPS = 8

GSTA_ONLY_KEYS = ("mlp_ratio", "drop", "drop_path")


class SimVPConfig(ClipwiseConfig):
    translator: Literal["gsta", "incepu"] = "gsta"
    # gsta only: MLP width factor, dropout in the MLP, largest stochastic-depth rate.
    mlp_ratio: float = Field(8.0, ge=1.0)
    drop: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _keys_of_the_translator(self) -> SimVPConfig:
        if self.translator == "incepu":
            given = [key for key in GSTA_ONLY_KEYS if key in self.model_fields_set]
            if given:
                raise ValueError(
                    f"{given} apply to translator 'gsta' only; remove them for 'incepu'"
                )
        return self

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        problems = super().check_geometry(geometry)
        if self.translator == "incepu":
            widths = {
                "hid_T // 2": self.hid_T // 2,
                "hid_T": self.hid_T,
                "input_frames * hid_S": geometry.input_frames * self.hid_S,
            }
            for name, width in widths.items():
                if width % INCEPTION_GROUPS:
                    problems.append(
                        f"{name} = {width} is not a multiple of {INCEPTION_GROUPS}, the group "
                        f"count of the incepu translator's convolutions"
                    )
        return problems


def init_block_weights(module: nn.Module) -> None:
    """Initialisation of the translator blocks (as in the reference gSTA / VAN blocks): convs
    normal with std sqrt(2 / fan_out), linears truncated normal with std 0.02, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_out = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (fan_out // layer.groups)))
        elif isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def depthwise_large_kernel(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, LOCAL_KERNEL, padding=LOCAL_KERNEL // 2, groups=channels),
        nn.Conv2d(
            channels,
            channels,
            DILATED_KERNEL,
            padding=DILATION * (DILATED_KERNEL - 1) // 2,
            groups=channels,
            dilation=DILATION,
        ),
    )


class LargeKernelGate(nn.Module):
    """Large-kernel depth-wise conv, then a 1x1 conv to a value and a sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.spatial = depthwise_large_kernel(channels)
        self.value_gate = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.value_gate(self.spatial(x)).chunk(2, dim=1)
        return torch.sigmoid(gate) * value


class AttentionUnit(nn.Module):
    """1x1 conv, GELU, the attention core, 1x1 conv, plus a residual around the four."""

    def __init__(self, channels: int, core: nn.Module) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.act = nn.GELU()
        self.core = core
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj_out(self.core(self.act(self.proj_in(x))))


class ConvMlp(nn.Module):
    """1x1 conv up, 3x3 depth-wise conv, GELU, 1x1 conv down."""

    def __init__(self, channels: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc_in = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc_out = nn.Conv2d(hidden, channels, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.depthwise(self.fc_in(x))))
        return self.drop(self.fc_out(x))


class AttentionMlpBlock(nn.Module):
    """`x + s1 * attention(BN(x))`, then `x + s2 * mlp(BN(x))`, with learnable per-channel
    layer scales and stochastic depth. gSTA and TAU differ only in the attention core."""

    def __init__(
        self, channels: int, core: nn.Module, mlp_ratio: float, drop: float, drop_path: float
    ) -> None:
        super().__init__()
        self.norm_attention = nn.BatchNorm2d(channels)
        self.attention = AttentionUnit(channels, core)
        self.norm_mlp = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio), drop)
        self.scale_attention = nn.Parameter(torch.full((channels,), LAYER_SCALE_INIT))
        self.scale_mlp = nn.Parameter(torch.full((channels,), LAYER_SCALE_INIT))
        self.drop_path = drop_path_or_identity(drop_path)
        init_block_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        attention = self.attention(self.norm_attention(x))
        x = x + self.drop_path(self.scale_attention.view(1, -1, 1, 1) * attention)
        mlp = self.mlp(self.norm_mlp(x))
        return x + self.drop_path(self.scale_mlp.view(1, -1, 1, 1) * mlp)


class GroupedInception(nn.Module):
    """1x1 conv to `hidden`, then the sum of grouped convs of several kernel sizes."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, hidden, 1)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hidden, out_channels, k, padding=k // 2, groups=INCEPTION_GROUPS),
                nn.GroupNorm(INCEPTION_GROUPS, out_channels),
                nn.LeakyReLU(0.2),
            )
            for k in INCEPTION_KERNELS
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze(x)
        return torch.stack([branch(x) for branch in self.branches]).sum(dim=0)


class InceptionUNet(Translator):
    """`depth` Inception blocks down, `depth` up; every up block but the first also takes the
    matching down block's output (concatenated)."""

    def __init__(self, channels: int, hidden: int, depth: int) -> None:
        super().__init__()
        squeezed = hidden // 2
        self.down = nn.ModuleList(
            GroupedInception(channels if i == 0 else hidden, squeezed, hidden) for i in range(depth)
        )
        self.up = nn.ModuleList(
            GroupedInception(
                hidden if i == 0 else 2 * hidden, squeezed, channels if i == depth - 1 else hidden
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](x)
        for block, skip in zip(self.up[1:], reversed(skips[:-1]), strict=True):
            x = block(torch.cat([x, skip], dim=1))
        return x

    def level_spec(self, prefix: str) -> list[tuple[str, list[str]]]:
        return [
            (f"{prefix}.{path}{i}", [f"{prefix}.{path}.{i}"])
            for path, blocks in (("down", self.down), ("up", self.up))
            for i in range(len(blocks))
        ]


@BACKBONES.register("simvp")
class SimVP(ClipwiseBackbone):
    description = "SimVP (Gao et al., 2022): recurrent-free CNN encoder, gSTA translator, decoder"
    config_class = SimVPConfig

    def build_translator(self, config: SimVPConfig, channels: int) -> Translator:
        if config.translator == "incepu":
            return InceptionUNet(channels, config.hid_T, config.N_T)

        def gsta_block(width: int, drop_path: float) -> nn.Module:
            return AttentionMlpBlock(
                width, LargeKernelGate(width), config.mlp_ratio, config.drop, drop_path
            )

        return MetaTranslator(channels, config.hid_T, config.N_T, gsta_block, config.drop_path)
