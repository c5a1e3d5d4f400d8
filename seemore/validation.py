"""Validation during training and the checkpoint it selects (DESIGN.md §5, "Recipes").

Every `eval_every` iterations of a stage (and at its last one) the forward network predicts
the validation split (`Benchmark.val_clips`, disjoint from test) and is scored by MSE: per
frame, the squared error of the prediction clamped to [0, 1] summed over C*H*W, averaged over
clips and frames (what the SeeMore authors' `trainer.test` returns, and select on). Stage two
keeps the forward network's weights at its lowest validation MSE: `model_best.pt` beside the
last (`model.pt`); `evaluation.checkpoint` says which one `evaluate` scores. Nothing is ever
chosen on the test split.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seemore.backbones import Backbone
from seemore.data.base import to_unit_float

MODEL_FILES = {"last": "model.pt", "best": "model_best.pt"}


def model_file(checkpoint: str) -> str:
    """The inference model's file name for `evaluation.checkpoint` (`best` or `last`)."""
    return MODEL_FILES[checkpoint]


def validation_mse(
    network: Backbone, clips: np.ndarray, input_frames: int, batch_size: int, device: torch.device
) -> float:
    """Mean over clips and output frames of the per-frame squared error summed over C*H*W,
    predictions clamped to [0, 1]; the frames to predict are hidden from the network."""
    was_training = network.training
    network.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):
            truth = torch.from_numpy(to_unit_float(clips[start : start + batch_size])).to(device)
            observed = truth.clone()
            observed[:, input_frames:] = 0.0
            horizon = truth.shape[1] - input_frames
            predicted = network(observed, None).frames[:, -horizon:].float().clamp(0.0, 1.0)
            errors = (predicted - truth[:, input_frames:]).square().flatten(2).sum(dim=2)
            total += float(errors.sum())
            count += errors.numel()
    network.train(was_training)
    return total / count


def is_scored(done: int, steps: int, eval_every: int | None, score_last: bool) -> bool:
    """Whether a stage scores validation after its `done`-th iteration (`seemore plan` counts
    the scorings with it too)."""
    every = eval_every is not None and done % eval_every == 0
    return every or (score_last and done == steps)


class Validation:
    """Scores the validation split every `eval_every` iterations (from 1, as the authors'
    `itr % test_interval == 0`) and, with `score_last` (stage two, whose best checkpoint must
    weigh the last weights too), at the stage's last one; keeps the best weights.

    `after_step(done, step, network)` is called after each iteration (`done` iterations of
    the stage finished, `step` its run step for the log); it returns `{"val_mse": x}` when it
    scored. `best()` is (run step, MSE, forward-network state) of the lowest MSE so far.
    """

    def __init__(
        self,
        clips: np.ndarray,
        input_frames: int,
        eval_every: int | None,
        steps: int,
        batch_size: int,
        device: torch.device,
        score_last: bool = True,
    ) -> None:
        self.score_last = score_last
        self.clips = clips
        self.input_frames = input_frames
        self.eval_every = eval_every
        self.steps = steps
        self.batch_size = batch_size
        self.device = device
        self.best_step: int | None = None
        self.best_mse = float("inf")
        self.best_state: dict[str, Tensor] | None = None

    def due(self, done: int) -> bool:
        return is_scored(done, self.steps, self.eval_every, self.score_last)

    def after_step(self, done: int, step: int, network: Backbone) -> dict[str, float]:
        if not self.due(done):
            return {}
        mse = validation_mse(network, self.clips, self.input_frames, self.batch_size, self.device)
        if mse < self.best_mse:
            self.best_step, self.best_mse = step, mse
            self.best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        return {"val_mse": mse}

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_mse": self.best_mse,
            "best_state": copy.deepcopy(self.best_state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_step, self.best_mse = state["best_step"], state["best_mse"]
        self.best_state = state["best_state"]
