"""PhyDNet (Le Guen & Thome, "Disentangling Physical Dynamics from Unknown Factors for
Unsupervised Video Prediction", CVPR 2020).

A convolutional encoder maps each frame to a latent grid; two branches run on it: PhyCell, a
latent PDE step `h + F(h)` followed by a learned Kalman-like correction toward the observation,
and a ConvLSTM stack for what physics does not explain. Their decoded latents are summed and
decoded to the next frame. The filters of `F` are tied to finite-difference operators by the
moment loss: the `(p, q)` moment of filter `p*k + q` should be 1 and every other moment 0, so
filter `n` approximates the derivative of order `(p, q)`.

Sizes follow OpenSTL's PhyDNet (32/64-channel encoder with GroupNorm(16), one PhyCell with a
7x7 kernel, ConvLSTM widths 128-128-64), so parameter counts match it.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from seemore.backbones import BACKBONES
from seemore.backbones.base import BackboneConfig, ClipGeometry, Output
from seemore.backbones.fields import OddKernel
from seemore.backbones.patch import frame_divisor_problems
from seemore.backbones.stepwise import StepResult, StepwiseBackbone, levels_by_prefix
from seemore.schema import NonNegativeFloat, PositiveInt

NORM_GROUPS = 16  # GroupNorm groups of the encoder/decoder blocks, as in the reference
LEAKY_SLOPE = 0.2


class PhyDNetConfig(BackboneConfig):
    # Total spatial downsampling of the encoder (OpenSTL calls it patch_size).
    downsample: Literal[2, 4] = 4
    # Encoder width; the latent grid has twice as many channels.
    encoder_channels: PositiveInt = 32
    # PhyCell kernel size k: F has k*k filters, one per finite-difference moment.
    phycell_kernel: OddKernel = 7
    # ConvLSTM widths; the last must equal the latent width (it is decoded like PhyCell's).
    convlstm_hidden: list[PositiveInt] = Field(default=[128, 128, 64], min_length=1)
    convlstm_kernel: OddKernel = 3
    # 1 = the reference's balance: it adds the moment loss, summed over input channels, to
    # the frame MSE summed over steps; ours averages frames, so the moment term is divided
    # by the number of steps.
    moment_weight: NonNegativeFloat = 1.0

    @model_validator(mode="after")
    def _consistent(self) -> PhyDNetConfig:
        latent = 2 * self.encoder_channels
        if self.encoder_channels % NORM_GROUPS:
            raise ValueError(
                f"encoder_channels = {self.encoder_channels}: expected a multiple of "
                f"{NORM_GROUPS} (GroupNorm groups)"
            )
        if self.convlstm_hidden[-1] != latent:
            raise ValueError(
                f"convlstm_hidden[-1] = {self.convlstm_hidden[-1]}: expected the latent width "
                f"2 * encoder_channels = {latent}"
            )
        return self

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        return frame_divisor_problems(f"downsample = {self.downsample}", self.downsample, geometry)


def conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.GroupNorm(NORM_GROUPS, cout),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


def upconv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=1, output_padding=stride - 1),
        nn.GroupNorm(NORM_GROUPS, cout),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


def moment_matrix(kernel_size: int) -> Tensor:
    """`M[i, j] = x_j**i / i!` with offsets `x_j` centred on the kernel: `M K M^T` gives the
    moments of kernel `K` (a Taylor expansion of the convolution)."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) // 2
    orders = torch.arange(kernel_size)
    factorials = torch.tensor([math.factorial(i) for i in range(kernel_size)], dtype=torch.float64)
    return offsets[None, :] ** orders[:, None] / factorials[:, None]


def moment_targets(kernel_size: int) -> Tensor:
    """`[k*k, k, k]`: filter `p*k + q` should have moment `(p, q)` equal to 1, all others 0."""
    count = kernel_size * kernel_size
    return torch.eye(count, dtype=torch.float64).reshape(count, kernel_size, kernel_size)


