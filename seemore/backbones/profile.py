"""Size and cost of a backbone: parameter count and FLOPs of one inference forward."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seemore.backbones.base import Backbone


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (frozen ones included, as published counts do)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(backbone: Backbone, batch_size: int = 1) -> int:
    """FLOPs (a multiply-add counts 2) of one inference forward on a zero clip of the
    backbone's geometry (`input_frames + output_frames` frames, batch `batch_size`), as
    torch's FlopCounterMode counts them: convolutions and matrix products, not elementwise ops.
    """
    g = backbone.geometry
    parameter = next(backbone.parameters())
    clip = torch.zeros(
        batch_size,
        g.total_frames,
        g.channels,
        g.height,
        g.width,
        device=parameter.device,
        dtype=parameter.dtype,
    )
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            backbone(clip, None)
    finally:
        backbone.train(was_training)
    return int(counter.get_total_flops())


def profile(backbone_class: type[Backbone], config: object, geometry: object) -> tuple[int, int]:
    """(parameters, FLOPs) of a backbone built on the meta device: shapes only, so a
    paper-size model costs neither memory nor compute to measure."""
    with torch.device("meta"):
        network = backbone_class(config, geometry)  # type: ignore[arg-type]
    return count_parameters(network), count_flops(network)
