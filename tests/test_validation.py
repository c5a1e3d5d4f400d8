"""Validation during training: the MSE it scores, when it scores, the checkpoint it keeps, and
`evaluation.checkpoint` choosing what `evaluate` scores (through the real CLI)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from tiny_backbones import TinyConfig, TinyStepWise, geometry
from torch import Tensor, nn

from seemore.backbones.base import Output
from seemore.cli import main
from seemore.train import load_inference_model
from seemore.validation import Validation, validation_mse


class ConstantFrames(TinyStepWise):
    """Predicts every frame as the constant `value` (a parameter, so it has a state)."""

    def __init__(self, value: float) -> None:
        super().__init__(TinyConfig(), geometry(input_frames=2, output_frames=2, size=4))
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        frames = self.value.expand(clip.shape[0], clip.shape[1] - 1, *clip.shape[2:])
        return Output(frames, frames, clip.new_zeros(()))


def black_clips(count: int = 3) -> np.ndarray:
    return np.zeros((count, 4, 1, 4, 4), np.uint8)  # 2 -> 2 frames of 4x4


def test_validation_mse_sums_each_frame_and_clamps_the_prediction() -> None:
    cpu = torch.device("cpu")
    # Truth 0, prediction 0.5: 0.25 per pixel, summed over 1 x 4 x 4 = 4 per frame.
    assert validation_mse(ConstantFrames(0.5), black_clips(), 2, 2, cpu) == pytest.approx(4.0)
    # A prediction of 3 is clamped to 1 first: 16 per frame.
    assert validation_mse(ConstantFrames(3.0), black_clips(), 2, 2, cpu) == pytest.approx(16.0)


def test_scores_every_eval_every_and_the_last_iteration_and_keeps_the_best() -> None:
    network = ConstantFrames(0.5)
    validation = Validation(
        black_clips(), 2, eval_every=3, steps=8, batch_size=2, device=torch.device("cpu")
    )
    scored = {}
    for done, value in zip(range(1, 9), [0.9, 0.8, 0.25, 0.6, 0.5, 0.5, 0.1, 0.75], strict=True):
        with torch.no_grad():
            network.value.fill_(value)
        logs = validation.after_step(done, 100 + done - 1, network)
        if logs:
            scored[done] = logs["val_mse"]
    # Iterations 3 and 6 (every 3, from 1) and 8 (the last); 7 is better but never scored.
    assert scored == pytest.approx({3: 16 * 0.25**2, 6: 16 * 0.5**2, 8: 16 * 0.75**2})
    assert (validation.best_step, validation.best_mse) == (102, pytest.approx(1.0))
    assert float(validation.best_state["value"]) == 0.25
    stage_one = Validation(
        black_clips(),
        2,
        eval_every=None,
        steps=8,
        batch_size=2,
        device=torch.device("cpu"),
        score_last=False,
    )
    assert [done for done in range(1, 9) if stage_one.due(done)] == []


def tiny_params(raw: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    raw["experiment"].update(
        datasets=["moving_mnist"], backbones=["convlstm"], variants=["baseline"]
    )
    raw["data"]["moving_mnist"].update(image_size=16, test_clips=4)
    raw["models"]["moving_mnist"]["convlstm"].update(num_hidden=[4], patch_size=4)
    training = raw["training"]["moving_mnist"]
    training.update(batch_size=2)
    training["stage1"].update(steps=3, eval_every=2)
    training["stage2"].update(steps=4, eval_every=2, lr=5e-2)
    raw["evaluation"].update(batch_size=4, lpips=False, samples=1, checkpoint=checkpoint)
    return raw


def test_training_logs_val_mse_keeps_best_and_evaluate_scores_the_chosen_one(
    tmp_path: Path, embedded_raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(embedded_raw, "best")))
    run = ["--dataset", "moving_mnist", "--backbone", "convlstm", "--variant", "baseline"]
    run += ["--seed", "0"]
    assert main(["--params", str(params), "prepare", "--dataset", "moving_mnist"]) == 0
    for stage in ("1", "2"):
        assert main(["--params", str(params), "train", "--stage", stage, *run, "--quiet"]) == 0
    out = tmp_path / "results/moving_mnist/convlstm/baseline/seed0"
    with (out / "train_log.csv").open() as file:
        rows = list(csv.DictReader(file))
    scored = {int(row["step"]): float(row["val_mse"]) for row in rows if row["val_mse"]}
    # Stage one: its iteration 2 only (every 2; no forced last); stage two: run steps 4
    # and 6 (every 2, and the last).
    assert sorted(scored) == [1, 4, 6]
    best_step = min((4, 6), key=lambda step: scored[step])
    _, best = load_inference_model(out / "model_best.pt")
    _, last = load_inference_model(out / "model.pt")
    assert (best["selected"], best["step"], best["recipe"]) == ("best", best_step, "seemore_cpu")
    assert (last["selected"], last["step"]) == ("last", 6)

    for checkpoint, saved in (("best", best), ("last", last)):
        params.write_text(yaml.safe_dump(tiny_params(embedded_raw, checkpoint)))
        assert main(["--params", str(params), "evaluate", *run]) == 0
        record = json.loads((out / "metrics.json").read_text())
        assert record["checkpoint"]["selected"] == checkpoint
        assert record["checkpoint"]["step"] == saved["step"]
        assert record["recipe"] == "seemore_cpu"