class PhyCell(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        filters = kernel_size * kernel_size
        self.physics = nn.Sequential(
            nn.Conv2d(channels, filters, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(kernel_size, filters),
            nn.Conv2d(filters, channels, 1),
        )
        self.correction_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.register_buffer("moments", moment_matrix(kernel_size), persistent=False)
        self.register_buffer("targets", moment_targets(kernel_size), persistent=False)

    @property
    def filters(self) -> Tensor:
        """The moment-constrained filters `[k*k, channels, k, k]`."""
        return self.physics[0].weight

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        predicted = h + self.physics(h)
        gain = torch.sigmoid(self.correction_gate(torch.cat([x, h], dim=1)))
        return predicted + gain * (x - predicted)

    def moment_loss(self) -> Tensor:
        """Squared moment error, averaged over the filters' moments and summed over input
        channels, as the reference does. Computed in float64 like the reference: autocast
        leaves float64 alone, so the constraint keeps its precision under bf16 training."""
        m = self.moments.to(torch.float64)
        moments = torch.einsum("pi,ncij,qj->ncpq", m, self.filters.to(torch.float64), m)
        error = (moments - self.targets.to(torch.float64)[:, None]) ** 2
        return error.mean(dim=(0, 2, 3)).sum().to(self.filters.dtype)


class ConvLSTMCell(nn.Module):
    def __init__(self, in_channels: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(
            in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class PhyDNetCarry(NamedTuple):
    physics: Tensor
    hidden: list[Tensor]
    cells: list[Tensor]


@BACKBONES.register("phydnet")
class PhyDNet(StepwiseBackbone):
    description = "PhyDNet (Le Guen & Thome, 2020): PDE-constrained PhyCell beside a ConvLSTM"
    config_class = PhyDNetConfig
    config: PhyDNetConfig

    def __init__(self, config: PhyDNetConfig, geometry: ClipGeometry) -> None:
        super().__init__(config, geometry, patch_size=1)
        nf, channels = config.encoder_channels, geometry.channels
        latent = 2 * nf
        last_stride = config.downsample // 2
        self.encoder = nn.Sequential(
            conv_block(channels, nf, 2), conv_block(nf, nf, 1), conv_block(nf, latent, last_stride)
        )
        self.encoder_physics = nn.Sequential(
            conv_block(latent, latent, 1), conv_block(latent, latent, 1)
        )
        self.encoder_residual = nn.Sequential(
            conv_block(latent, latent, 1), conv_block(latent, latent, 1)
        )
        self.phycell = PhyCell(latent, config.phycell_kernel)
        self.convlstm = nn.ModuleList(
            ConvLSTMCell(
                latent if i == 0 else config.convlstm_hidden[i - 1], hidden, config.convlstm_kernel
            )
            for i, hidden in enumerate(config.convlstm_hidden)
        )
        self.decoder_physics = nn.Sequential(
            upconv_block(latent, latent, 1), upconv_block(latent, latent, 1)
        )
        self.decoder_residual = nn.Sequential(
            upconv_block(latent, latent, 1), upconv_block(latent, latent, 1)
        )
        self.decoder = nn.Sequential(upconv_block(latent, nf, 2), upconv_block(nf, nf, 1))
        self.head = nn.ConvTranspose2d(
            nf, channels, 3, stride=last_stride, padding=1, output_padding=last_stride - 1
        )

    def init_carry(self, frame: Tensor) -> PhyDNetCarry:
        batch = frame.shape[0]
        height = self.geometry.height // self.config.downsample
        width = self.geometry.width // self.config.downsample
        latent = 2 * self.config.encoder_channels
        zeros = [frame.new_zeros(batch, cell.hidden, height, width) for cell in self.convlstm]
        return PhyDNetCarry(frame.new_zeros(batch, latent, height, width), zeros, zeros)

    def step(self, frame: Tensor, carry: PhyDNetCarry) -> StepResult:
        features = self.encoder(frame)
        physics = self.phycell(self.encoder_physics(features), carry.physics)
        x = self.encoder_residual(features)
        hidden, cells = [], []
        for i, cell in enumerate(self.convlstm):
            h, c = cell(x, carry.hidden[i], carry.cells[i])
            hidden.append(h)
            cells.append(c)
            x = h
        decoded = self.decoder_physics(physics) + self.decoder_residual(x)
        prediction = torch.sigmoid(self.head(self.decoder(decoded)))
        return StepResult(
            frame=prediction,
            state=torch.cat([physics, x], dim=1),
            carry=PhyDNetCarry(physics, hidden, cells),
        )

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        out = super().forward(clip, sampling_mask)
        steps = clip.shape[1] - 1
        moment = self.config.moment_weight * self.phycell.moment_loss() / steps
        return out._replace(aux_loss=out.aux_loss + moment)

    def levels(self) -> list[tuple[str, list[str]]]:
        convlstm = [(f"convlstm{i}", [f"convlstm.{i}"]) for i in range(len(self.convlstm))]
        return levels_by_prefix(
            self,
            [
                ("encoder", ["encoder"]),
                ("branch_encoders", ["encoder_physics", "encoder_residual"]),
                ("phycell", ["phycell"]),
                *convlstm,
                ("branch_decoders", ["decoder_physics", "decoder_residual"]),
                ("decoder", ["decoder"]),
                ("head", ["head"]),
            ],
        )
