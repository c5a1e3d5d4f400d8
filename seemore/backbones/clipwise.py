"""Shared frame of clip-wise (recurrent-free) backbones: spatial encoder, temporal translator,
spatial decoder, as in SimVP and TAU (Tan et al., CVPR 2023; the OpenSTL implementation).

Every input frame is encoded on its own to a latent `[hid_S, H/s, W/s]` (`s = 2**(N_S//2)`);
the translator sees the `input_frames` latents stacked along channels `[T_in*hid_S, H/s, W/s]`
and returns as many latents, one per future frame; the decoder maps each back to a frame, with
a skip from the encoder's first (full-resolution) layer of the input frame at the same position.

One pass therefore predicts `input_frames` frames. A longer horizon — the training horizon
where `output_frames > input_frames` (KTH 10->20), or a longer test horizon — is rolled out
autoregressively: the next pass takes the previous pass's predicted frames as its input, and the
last pass is cut to the horizon. This is what OpenSTL's SimVP method does.

What SeeMore distils lives in one latent space: `Output.encoded` holds the encoder's latents of
the observed input frames and `Output.states` the translator's latent behind each predicted
frame, both `[hid_S, H/s, W/s]` per frame.

A backbone subclasses `ClipwiseBackbone`, builds its translator in `build_translator` and may
override `regulariser` (TAU's differential divergence).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from seemore.backbones.base import (
    Backbone,
    BackboneConfig,
    BackboneKind,
    ClipGeometry,
    Output,
)
from seemore.backbones.fields import OddKernel
from seemore.backbones.patch import frame_divisor_problems
from seemore.backbones.stepwise import levels_by_prefix
from seemore.schema import PositiveInt

# ConvSC layers normalise with two groups, as in the reference encoder and decoder.
SPATIAL_NORM_GROUPS = 2


class ClipwiseConfig(BackboneConfig):
    """Encoder / translator / decoder sizes, named as in OpenSTL's configs.

    hid_S: latent channels per frame; N_S: encoder (and decoder) layers, every second one
    halving (doubling) the frame size; hid_T: translator width; N_T: translator blocks.
    """

    hid_S: PositiveInt
    hid_T: PositiveInt
    N_S: PositiveInt
    N_T: int = Field(ge=2)
    spatio_kernel_enc: OddKernel = 3
    spatio_kernel_dec: OddKernel = 3

    @field_validator("hid_S")
    @classmethod
    def _even_latent(cls, channels: int) -> int:
        if channels % SPATIAL_NORM_GROUPS:
            raise ValueError(
                f"{channels} is not a multiple of {SPATIAL_NORM_GROUPS}; the encoder normalises "
                f"in {SPATIAL_NORM_GROUPS} groups"
            )
        return channels

    @property
    def downsampling(self) -> int:
        return 2 ** (self.N_S // 2)

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        setting = f"N_S = {self.N_S} (a downsampling by 2**(N_S//2) = {self.downsampling})"
        return frame_divisor_problems(setting, self.downsampling, geometry)


def _resamples(layers: int) -> list[bool]:
    """Which of `layers` encoder layers halve the frame: every second one, starting with the
    second (the first keeps full resolution for the decoder's skip)."""
    return [i % 2 == 1 for i in range(layers)]


class SpatialConv(nn.Module):
    """Conv + GroupNorm + SiLU; `down` uses stride 2, `up` a 4x wider conv + PixelShuffle(2)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, down: bool = False, up: bool = False
    ) -> None:
        super().__init__()
        stride = 2 if down else 1
        padding = (kernel - stride + 1) // 2
        if up:
            self.conv: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels * 4, kernel, padding=padding),
                nn.PixelShuffle(2),
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding)
        self.norm = nn.GroupNorm(SPATIAL_NORM_GROUPS, out_channels)
        self.act = nn.SiLU()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class SpatialEncoder(nn.Module):
    def __init__(self, channels: int, hidden: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SpatialConv(channels if i == 0 else hidden, hidden, kernel, down=down)
            for i, down in enumerate(_resamples(layers))
        )

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """`[N, C, H, W]` -> (latent `[N, hid_S, H/s, W/s]`, skip `[N, hid_S, H, W]` of the
        first layer)."""
        skip = self.layers[0](frames)
        latent = skip
        for layer in self.layers[1:]:
            latent = layer(latent)
        return latent, skip


class SpatialDecoder(nn.Module):
    """Mirror of the encoder; the last layer adds the encoder's skip. The 1x1 readout to frame
    channels is the backbone's `head`, a level of its own."""

    def __init__(self, hidden: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SpatialConv(hidden, hidden, kernel, up=up) for up in reversed(_resamples(layers))
        )

    def forward(self, latent: Tensor, skip: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            latent = layer(latent)
        return self.layers[-1](latent + skip)


class TranslatorBlock(nn.Module):
    """One translator block at its input width, then a 1x1 conv where the width changes."""

    def __init__(self, block: nn.Module, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = block
        self.reduction = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(x)
        return x if self.reduction is None else self.reduction(x)


class Translator(nn.Module):
    """Maps the stacked input latents `[B, T_in*hid_S, h, w]` to the stacked future latents of
    the same shape. `level_spec` names its blocks shallow to deep for `levels()`."""

    def level_spec(self, prefix: str) -> list[tuple[str, list[str]]]:
        raise NotImplementedError


class MetaTranslator(Translator):
    """A stack of `depth` MetaFormer-style blocks (gSTA, TAU). The first works at the stacked
    width and projects to `hidden`, the last works at `hidden` and projects back; stochastic
    depth rises linearly from 0 to `drop_path`."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        depth: int,
        make_block: Callable[[int, float], nn.Module],
        drop_path: float,
    ) -> None:
        super().__init__()
        # OpenSTL starts this rule at 1e-2 (so drop_path = 0 still drops early blocks); the
        # usual stochastic-depth rule starts at 0.
        rates = [drop_path * i / (depth - 1) for i in range(depth)]
        widths = [channels] + [hidden] * (depth - 1) + [channels]
        self.blocks = nn.ModuleList(
            TranslatorBlock(make_block(widths[i], rates[i]), widths[i], widths[i + 1])
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def level_spec(self, prefix: str) -> list[tuple[str, list[str]]]:
        return [(f"{prefix}.block{i}", [f"{prefix}.blocks.{i}"]) for i in range(len(self.blocks))]


def drop_path_or_identity(rate: float) -> nn.Module:
    # Imported here: torchvision.ops imports torch._dynamo (~1.7 s), which every `seemore`
    # command would pay.
    from torchvision.ops import StochasticDepth

    return StochasticDepth(rate, mode="row") if rate > 0 else nn.Identity()


class ClipwiseBackbone(Backbone):
    kind: ClassVar[BackboneKind] = BackboneKind.CLIP_WISE

    def __init__(self, config: ClipwiseConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry)
        problems = config.check_geometry(geometry)
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))
        self.encoder = SpatialEncoder(
            geometry.channels, config.hid_S, config.N_S, config.spatio_kernel_enc
        )
        self.translator = self.build_translator(config, geometry.input_frames * config.hid_S)
        self.decoder = SpatialDecoder(config.hid_S, config.N_S, config.spatio_kernel_dec)
        self.head = nn.Conv2d(config.hid_S, geometry.channels, 1)

    def build_translator(self, config: ClipwiseConfig, channels: int) -> Translator:
        """The temporal module over `channels = input_frames * hid_S` stacked latent channels."""
        raise NotImplementedError

    def regulariser(self, predicted: Tensor, target: Tensor) -> Tensor:
        """The backbone's own loss term (weighted) on the predicted and true future frames."""
        return predicted.new_zeros(())

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        """`sampling_mask` is ignored: a clip-wise backbone never sees future frames as input.

        The true future `clip[:, input_frames:]` is used only by `regulariser` (the aux loss).
        """
        self._check_clip(clip)
        input_frames = self.geometry.input_frames
        horizon = clip.shape[1] - input_frames
        history = clip[:, :input_frames]
        frames, states = [], []
        encoded: Tensor | None = None
        for _ in range(math.ceil(horizon / input_frames)):
            predicted, latents, observed = self._translate(history)
            if encoded is None:
                encoded = observed
            frames.append(predicted)
            states.append(latents)
            history = predicted
        predicted_frames = torch.cat(frames, dim=1)[:, :horizon]
        return Output(
            frames=predicted_frames,
            states=torch.cat(states, dim=1)[:, :horizon],
            aux_loss=self.regulariser(predicted_frames, clip[:, input_frames:]),
            encoded=encoded,
        )

    def _translate(self, history: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One pass over `input_frames` frames: (next frames, their latents, input latents)."""
        batch, time, channels, height, width = history.shape
        latent, skip = self.encoder(history.reshape(batch * time, channels, height, width))
        hidden, low_h, low_w = latent.shape[1:]
        future = self.translator(latent.reshape(batch, time * hidden, low_h, low_w))
        future = future.reshape(batch * time, hidden, low_h, low_w)
        frames = self.head(self.decoder(future, skip))
        return (
            frames.reshape(batch, time, channels, height, width),
            future.reshape(batch, time, hidden, low_h, low_w),
            latent.reshape(batch, time, hidden, low_h, low_w),
        )

    def _check_clip(self, clip: Tensor) -> None:
        g = self.geometry
        if clip.dim() != 5 or tuple(clip.shape[2:]) != (g.channels, g.height, g.width):
            raise ValueError(
                f"{type(self).__name__}: clip of shape {tuple(clip.shape)}; expected "
                f"[B, T, {g.channels}, {g.height}, {g.width}]"
            )
        if clip.shape[1] <= g.input_frames:
            raise ValueError(
                f"{type(self).__name__}: a clip of {clip.shape[1]} frames has nothing to predict "
                f"after its {g.input_frames} input frames"
            )

    def levels(self) -> list[tuple[str, list[str]]]:
        return levels_by_prefix(
            self,
            [
                ("encoder", ["encoder"]),
                *self.translator.level_spec("translator"),
                ("decoder", ["decoder"]),
                ("head", ["head"]),
            ],
        )
