"""Stage one of SeeMore: the bidirectional distillation network (DESIGN.md §5).

Two networks of one architecture: the forward network `f` reads the clip, the backward network
`g` reads the time-reversed clip. Each keeps its own prediction loss; distillation pulls
together what the two directions hold for the same frames of the original clip:

- step-wise backbones (f predicts frames 1..T-1, g predicts T-2..0): predicted frames and
  states of the interior frames 1..T-2, which both predict;
- clip-wise backbones (f predicts frames I..T-1 from 0..I-1, g the reverse): f's predicted
  latent states of the future against g's encoding of the true future, g's predicted states
  of the history against f's encoding of the history, predicted frames where both predict
  (only when output_frames > input_frames), and backtracking: g run on the clip whose future
  is f's prediction must recover the true history.

`mutual: true` (default, as in the authors' code) lets every term train both networks.
`mutual: false` makes `g` the teacher: its side of every term is detached and backtracking
runs `g` with detached weights, so distillation only trains `f`, the inference network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from seemore.backbones import Backbone, BackboneKind, Output
from seemore.method.objective import Objective, ObjectiveResult
from seemore.method.settings import BDNConfig


def _mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error; zero when there is nothing to compare (no shared frames)."""
    if a.numel() == 0:
        return a.new_zeros(())
    if a.shape != b.shape:
        raise ValueError(
            f"BDN compares tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}; the forward "
            "and backward views of a frame must have the same shape"
        )
    return torch.nn.functional.mse_loss(a, b)


def _in_original_order(out: Output) -> Output:
    """The backward network's output re-indexed by frames of the original clip."""
    encoded = None if out.encoded is None else out.encoded.flip(1)
    return Output(out.frames.flip(1), out.states.flip(1), out.aux_loss, encoded)


class BidirectionalObjective(Objective):
    def __init__(self, forward_net: Backbone, backward_net: Backbone, config: BDNConfig) -> None:
        super().__init__()
        if type(forward_net) is not type(backward_net):
            raise ValueError(
                "BDN needs two networks of one architecture, got "
                f"{type(forward_net).__name__} and {type(backward_net).__name__}"
            )
        if forward_net.geometry != backward_net.geometry:
            raise ValueError(
                f"BDN needs both networks built for one clip geometry, got "
                f"{forward_net.geometry} and {backward_net.geometry}"
            )
        self.networks = nn.ModuleDict({"f": forward_net, "g": backward_net})
        self.config = config

    @property
    def backward_network(self) -> Backbone:
        return self.networks["g"]

    def _teacher(self, tensor: Tensor) -> Tensor:
        return tensor if self.config.mutual else tensor.detach()

    def forward(self, clip: Tensor, sampling_mask: Tensor | None) -> ObjectiveResult:
        forward_net, backward_net = self.forward_network, self.backward_network
        loss_f, out_f = forward_net.training_loss(clip, sampling_mask)
        # The mask is indexed by the network's own steps, so g gets it unchanged: its first
        # `input_frames` steps are its inputs (the reversed future) and the rest its
        # predictions, with the same input/prediction schedule as f. Flipping the mask would
        # teacher-force g's predictions and hide its inputs.
        loss_g, out_g_reversed = backward_net.training_loss(clip.flip(1), sampling_mask)
        out_g = _in_original_order(out_g_reversed)

        total_frames = clip.shape[1]
        first_predicted = forward_net.predicted_frames(total_frames).start
        # f predicts frames [first, T), g (original order) predicts [0, T - first): the frames
        # both predict are [first, T - first), at f's index k - first and g's index k.
        shared = max(0, total_frames - 2 * first_predicted)
        f_part = slice(0, shared)
        g_part = slice(first_predicted, first_predicted + shared)
        distill_frame = _mse(out_f.frames[:, f_part], self._teacher(out_g.frames[:, g_part]))

        terms = {
            "loss_forward": loss_f,
            "loss_backward": loss_g,
            "aux_forward": out_f.aux_loss,
            "aux_backward": out_g.aux_loss,
            "distill_frame": distill_frame,
        }
        config = self.config
        loss = loss_f + loss_g + config.frame_weight * distill_frame
        if forward_net.kind is BackboneKind.STEP_WISE:
            terms["distill_state"] = _mse(
                out_f.states[:, f_part], self._teacher(out_g.states[:, g_part])
            )
        else:
            terms["distill_state"] = self._cross_latent_distillation(out_f, out_g)
            terms["backtrack"] = self._backtracking(clip, sampling_mask, out_f)
            loss = loss + config.backtrack_weight * terms["backtrack"]
        loss = loss + config.state_weight * terms["distill_state"]
        return ObjectiveResult(loss, {name: value.detach() for name, value in terms.items()})

    def _cross_latent_distillation(self, out_f: Output, out_g: Output) -> Tensor:
        """Clip-wise: each direction's predicted latents against the other's encoding of the
        same true frames (both `out_*` in original frame order)."""
        for name, out in (("forward", out_f), ("backward", out_g)):
            if out.encoded is None:
                raise ValueError(
                    f"{type(self.forward_network).__name__} is clip-wise but its {name} Output "
                    "has no `encoded` latents of the input frames; BDN distils against them"
                )
        geometry = self.forward_network.geometry
        # f predicts [I, T) and g encodes [T-I, T); g predicts [0, O) and f encodes [0, I):
        # both pairs share min(I, O) frames, the last ones and the first ones respectively.
        shared = min(geometry.input_frames, geometry.output_frames)
        future = _mse(out_f.states[:, -shared:], self._teacher(out_g.encoded[:, -shared:]))
        history = _mse(out_f.encoded[:, :shared], self._teacher(out_g.states[:, :shared]))
        return future + history

    def _backtracking(self, clip: Tensor, sampling_mask: Tensor | None, out_f: Output) -> Tensor:
        """g on the clip whose future is f's prediction, reversed, must recover the history."""
        backward_net = self.backward_network
        input_frames = self.forward_network.geometry.input_frames
        imagined = torch.cat([clip[:, :input_frames], out_f.frames], dim=1).flip(1)
        if self.config.mutual:
            recovered = backward_net(imagined, sampling_mask)
        else:
            frozen = {name: p.detach() for name, p in backward_net.named_parameters()}
            recovered = functional_call(backward_net, frozen, (imagined, sampling_mask))
        true_history = clip.flip(1)[:, backward_net.predicted_frames(clip.shape[1])]
        return _mse(recovered.frames, true_history)
