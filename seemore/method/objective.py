"""What a training step minimises. An objective is an `nn.Module` that owns every network
trained in a stage, so `torch.func.functional_call(objective, params, (clip, mask))` evaluates
the loss at any parameter point (LMA needs this) without per-backbone code."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from seemore.backbones import Backbone


class ObjectiveResult(NamedTuple):
    loss: Tensor
    # Named loss terms for the training log (detached scalars).
    terms: dict[str, Tensor]


class Objective(nn.Module):
    """Base: `networks` maps a role to a backbone: "f" (forward in time) and, for BDN, "g"
    (backward in time; nn.ModuleDict reserves the key "forward"). `f` is the inference
    model; any other network exists only during training."""

    networks: nn.ModuleDict

    @property
    def forward_network(self) -> Backbone:
        return self.networks["f"]

    def forward(self, clip: Tensor, sampling_mask: Tensor | None) -> ObjectiveResult:
        raise NotImplementedError

    def level_groups(self) -> list[list[tuple[str, list[str]]]]:
        """Per network, its levels shallow to deep with parameter names relative to this
        objective (so they index `named_parameters()` of the objective)."""
        groups = []
        for role, network in self.networks.items():
            groups.append(
                [
                    (f"{role}.{level}", [f"networks.{role}.{name}" for name in names])
                    for level, names in network.levels()
                ]
            )
        return groups

    def unchained_levels(self) -> set[str]:
        """Levels (named as in `level_groups`) outside their network's ordering chain."""
        return {
            f"{role}.{level}"
            for role, network in self.networks.items()
            for level in network.unchained_levels()
        }


class PlainObjective(Objective):
    """The baseline: one forward network, frame MSE plus its own aux loss."""

    def __init__(self, network: Backbone) -> None:
        super().__init__()
        self.networks = nn.ModuleDict({"f": network})

    def forward(self, clip: Tensor, sampling_mask: Tensor | None) -> ObjectiveResult:
        loss, out = self.forward_network.training_loss(clip, sampling_mask)
        return ObjectiveResult(
            loss, {"loss_forward": loss.detach(), "aux_forward": out.aux_loss.detach()}
        )
