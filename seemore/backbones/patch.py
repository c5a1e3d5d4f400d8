"""Space-to-depth patching of clips, as in the reference PredRNN code (`reshape_patch`), and
the rule behind it and every other downsampling: the factor must divide the frame size.

A `p x p` patch of a `C`-channel frame becomes `C*p*p` channels of one pixel; the channel
index of pixel `(dy, dx)` of channel `c` is `(dy*p + dx)*C + c`, the order the reference code
produces from its channels-last layout, so weights stay comparable with it.
"""

from __future__ import annotations

from torch import Tensor

from seemore.backbones.base import ClipGeometry


def frame_divisor_problems(setting: str, divisor: int, geometry: ClipGeometry) -> list[str]:
    """One problem per frame side (height, width) of `geometry` that `divisor` does not divide;
    `setting` names the configuration behind it, e.g. `"patch_size = 4"`."""
    return [
        f"{setting} does not divide the frame {name} {size}; expected a divisor of {size}"
        for name, size in (("height", geometry.height), ("width", geometry.width))
        if size % divisor
    ]


def patch_geometry_problems(patch_size: int, geometry: ClipGeometry) -> list[str]:
    """Why frames of `geometry` cannot be cut into `patch_size` patches (empty when they can)."""
    return frame_divisor_problems(f"patch_size = {patch_size}", patch_size, geometry)


def to_patches(clip: Tensor, patch_size: int) -> Tensor:
    """`[B, T, C, H, W]` -> `[B, T, C*p*p, H/p, W/p]`."""
    batch, time, channels, height, width = clip.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"patch_size {p} does not divide the frame size {height}x{width}")
    blocks = clip.reshape(batch, time, channels, height // p, p, width // p, p)
    # -> [B, T, dy, dx, C, H/p, W/p], so that channels vary fastest within a patch pixel
    blocks = blocks.permute(0, 1, 4, 6, 2, 3, 5)
    return blocks.reshape(batch, time, p * p * channels, height // p, width // p)


def from_patches(patches: Tensor, patch_size: int) -> Tensor:
    """Inverse of `to_patches`: `[B, T, C*p*p, h, w]` -> `[B, T, C, h*p, w*p]`."""
    batch, time, patch_channels, height, width = patches.shape
    p = patch_size
    if patch_channels % (p * p):
        raise ValueError(f"{patch_channels} channels are not a multiple of patch_size² = {p * p}")
    channels = patch_channels // (p * p)
    blocks = patches.reshape(batch, time, p, p, channels, height, width)
    blocks = blocks.permute(0, 1, 4, 5, 2, 6, 3)  # -> [B, T, C, h, dy, w, dx]
    return blocks.reshape(batch, time, channels, height * p, width * p)
