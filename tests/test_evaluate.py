"""Evaluation with hand-made backbones whose predictions are known exactly."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor

from seemore.backbones.base import Backbone, BackboneConfig, BackboneKind, ClipGeometry, Output
from seemore.backbones.convlstm import ConvLSTM, ConvLSTMConfig
from seemore.config import EvaluationConfig
from seemore.data.moving_mnist import MovingMNIST, MovingMNISTConfig
from seemore.evaluate import (
    METRIC_NAMES,
    EvaluationJob,
    RunIdentity,
    evaluate,
    run_evaluation,
    write_evaluation,
)
from seemore.metrics import ALEXNET_WEIGHTS
from seemore.train import load_inference_model, save_inference_model

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
    assert list(rows[0]) == [
        "frame", "mse", "mae", "ssim", "psnr", "lpips",
        "mse_unclamped", "mae_unclamped", "ssim_openstl",
    ]  # fmt: skip
    assert [int(row["frame"]) for row in rows] == [1, 2, 3, 4]
    assert all(row["lpips"] == "" for row in rows)
    np.testing.assert_allclose([float(r["mse"]) for r in rows], result.per_frame["mse"])

    with np.load(out / "samples.npz") as samples:
        assert sorted(samples) == ["inputs", "predictions", "truth"]
        assert samples["predictions"].shape == (2, 4, 1, SIZE, SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_frame.csv", "samples.npz"]

    with pytest.raises(ValueError, match="metrics"):
        write_evaluation(result, out, {"metrics": {}})


def test_predictions_outside_the_unit_range_are_scored_in_both_conventions(
    no_lpips_weights: Path,
) -> None:
    """Raw predictions overshoot by 5: OpenSTL's MSE/MAE see the overshoot, the clamped
    SeeMore/PredRNN ones do not; both SSIM conventions are stored."""
    clips = ramp_clips(2)
    config = EvaluationConfig(batch_size=1, samples=0, lpips=False)
    result = evaluate(
        CopyLastFrame(geometry(), offset=5.0), clips, INPUT_FRAMES, config, torch.device("cpu")
    )
    truth = clips[:, INPUT_FRAMES:].astype(np.float64) / 255
    last_input = clips[:, INPUT_FRAMES - 1 : INPUT_FRAMES].astype(np.float64) / 255
    k = np.arange(1, 5)[None, :, None, None, None]
    raw = last_input + 5.0 * k  # the offset accumulates over the fed-back predictions
    np.testing.assert_allclose(
        result.per_frame["mse_unclamped"],
        ((raw - truth) ** 2).sum(axis=(2, 3, 4)).mean(axis=0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        result.per_frame["mae_unclamped"],
        np.abs(raw - truth).sum(axis=(2, 3, 4)).mean(axis=0),
        rtol=1e-5,
    )
    assert set(result.per_frame) == set(METRIC_NAMES) - {"lpips"}
    assert np.all(result.per_frame["ssim_openstl"] != result.per_frame["ssim"])


# --- run_evaluation: a prepared workspace and a model file as training writes them ---------

DATA = MovingMNISTConfig(input_frames=3, output_frames=4, image_size=16, test_clips=5)
MODEL = ConvLSTMConfig(num_hidden=[3, 4], filter_size=3, patch_size=2)
IDENTITY = RunIdentity("moving_mnist", "convlstm", "seemore", 1, "hash-of-stage-two")


def save_model(path: Path, **overrides: object) -> None:
    torch.manual_seed(0)
    network = ConvLSTM(MODEL, MovingMNIST.geometry(DATA))
    names = {
        "backbone_name": IDENTITY.backbone,
        "backbone": MODEL,
        "params_hash": IDENTITY.params_hash,
        "variant_name": IDENTITY.variant,
        "seed": IDENTITY.seed,
        **overrides,
    }
    stats = {
        "stage2": {
            "steps": 3,
            "seconds": 1.5,
            "seconds_per_step": 0.5,
            "precision": "fp32",
            "grad_scaler": False,
        }
    }
    save_inference_model(network, SimpleNamespace(**names), stats, path)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "moving_mnist"
    MovingMNIST.prepare(DATA, out.parent / "raw", out)
    return out


@pytest.fixture
def workspace(prepared: Path, tmp_path: Path, no_lpips_weights: Path) -> SimpleNamespace:
    data_dir = tmp_path / "prepared"
    shutil.copytree(prepared, data_dir)
    run_dir = tmp_path / "results" / "seed1"
    run_dir.mkdir(parents=True)
    save_model(run_dir / "model.pt")
    job = EvaluationJob(
        identity=IDENTITY,
        benchmark=MovingMNIST,
        data=DATA,
        evaluation=EvaluationConfig(batch_size=2, samples=1, lpips=True),
        prepared_dir=data_dir,
        model_path=run_dir / "model.pt",
        out_dir=run_dir,
        device=torch.device("cpu"),
        preset="embedded",
        recipe="seemore_authors",
        selected_checkpoint="best",
        evaluation_hash="hash-of-evaluation",
    )
    return SimpleNamespace(job=job, data_dir=data_dir, run_dir=run_dir)


def evaluate_workspace(workspace: SimpleNamespace) -> Path:
    network, saved = load_inference_model(workspace.job.model_path)
    return run_evaluation(workspace.job, network, saved)


def test_run_evaluation_records_what_was_scored(workspace: SimpleNamespace) -> None:
    path = evaluate_workspace(workspace)
    record = json.loads(path.read_text())
    model_bytes = (workspace.run_dir / "model.pt").read_bytes()
    assert record["provenance"]["params_hash"] == IDENTITY.params_hash
    assert record["provenance"]["model_sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert record["provenance"]["evaluation_hash"] == "hash-of-evaluation"
    assert record["recipe"] == "seemore_authors"
    assert record["protocol"] == "openstl"  # copied from meta.json
    assert record["checkpoint"] == {"selected": "best", "step": None, "file": "model.pt"}
    assert record["horizon"] == {"input_frames": 3, "output_frames": 4}
    assert record["test_clips"] == 5 and record["data"]["stand_in"] is True
    assert set(record["metrics"]) == set(METRIC_NAMES)
    assert set(record["metric_conventions"]) == set(METRIC_NAMES)
    assert record["reference_conventions"]["openstl"]["ssim"] == "ssim_openstl"
    assert record["metrics"]["lpips"] is None and ALEXNET_WEIGHTS in record["unavailable"]["lpips"]
    assert record["cost"]["train_seconds_per_step"] == {"stage2": 0.5}
    assert record["precision"] == {"stage2": "fp32"}  # copied from the model's stats
    assert record["grad_scaler"] == {"stage2": False}


def test_a_last_checkpoint_is_at_the_total_steps_trained(workspace: SimpleNamespace) -> None:
    workspace.job = dataclasses.replace(workspace.job, selected_checkpoint="last")
    record = json.loads(evaluate_workspace(workspace).read_text())
    assert record["checkpoint"] == {"selected": "last", "step": 3, "file": "model.pt"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"params_hash": "another-hash"},
            "params_hash is 'another-hash', expected 'hash-of-stage-two'",
        ),
        ({"seed": 2}, "seed is 2, expected 1"),
        ({"variant_name": "baseline"}, "variant is 'baseline', expected 'seemore'"),
    ],
)
def test_a_model_of_another_run_is_refused(
    workspace: SimpleNamespace, override: dict[str, object], message: str
) -> None:
    save_model(workspace.run_dir / "model.pt", **override)
    with pytest.raises(ValueError, match=message) as error:
        evaluate_workspace(workspace)
    assert str(workspace.run_dir / "model.pt") in str(error.value)
    assert not (workspace.run_dir / "metrics.json").exists()


def rewrite_test_split(data_dir: Path, change: str) -> None:
    path = data_dir / "test.npy"
    clips = np.load(path)
    if change == "float32 holding 0..255":
        clips = clips.astype(np.float32)
    elif change == "float16 above 1":
        clips = (clips.astype(np.float16) / 255 * 1.5).astype(np.float16)
    elif change == "float16 with NaN":
        clips = (clips.astype(np.float16) / 255).astype(np.float16)
        clips[2, 1, 0, 3, 3] = np.nan
    elif change == "shorter clips":
        clips = clips[:, :5]
    elif change == "other frame size":
        clips = np.ascontiguousarray(clips[..., :8, :8])
    np.save(path, clips)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("float32 holding 0..255", r"dtype float32; expected uint8 \(0..255\) or float16"),
        ("float16 above 1", r"values from 0 to 1\.\d+ in clips 0..4; expected float values in"),
        ("float16 with NaN", r"NaN values in clips 0..4; expected float values in \[0, 1\]"),
        ("shorter clips", r"shape \(5, 1, 16, 16\).*expected \(7, 1, 16, 16\): 3 input \+ 4"),
        ("other frame size", r"shape \(7, 1, 8, 8\).*expected \(7, 1, 16, 16\)"),
    ],
)  # fmt: skip
def test_test_data_of_the_wrong_dtype_range_or_length_is_refused(
    workspace: SimpleNamespace, change: str, message: str
) -> None:
    rewrite_test_split(workspace.data_dir, change)
    with pytest.raises(ValueError, match=message) as error:
        evaluate_workspace(workspace)
    assert str(workspace.data_dir / "test.npy") in str(error.value)
    assert not (workspace.run_dir / "metrics.json").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("source", "download", "source is 'download', but params.yaml says 'embedded'"),
        ("protocol", "predrnn", "protocol is 'predrnn', but params.yaml says 'openstl'"),
        ("image_size", 64, "image_size is 64, but test.npy has frames of width 16"),
        ("counts", {"test_clips": 9}, "counts.test_clips is 9, but test.npy holds 5 clips"),
    ],
)
def test_metadata_that_disagrees_with_the_data_is_refused(
    workspace: SimpleNamespace, key: str, value: object, message: str
) -> None:
    meta_path = workspace.data_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta[key] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message) as error:
        evaluate_workspace(workspace)
    assert str(meta_path) in str(error.value) and "re-run `seemore prepare`" in str(error.value)
    assert not (workspace.run_dir / "metrics.json").exists()
