"""How a training step changes the parameters. Stage one always uses `AdamUpdater`; stage two
uses it too unless the variant meta-adapts the rates (LMA)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.func import functional_call

from seemore.method.objective import Objective, ObjectiveResult
from seemore.method.settings import LRScheduleConfig
from seemore.schedules import build_schedule

Autocast = Callable[[], AbstractContextManager[object]]
# A step's named scalars: 0-dim tensors left on the device (read only at log boundaries, so
# a step never waits for the device) or plain Python numbers known without reading it.
StepLogs = dict[str, Tensor | float]


def adam(parameters: Iterable[Tensor], lr: float) -> torch.optim.Adam:
    """torch's fused Adam: one kernel per step and, unlike its per-tensor path, no `.item()`
    of the step counters."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


@dataclass
class PassCounter:
    """Forward and backward passes of the whole objective, so each variant's cost is visible."""

    forward: int = 0
    backward: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {"forward_passes": self.forward, "backward_passes": self.backward, **self.extra}

    @classmethod
    def from_dict(cls, counts: dict[str, int]) -> PassCounter:
        extra = {k: v for k, v in counts.items() if k not in ("forward_passes", "backward_passes")}
        return cls(counts["forward_passes"], counts["backward_passes"], extra)


class Updater:
    def __init__(self, objective: Objective, autocast: Autocast, grad_clip: float | None) -> None:
        self.objective = objective
        self.autocast = autocast
        self.grad_clip = grad_clip
        self.passes = PassCounter()
        # What a step calls: the objective, or after `compile` its compiled wrapper (which
        # shares the objective's parameters, so state dicts and checkpoints are unchanged).
        self.model: torch.nn.Module = objective
        # The torch.compile mode in use (None: eager). With CUDA graphs a step's outputs live
        # in memory the next replay reuses, so what a step keeps (its log) is copied out.
        self.compile_mode: str | None = None

    def compile(self, mode: str) -> None:
        """Run the objective's forward, and through AOTAutograd its backward, as compiled
        graphs (`torch.compile(objective, mode=mode)`, static shapes). Only the training
        step's calls go through them (validation and checkpoints see the eager objective);
        only float rounding differs (tests/test_compile.py)."""
        self.compile_mode = mode
        self.model = torch.compile(self.objective, mode=mode, dynamic=False)

    def loss_at(
        self, parameters: dict[str, Tensor], clip: Tensor, sampling_mask: Tensor | None
    ) -> ObjectiveResult:
        """The objective with `parameters` (named as in the objective) in place of its own,
        through the same compiled graphs as the step when compiled (LMA's lookahead)."""
        if self.model is not self.objective:  # the compiled wrapper holds it as `_orig_mod`
            parameters = {f"_orig_mod.{name}": t for name, t in parameters.items()}
        return functional_call(self.model, parameters, (clip, sampling_mask))

    def begin_step(self) -> None:
        """Mark a new iteration for CUDA graph trees: the last step's graph outputs may be
        overwritten from here on (nothing of them is kept but the copied-out logs)."""
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def kept(self, scalars: StepLogs) -> StepLogs:
        """`scalars` safe to keep past the next step: copied out of CUDA graph memory."""
        if self.compile_mode != "reduce-overhead":
            return scalars
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in scalars.items()}

    def step(self, clip: Tensor, sampling_mask: Tensor | None) -> StepLogs:
        """One optimisation step on a batch; returns named scalars for the training log."""
        raise NotImplementedError

    def loss_and_backward(self, clip: Tensor, sampling_mask: Tensor | None) -> StepLogs:
        """Forward, backward and (optional) gradient clipping; gradients are left in `.grad`."""
        with self.autocast():
            result = self.model(clip, sampling_mask)
        result.loss.backward()
        self.passes.forward += 1
        self.passes.backward += 1
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.grad_clip)
        return self.kept({"loss": result.loss.detach(), **result.terms})

    def state_dict(self) -> dict[str, object]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, object]) -> None:
        raise NotImplementedError

    def resume_moments(self, stage_one: dict[str, object]) -> None:
        """Continue from stage one's Adam moments (its `AdamUpdater.state_dict()`), so stage
        two's first steps follow the smoothed gradient, not a fresh optimizer's sign step."""
        raise NotImplementedError


class AdamUpdater(Updater):
    def __init__(
        self,
        objective: Objective,
        lr: float,
        autocast: Autocast,
        grad_clip: float | None,
        resume: bool = True,
        schedule: LRScheduleConfig | None = None,
        updates: int = 1,
    ) -> None:
        super().__init__(objective, autocast, grad_clip)
        self.optimizer = adam(objective.parameters(), lr)
        # False: `resume_moments` keeps the fresh moments (training.stage2.moments: fresh).
        self.resume = resume
        # The stage's lr schedule over its `updates` updates (constant when None).
        self.schedule = build_schedule(self.optimizer, schedule or LRScheduleConfig(), lr, updates)

    def step(self, clip: Tensor, sampling_mask: Tensor | None) -> StepLogs:
        self.begin_step()
        self.optimizer.zero_grad(set_to_none=True)
        logs = self.loss_and_backward(clip, sampling_mask)
        self.optimizer.step()
        self.schedule.after_update()
        return logs

    def state_dict(self) -> dict[str, object]:
        return {"adam": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.optimizer.load_state_dict(state["adam"])  # type: ignore[arg-type]
        self.schedule.load_state_dict(state["schedule"])  # type: ignore[arg-type]

    def resume_moments(self, stage_one: dict[str, object]) -> None:
        if not self.resume:
            return
        # Stage one's moments, this stage's hyperparameters (lr, betas a schedule may cycle).
        groups = [
            {key: value for key, value in group.items() if key != "params"}
            for group in self.optimizer.param_groups
        ]
        self.optimizer.load_state_dict(stage_one["adam"])  # type: ignore[arg-type]
        for group, settings in zip(self.optimizer.param_groups, groups, strict=True):
            group.update(settings)
