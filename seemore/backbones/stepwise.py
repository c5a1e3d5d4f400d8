"""Shared rollout of step-wise (recurrent) backbones: patching, scheduled-sampling input mixing,
the inference rollout, per-frame state stacking and the step-averaged aux loss.

A recurrent backbone subclasses `StepwiseBackbone` and writes only its cell logic (its config
usually extends `ConvRecurrentConfig`; `gate_conv` builds the reference-style gate convolutions,
`stacked_cells` a stack of cells):

    class MyRNNConfig(ConvRecurrentConfig):
        ...  # extra settings of this backbone

    @BACKBONES.register("my_rnn")
    class MyRNN(StepwiseBackbone):
        config_class = MyRNNConfig

        def __init__(self, config, geometry):
            super().__init__(config, geometry, patch_size=config.patch_size)
            height, width = state_size(config, geometry)
            self.cells = stacked_cells(MyCell, self.patch_channels, config, height, width)
            self.head = ...  # input channels are self.patch_channels

        def init_carry(self, frame):  # frame: [B, C*p*p, H/p, W/p], for batch/device/size
            return [frame.new_zeros(...), ...]

        def step(self, frame, carry):  # one time step on a patched frame
            ...
            return StepResult(frame=next_frame, state=top_hidden, carry=new_carry, aux=None)

        def levels(self):
            layers = layer_levels("cells", len(self.cells))  # layer0 = cells.0, ...
            return levels_by_prefix(self, [*layers, ("head", ["head"])])

`forward` then follows the interface of `Backbone.forward` for any clip length. A backbone
whose regulariser is not a per-step term (e.g. a loss on its kernels) overrides `forward`,
calls `super().forward(...)` and returns `out._replace(aux_loss=out.aux_loss + extra)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import Field
from torch import Tensor, nn

from seemore.backbones.base import (
    Backbone,
    BackboneConfig,
    BackboneKind,
    ClipGeometry,
    Output,
)
from seemore.backbones.fields import OddKernel
from seemore.backbones.patch import from_patches, patch_geometry_problems, to_patches
from seemore.schema import PositiveInt


class ConvRecurrentConfig(BackboneConfig):
    """Settings shared by the convolutional recurrent backbones of the PredRNN family.

    num_hidden:  hidden channels of each recurrent layer, bottom to top.
    filter_size: square kernel of the recurrent convolutions; odd, so that `filter_size // 2`
                 padding keeps the spatial size.
    patch_size:  frames are cut into `p x p` patches stacked as channels (see patch.py).
    layer_norm:  LayerNorm over `[channels, H/p, W/p]` after each gate convolution.
    """

    num_hidden: list[PositiveInt] = Field(min_length=1)
    filter_size: OddKernel = 5
    patch_size: PositiveInt = 4
    layer_norm: bool = False

    def check_geometry(self, geometry: ClipGeometry) -> list[str]:
        return patch_geometry_problems(self.patch_size, geometry)


def gate_conv(
    in_channels: int, out_channels: int, config: ConvRecurrentConfig, height: int, width: int
) -> nn.Sequential:
    """A bias-free 'same' convolution, followed by LayerNorm when `config.layer_norm`; a
    Sequential either way so parameter names (`conv.0.weight`) match the reference code."""
    conv = nn.Conv2d(
        in_channels, out_channels, config.filter_size, padding=config.filter_size // 2, bias=False
    )
    if config.layer_norm:
        return nn.Sequential(conv, nn.LayerNorm([out_channels, height, width]))
    return nn.Sequential(conv)


def state_size(config: ConvRecurrentConfig, geometry: ClipGeometry) -> tuple[int, int]:
    """Height and width of the recurrent states: the frame size over the patch size; a
    geometry the patches do not tile is refused."""
    problems = config.check_geometry(geometry)
    if problems:
        raise ValueError("; ".join(problems))
    return geometry.height // config.patch_size, geometry.width // config.patch_size


def stacked_cells(
    cell: Callable[[int, int, ConvRecurrentConfig, int, int], nn.Module],
    in_channels: int,
    config: ConvRecurrentConfig,
    height: int,
    width: int,
) -> nn.ModuleList:
    """`cell(in_channels, hidden, config, height, width)` for each width of `config.num_hidden`,
    bottom to top: layer 0 reads `in_channels`, every other layer the hidden state below it."""
    widths = [in_channels, *config.num_hidden]
    return nn.ModuleList(
        cell(widths[i], widths[i + 1], config, height, width) for i in range(len(config.num_hidden))
    )


class StepResult(NamedTuple):
    """What one recurrent step returns.

    frame: the prediction of the next frame, in patch space `[B, C*p*p, H/p, W/p]`.
    state: the representation SeeMore distils for that predicted frame `[B, ...]` (same shape
           at every step).
    carry: whatever the next step needs (hidden states, memories, input history).
    aux:   this step's regulariser, already weighted, or None; `forward` averages it over
           the steps.
    """

    frame: Tensor
    state: Tensor
    carry: Any
    aux: Tensor | None = None


class StepwiseBackbone(Backbone):
    kind: ClassVar[BackboneKind] = BackboneKind.STEP_WISE

    def __init__(self, config: BackboneConfig, geometry: ClipGeometry, patch_size: int = 1) -> None:
        super().__init__(config, geometry)
        self.patch_size = patch_size
        self.patch_channels = geometry.channels * patch_size * patch_size

    def init_carry(self, frame: Tensor) -> Any:
        """The carry before step 0; `frame` is the first patched input (for batch, device,
        dtype and spatial size)."""
        raise NotImplementedError

    def step(self, frame: Tensor, carry: Any) -> StepResult:
        """Consume one patched input frame `[B, C*p*p, H/p, W/p]`, predict the next."""
        raise NotImplementedError

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        self._check_inputs(clip, sampling_mask)
        patches = to_patches(clip, self.patch_size)
        carry = self.init_carry(patches[:, 0])
        frames: list[Tensor] = []
        states: list[Tensor] = []
        aux_terms: list[Tensor] = []
        prediction: Tensor | None = None
        for t in range(clip.shape[1] - 1):
            result = self.step(self._step_input(patches, t, prediction, sampling_mask), carry)
            prediction, carry = result.frame, result.carry
            frames.append(result.frame)
            states.append(result.state)
            if result.aux is not None:
                aux_terms.append(result.aux)
        if aux_terms and len(aux_terms) != len(frames):
            raise RuntimeError(f"{type(self).__name__}.step returned aux on some steps only")
        aux_loss = torch.stack(aux_terms).mean() if aux_terms else clip.new_zeros(())
        return Output(
            frames=from_patches(torch.stack(frames, dim=1), self.patch_size),
            states=torch.stack(states, dim=1),
            aux_loss=aux_loss,
        )

    def _step_input(
        self, patches: Tensor, t: int, prediction: Tensor | None, sampling_mask: Tensor | None
    ) -> Tensor:
        """Step 0 sees the true frame 0; later steps mix true frame and previous prediction
        by the mask, or in inference take true frames for the input steps only."""
        true_frame = patches[:, t]
        if prediction is None:
            return true_frame
        if sampling_mask is None:
            return true_frame if t < self.geometry.input_frames else prediction
        weight = sampling_mask[:, t - 1].to(true_frame.dtype).view(-1, 1, 1, 1)
        return weight * true_frame + (1 - weight) * prediction

    def _check_inputs(self, clip: Tensor, sampling_mask: Tensor | None) -> None:
        g = self.geometry
        if clip.dim() != 5 or tuple(clip.shape[2:]) != (g.channels, g.height, g.width):
            raise ValueError(
                f"{type(self).__name__}: clip of shape {tuple(clip.shape)}; expected "
                f"[B, T, {g.channels}, {g.height}, {g.width}]"
            )
        if clip.shape[1] < 2:
            raise ValueError(
                f"{type(self).__name__}: a clip needs >= 2 frames, got {clip.shape[1]}"
            )
        expected = (clip.shape[0], clip.shape[1] - 2)
        if sampling_mask is not None and tuple(sampling_mask.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: sampling_mask of shape {tuple(sampling_mask.shape)}; "
                f"expected [B, T-2] = {list(expected)}"
            )


def layer_levels(prefix: str, layers: int) -> list[tuple[str, list[str]]]:
    """The `levels_by_prefix` spec of one level per recurrent layer: `layer{i}` is
    `{prefix}.{i}`."""
    return [(f"layer{i}", [f"{prefix}.{i}"]) for i in range(layers)]


def levels_by_prefix(
    module: nn.Module, spec: Sequence[tuple[str, Sequence[str]]]
) -> list[tuple[str, list[str]]]:
    """Group `module.named_parameters()` into the levels of `spec` `[(level, [prefixes])]`.

    A parameter belongs to a level when its name equals one of the level's prefixes or starts
    with `prefix + "."` (a submodule path such as `cells.0`). Every parameter must fall into
    exactly one level and every level must get at least one, so a new layer cannot silently
    escape LMA's per-level rates.
    """
    names = [name for name, _ in module.named_parameters()]

    def matches(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    levels = []
    for level, prefixes in spec:
        members = [n for n in names if any(matches(n, p) for p in prefixes)]
        if not members:
            raise ValueError(f"level {level!r} (prefixes {list(prefixes)}) has no parameters")
        levels.append((level, members))
    counts = {name: 0 for name in names}
    for _, members in levels:
        for name in members:
            counts[name] += 1
    unassigned = [n for n, c in counts.items() if c == 0]
    repeated = [n for n, c in counts.items() if c > 1]
    if unassigned or repeated:
        raise ValueError(
            f"{type(module).__name__} levels: parameters in no level {unassigned}, "
            f"in several levels {repeated}"
        )
    return levels
