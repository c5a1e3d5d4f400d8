"""Evaluation with hand-made backbones whose predictions are known exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from seemore.backbones.base import Backbone, BackboneConfig, BackboneKind, ClipGeometry, Output
from seemore.config import EvaluationConfig
from seemore.evaluate import evaluate, write_evaluation
from seemore.metrics import ALEXNET_WEIGHTS

INPUT_FRAMES = 3
TOTAL_FRAMES = 7
SIZE = 8


class CopyLastFrame(Backbone):
    """Step-wise: predicts frame t+1 as its input at step t (plus `offset`), feeding its
    own predictions back after the input frames when `sampling_mask` is None."""

    kind = BackboneKind.STEP_WISE
    config_class = BackboneConfig

    def __init__(self, geometry: ClipGeometry, offset: float = 0.0) -> None:
        super().__init__(BackboneConfig(), geometry)
        self.offset = offset

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        frames, previous = [], clip[:, 0]
        for step in range(clip.shape[1] - 1):
            current = clip[:, step] if step < self.geometry.input_frames else previous
            previous = current + self.offset
            frames.append(previous)
        stacked = torch.stack(frames, dim=1)
        return Output(stacked, stacked, torch.zeros(()))

    def levels(self) -> list[tuple[str, list[str]]]:
        return []


class TeacherForced(CopyLastFrame):
    """Would score perfectly if the truth of the predicted frames reached the network."""

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        return Output(clip[:, 1:], clip[:, 1:], torch.zeros(()))


def geometry() -> ClipGeometry:
    return ClipGeometry(1, SIZE, SIZE, INPUT_FRAMES, TOTAL_FRAMES - INPUT_FRAMES)


def ramp_clips(clips: int = 5) -> np.ndarray:
    """Flat frames: clip n, frame t has every pixel = 10 t + n (uint8)."""
    values = 10 * np.arange(TOTAL_FRAMES)[None, :] + np.arange(clips)[:, None]
    return np.broadcast_to(
        values[:, :, None, None, None], (clips, TOTAL_FRAMES, 1, SIZE, SIZE)
    ).astype(np.uint8)


@pytest.fixture
def no_lpips_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_copy_last_frame_scores_match_hand_computation(no_lpips_weights: Path) -> None:
    clips = ramp_clips()
    config = EvaluationConfig(batch_size=2, samples=3, lpips=True)
    result = evaluate(CopyLastFrame(geometry()), clips, INPUT_FRAMES, config, torch.device("cpu"))

    # The k-th predicted frame repeats the last input: off by 10 k / 255 on all 64 pixels,
    # the same for every clip.
    k = np.arange(1, TOTAL_FRAMES - INPUT_FRAMES + 1)
    pixels = SIZE * SIZE
    np.testing.assert_allclose(result.per_frame["mse"], pixels * (10 * k / 255) ** 2, rtol=1e-5)
    np.testing.assert_allclose(result.per_frame["mae"], pixels * 10 * k / 255, rtol=1e-5)
    np.testing.assert_allclose(
        result.per_frame["psnr"], -10 * np.log10((10 * k / 255) ** 2), rtol=1e-5
    )
    assert np.all(np.diff(result.per_frame["ssim"]) < 0)  # further ahead, less similar
    assert result.horizon == 4
    assert result.clips == 5
    assert result.means["mse"] == pytest.approx(float(np.mean(pixels * (10 * k / 255) ** 2)))
    assert result.means["lpips"] is None
    assert ALEXNET_WEIGHTS in result.unavailable["lpips"]
    assert result.inference_seconds_per_clip > 0

    # Samples: the first 3 clips, the prediction repeating the last input frame.
    assert result.samples["inputs"].shape == (3, INPUT_FRAMES, 1, SIZE, SIZE)
    assert result.samples["truth"].shape == (3, 4, 1, SIZE, SIZE)
    assert result.samples["predictions"].dtype == np.uint8
    np.testing.assert_array_equal(result.samples["truth"], clips[:3, INPUT_FRAMES:])
    np.testing.assert_array_equal(
        result.samples["predictions"],
        np.broadcast_to(clips[:3, INPUT_FRAMES - 1 : INPUT_FRAMES], (3, 4, 1, SIZE, SIZE)),
    )


def test_predictions_are_clamped_to_the_unit_range(no_lpips_weights: Path) -> None:
    clips = ramp_clips(2)
    config = EvaluationConfig(batch_size=4, samples=0, lpips=False)
    result = evaluate(
        CopyLastFrame(geometry(), offset=5.0), clips, INPUT_FRAMES, config, torch.device("cpu")
    )
    truth = clips[:, INPUT_FRAMES:].astype(np.float64) / 255
    expected = ((1.0 - truth) ** 2).sum(axis=(2, 3, 4)).mean(axis=0)
    np.testing.assert_allclose(result.per_frame["mse"], expected, rtol=1e-5)
    assert result.unavailable["lpips"].startswith("disabled")
    assert result.samples["predictions"].shape == (0, 4, 1, SIZE, SIZE)


def test_future_frames_never_reach_the_network(no_lpips_weights: Path) -> None:
    clips = ramp_clips(2)
    config = EvaluationConfig(batch_size=2, samples=2, lpips=False)
    result = evaluate(TeacherForced(geometry()), clips, INPUT_FRAMES, config, torch.device("cpu"))
    assert np.all(result.samples["predictions"] == 0)
    assert np.all(result.per_frame["mse"] > 0)


def test_float16_clips_are_read_as_unit_floats(no_lpips_weights: Path) -> None:
    clips = (ramp_clips(2).astype(np.float32) / 255).astype(np.float16)
    config = EvaluationConfig(batch_size=2, samples=1, lpips=False)
    result = evaluate(CopyLastFrame(geometry()), clips, INPUT_FRAMES, config, torch.device("cpu"))
    k = np.arange(1, 5)
    np.testing.assert_allclose(result.per_frame["mae"], 64 * 10 * k / 255, rtol=1e-2)


def test_a_clip_without_frames_to_predict_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to predict"):
        evaluate(
            CopyLastFrame(geometry()),
            ramp_clips(1)[:, :INPUT_FRAMES],
            INPUT_FRAMES,
            EvaluationConfig(lpips=False),
            torch.device("cpu"),
        )


def test_write_evaluation_files(no_lpips_weights: Path, tmp_path: Path) -> None:
    config = EvaluationConfig(batch_size=2, samples=2, lpips=True)
    result = evaluate(
        CopyLastFrame(geometry()), ramp_clips(), INPUT_FRAMES, config, torch.device("cpu")
    )
    out = tmp_path / "run"
    header = {"dataset": "moving_mnist", "backbone": "copy", "variant": "baseline", "seed": 0}
    write_evaluation(result, out, header)

    record = json.loads((out / "metrics.json").read_text())
    assert record["dataset"] == "moving_mnist" and record["seed"] == 0
    assert record["metrics"]["lpips"] is None
    assert record["metrics"]["mse"] == pytest.approx(result.means["mse"])
    assert ALEXNET_WEIGHTS in record["unavailable"]["lpips"]
    assert record["per_frame_file"] == "per_frame.csv"
    assert record["inference_seconds_per_clip"] == pytest.approx(result.inference_seconds_per_clip)

    with (out / "per_frame.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["frame", "mse", "mae", "ssim", "psnr", "lpips"]
    assert [int(row["frame"]) for row in rows] == [1, 2, 3, 4]
    assert all(row["lpips"] == "" for row in rows)
    np.testing.assert_allclose([float(r["mse"]) for r in rows], result.per_frame["mse"])

    with np.load(out / "samples.npz") as samples:
        assert sorted(samples) == ["inputs", "predictions", "truth"]
        assert samples["predictions"].shape == (2, 4, 1, SIZE, SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_frame.csv", "samples.npz"]

    with pytest.raises(ValueError, match="metrics"):
        write_evaluation(result, out, {"metrics": {}})
