"""One training run on several GPUs (`experiment.gpus_per_run` > 1): data parallel under
`torchrun`, exactly the single-process run with the same global batch.

Every rank draws the same global batch and scheduled-sampling mask from the same seeded
streams (so resuming works as in a single process: the data state is the same everywhere)
and trains on its own contiguous shard of it. Gradients are averaged across ranks inside
autograd: every parameter enters the objective's forward through an identity whose backward
all-reduces the gradient. So whatever differentiates the loss sees the global-batch gradient:
`loss.backward()` (Adam, LMA's task steps, gradient clipping after it) and LMA's lookahead,
which differentiates with respect to θ − a·u through `functional_call` — no per-updater or
per-backbone code. With identical gradients on every rank, Adam's moments, BDN's two networks
and LMA's per-level rates stay identical across ranks (all-reduce hands every rank the same
sum). The logged loss terms are the global-batch means. The batch size must divide by the
number of ranks, so that the mean of the shard means is the global mean.

Every rank holds the same state, and rank 0 alone writes files (checkpoints, models, logs,
progress) and clears the stage's partial checkpoint when it completes: no rank writes into a
directory another one is removing. A resumed run's ranks all read the same partial checkpoint.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.func import functional_call

from seemore.method.objective import Objective, ObjectiveResult

WORLD_SIZE_ENV = "WORLD_SIZE"


def world_size() -> int:
    return int(os.environ.get(WORLD_SIZE_ENV, "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def writes_files() -> bool:
    """Whether this process writes the run's files: rank 0, or the only process."""
    return rank() == 0


def init(device_type: str) -> None:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on the CPU)."""
    if world_size() == 1 or dist.is_initialized():
        return
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")


class _AverageGradient(torch.autograd.Function):
    """Identity forward; the backward all-reduces the gradient to its mean over ranks."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad / dist.get_world_size()


def _global_mean(value: Tensor) -> Tensor:
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def _member(module: torch.nn.Module, dotted: str) -> Tensor:
    for part in dotted.split(".")[:-1]:
        module = getattr(module, part)
    return getattr(module, dotted.rsplit(".", 1)[-1])


def shard(objective: Objective, batch_size: int) -> Objective:
    """Make `objective` train data parallel across the ranks (unchanged in one process)."""
    if world_size() == 1:
        return objective
    world, own = dist.get_world_size(), dist.get_rank()
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} does not divide over experiment.gpus_per_run = {world} "
            "ranks; each rank trains an equal shard of the global batch"
        )
    names = [name for name, _ in objective.named_parameters()]
    inner_forward = objective.forward
    inside = False

    def forward(clip: Tensor, sampling_mask: Tensor | None) -> ObjectiveResult:
        nonlocal inside
        if inside:  # the call below, with the averaged parameters bound
            return inner_forward(clip, sampling_mask)
        # The tensors bound now: the parameters, or LMA's lookahead θ − a·u.
        bound = {name: _member(objective, name) for name in names}
        averaged = {
            name: _AverageGradient.apply(t) if t.requires_grad else t for name, t in bound.items()
        }
        clip_shard = clip.chunk(world)[own]
        mask_shard = None if sampling_mask is None else sampling_mask.chunk(world)[own]
        inside = True
        try:
            result = functional_call(objective, averaged, (clip_shard, mask_shard))
        finally:
            inside = False
        # Log the global-batch loss; its gradient stays the shard's (averaged above).
        loss = result.loss + (_global_mean(result.loss) - result.loss.detach())
        return ObjectiveResult(loss, {k: _global_mean(v) for k, v in result.terms.items()})

    objective.forward = forward  # type: ignore[method-assign]
    return objective


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """`seemore <argv>` again, as `processes` ranks on this machine. The job's `--threads`
    (the CPUs a scheduler granted it) are shared between the ranks."""
    launcher = shutil.which("torchrun")
    prefix = [launcher] if launcher else [sys.executable, "-m", "torch.distributed.run"]
    argv = list(argv)
    for index, word in enumerate(argv[:-1]):
        if word == "--threads":
            argv[index + 1] = str(max(1, int(argv[index + 1]) // processes))
    return [
        *prefix,
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "seemore.cli",
        *argv,
    ]
