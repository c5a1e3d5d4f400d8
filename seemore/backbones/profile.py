"""Size and cost of a backbone: parameter count, FLOPs of one inference forward, and the
parameters of each level (the groups LMA gives one rate each)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

from seemore.backbones.base import Backbone, ClipGeometry


def _conv_backward_flops(*args: Any, out_shape: Any) -> int:
    """torch's count of a convolution's backward with the weight gradient's term divided by
    the groups: torch 2.14 counts that term as if the convolution were dense, so a depthwise
    convolution's weight gradient came out `channels` times too large."""
    *leading, groups, output_mask = args
    grad_input = conv_backward_flop(*leading, groups, [output_mask[0], False], out_val=out_shape)
    grad_weight = conv_backward_flop(*leading, groups, [False, output_mask[1]], out_val=out_shape)
    return grad_input + grad_weight // groups


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter (convolutions and matrix products; a multiply-add counts 2), with
    grouped convolutions' backward counted right."""
    return FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops},
    )


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (frozen ones included, as published counts do)."""
    return sum(p.numel() for p in module.parameters())


def level_sizes(network: Backbone) -> list[tuple[str, int]]:
    """`(level name, parameter elements)` of each level, shallow to deep."""
    parameters = dict(network.named_parameters())
    return [
        (level, sum(parameters[name].numel() for name in names))
        for level, names in network.levels()
    ]


def zero_clip(geometry: ClipGeometry, batch_size: int, like: Tensor) -> Tensor:
    """A zero clip `[B, input + output frames, C, H, W]` on `like`'s device and dtype."""
    g = geometry
    return torch.zeros(
        batch_size,
        g.total_frames,
        g.channels,
        g.height,
        g.width,
        device=like.device,
        dtype=like.dtype,
    )


def count_flops(backbone: Backbone, batch_size: int = 1) -> int:
    """FLOPs (a multiply-add counts 2) of one inference forward on a zero clip of the
    backbone's geometry (`input_frames + output_frames` frames, batch `batch_size`), as
    torch's FlopCounterMode counts them: convolutions and matrix products, not elementwise ops.
    """
    clip = zero_clip(backbone.geometry, batch_size, next(backbone.parameters()))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            backbone(clip, None)
    finally:
        backbone.train(was_training)
    return int(counter.get_total_flops())


def build_on_meta(
    backbone_class: type[Backbone], config: object, geometry: ClipGeometry
) -> Backbone:
    """The backbone on the meta device: shapes only, so a paper-size model costs neither
    memory nor compute to measure."""
    with torch.device("meta"):
        return backbone_class(config, geometry)  # type: ignore[arg-type]


def profile(
    backbone_class: type[Backbone], config: object, geometry: ClipGeometry
) -> tuple[int, int]:
    """(parameters, FLOPs of one inference forward) of a backbone, measured on meta."""
    network = build_on_meta(backbone_class, config, geometry)
    return count_parameters(network), count_flops(network)
