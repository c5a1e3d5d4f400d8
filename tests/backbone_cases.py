"""Every registered backbone at a tiny configuration, as data in one place: the backbone
contract (test_backbone_contract.py) runs on all cases, and the backbone-specific test files
build their networks from the same cases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seemore.backbones import BackboneKind, ClipGeometry, build_backbone
from seemore.backbones.base import Backbone, BackboneConfig
from seemore.backbones.convlstm import ConvLSTMConfig
from seemore.backbones.e3d_lstm import E3DLSTMConfig
from seemore.backbones.mau import MAUConfig
from seemore.backbones.mim import MIMConfig
from seemore.backbones.patch import from_patches
from seemore.backbones.phydnet import PhyDNetConfig
from seemore.backbones.predrnn import PredRNNConfig
from seemore.backbones.predrnn_pp import PredRNNppConfig
from seemore.backbones.predrnn_v2 import PredRNNV2Config
from seemore.backbones.reference import reference_config
from seemore.backbones.simvp import SimVPConfig
from seemore.backbones.tau import TAUConfig

GEOMETRY = ClipGeometry(channels=2, height=8, width=12, input_frames=3, output_frames=3)

# (network, clip, states) -> the frames `[B, P, C, H, W]` the network's output head makes of
# `states`, where `clip` is what the network was run on.
Readout = Callable[[Backbone, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Case:
    """A backbone at a tiny configuration, and what the contract expects of it there."""

    backbone: str  # registry name
    config: BackboneConfig
    kind: BackboneKind
    state_shape: tuple[int, ...]  # one frame's entry of `Output.states`
    levels: tuple[str, ...]  # level names, shallow to deep
    readout: Readout
    regularised: bool = False  # whether the backbone has an aux loss (positive on any clip)


def _per_frame_patches(
    network: Backbone, states: Tensor, head: Callable[[Tensor], Tensor]
) -> Tensor:
    """A step-wise backbone's `head` on every frame's state, from patch space to frames."""
    patches = head(states.flatten(0, 1)).unflatten(0, states.shape[:2])
    return from_patches(patches, network.patch_size)


def read_conv_last(network: Backbone, clip: Tensor, states: Tensor) -> Tensor:
    """The PredRNN family and ConvLSTM: a 1x1 conv (`conv_last`) of the top hidden state."""
    return _per_frame_patches(network, states, network.conv_last)


def read_e3d_lstm(network: Backbone, clip: Tensor, states: Tensor) -> Tensor:
    """A 3D conv over the window of the top hidden state."""
    return _per_frame_patches(network, states, lambda state: network.head(state).squeeze(2))


def read_phydnet(network: Backbone, clip: Tensor, states: Tensor) -> Tensor:
    """The state holds PhyCell's and the ConvLSTM's latents side by side; each branch decodes
    its own, the sum goes through the shared decoder."""

    def head(state: Tensor) -> Tensor:
        latent = state.shape[1] // 2
        summed = network.decoder_physics(state[:, :latent]) + network.decoder_residual(
            state[:, latent:]
        )
        return torch.sigmoid(network.head(network.decoder(summed)))

    return _per_frame_patches(network, states, head)


def read_mau(network: Backbone, clip: Tensor, states: Tensor) -> Tensor:
    """The top unit's spatial state through the upsampling decoder (no skips in `normal`
    model mode) and the 1x1 head."""

    def head(state: Tensor) -> Tensor:
        for stage in network.decoder:
            state = stage(state)
        return network.head(state)

    return _per_frame_patches(network, states, head)


def read_clipwise(network: Backbone, clip: Tensor, states: Tensor) -> Tensor:
    """The decoder with the skip of the encoder's first layer on the input frames, then the
    head; for one pass (`states` of exactly `input_frames` predictions)."""
    batch = states.shape[0]
    _, skip = network.encoder(clip[:, : network.geometry.input_frames].flatten(0, 1))
    frames = network.head(network.decoder(states.flatten(0, 1), skip))
    return frames.unflatten(0, (batch, -1))


_STACK = ("layer0", "layer1", "head")
_DEEP_STACK = ("layer0", "layer1", "layer2", "head")
# Three layers: MIM-N of layer 2 reads MIM-N of layer 1; PredRNN++ has a layer past its GHU.
_DEEP = {"num_hidden": [4, 4, 4], "filter_size": 3, "patch_size": 2}


def _clipwise_levels(translator: list[str]) -> tuple[str, ...]:
    return ("encoder", *(f"translator.{block}" for block in translator), "decoder", "head")


CASES: dict[str, Case] = {
    "convlstm": Case(
        "convlstm",
        ConvLSTMConfig(num_hidden=[3, 4], filter_size=3, patch_size=2),
        BackboneKind.STEP_WISE,
        (4, 4, 6),
        _STACK,
        read_conv_last,
    ),
    "predrnn": Case(
        "predrnn",
        PredRNNConfig(**_DEEP),
        BackboneKind.STEP_WISE,
        (4, 4, 6),
        _DEEP_STACK,
        read_conv_last,
    ),
    "predrnn_pp": Case(
        "predrnn_pp",
        PredRNNppConfig(**_DEEP),
        BackboneKind.STEP_WISE,
        (4, 4, 6),
        _DEEP_STACK,
        read_conv_last,
    ),
    "predrnn_v2": Case(
        "predrnn_v2",
        PredRNNV2Config(num_hidden=[4, 4], filter_size=3, patch_size=2),
        BackboneKind.STEP_WISE,
        (4, 4, 6),
        _STACK,
        read_conv_last,
        regularised=True,
    ),
    "mim": Case(
        "mim",
        MIMConfig(**_DEEP),
        BackboneKind.STEP_WISE,
        (4, 4, 6),
        _DEEP_STACK,
        read_conv_last,
    ),
    "e3d_lstm": Case(
        "e3d_lstm",
        E3DLSTMConfig(num_hidden=[4, 4], filter_size=3, patch_size=2),
        BackboneKind.STEP_WISE,
        (4, 2, 4, 6),  # the top hidden state over the 2-frame window
        _STACK,
        read_e3d_lstm,
    ),
    # Latent 2 x 32 channels on a 2x3 grid (two channels per GroupNorm group, so no bias is
    # normalised away); 9 PhyCell filters for a 3x3 kernel.
    "phydnet": Case(
        "phydnet",
        PhyDNetConfig(phycell_kernel=3, convlstm_hidden=[8, 64]),
        BackboneKind.STEP_WISE,
        (128, 2, 3),  # PhyCell's and the ConvLSTM's latents side by side
        (
            "encoder",
            "branch_encoders",
            "phycell",
            "convlstm0",
            "convlstm1",
            "branch_decoders",
            "decoder",
            "head",
        ),
        read_phydnet,
        regularised=True,
    ),
    "mau": Case(
        "mau",
        MAUConfig(num_hidden=[4, 4], filter_size=3, patch_size=1, sr_size=2, tau=2),
        BackboneKind.STEP_WISE,
        (4, 4, 6),  # the top unit's spatial state
        ("encoder", "layer0", "layer1", "decoder", "head"),
        read_mau,
    ),
    "gsta": Case(
        "simvp",
        SimVPConfig(hid_S=4, hid_T=8, N_S=4, N_T=3, mlp_ratio=2.0, drop_path=0.1),
        BackboneKind.CLIP_WISE,
        (4, 2, 3),
        _clipwise_levels(["block0", "block1", "block2"]),
        read_clipwise,
    ),
    "incepu": Case(
        "simvp",
        SimVPConfig(translator="incepu", hid_S=8, hid_T=16, N_S=2, N_T=3),
        BackboneKind.CLIP_WISE,
        (8, 4, 6),
        _clipwise_levels(["down0", "down1", "down2", "up0", "up1", "up2"]),
        read_clipwise,
    ),
    # hid_S = 6 gives the first translator block's squeeze-and-excitation 18 // 4 = 4 hidden
    # units; with hid_S = 4 its 3 (ReLU, no bias) were all dead on this clip for the backward
    # network of seed 1, so a BDN step could not move them.
    "tau": Case(
        "tau",
        TAUConfig(hid_S=6, hid_T=8, N_S=4, N_T=2, mlp_ratio=2.0, drop_path=0.1),
        BackboneKind.CLIP_WISE,
        (6, 2, 3),
        _clipwise_levels(["block0", "block1"]),
        read_clipwise,
        regularised=True,
    ),
}


def make(
    name: str, seed: int = 0, geometry: ClipGeometry = GEOMETRY, **changes: object
) -> Backbone:
    """The network of case `name`, initialised from `seed`; `changes` update its config."""
    case = CASES[name]
    torch.manual_seed(seed)
    return build_backbone(case.backbone, case.config.model_copy(update=changes), geometry)


def clip(frames: int = 6, batch: int = 2, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 2, 8, 12, generator=generator)


def mask(seed: int = 0) -> Tensor:
    """A scheduled-sampling mask `[B, T-2]` for `clip()`."""
    return torch.rand(2, 4, generator=torch.Generator().manual_seed(seed))


def on_meta(backbone: str, config: BackboneConfig, geometry: ClipGeometry) -> Backbone:
    """Sizes and FLOPs only: built on the meta device, no memory and no initialisation cost."""
    with torch.device("meta"):
        return build_backbone(backbone, config, geometry)


def reference_network(backbone: str, dataset: str) -> Backbone:
    return on_meta(backbone, *reference_config(backbone, dataset))
