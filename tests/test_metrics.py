"""Metric values on known inputs, PSNR's cap, and LPIPS's offline availability rules."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from seemore import metrics
from seemore.metrics import (
    ALEXNET_WEIGHTS,
    PSNR_CAP_DB,
    LPIPSScorer,
    MetricUnavailable,
    alexnet_weights_path,
    build_lpips_network,
    check_lpips_available,
    load_lpips,
    lpips_linear_weights_path,
    mae_per_frame,
    mse_per_frame,
    psnr_per_frame,
    ssim_per_frame,
)


def random_clips(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_identical_clips_score_perfectly() -> None:
    clips = random_clips((2, 3, 1, 16, 16))
    assert np.all(mse_per_frame(clips, clips) == 0.0)
    assert np.all(mae_per_frame(clips, clips) == 0.0)
    np.testing.assert_allclose(ssim_per_frame(clips, clips), 1.0)
    # Identical frames: the per-pixel MSE is floored, so PSNR is the documented cap.
    assert np.all(psnr_per_frame(clips, clips) == PSNR_CAP_DB)
    assert math.isclose(PSNR_CAP_DB, 100.0)


def test_hand_computed_errors_sum_over_pixels() -> None:
    prediction = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32).reshape(1, 1, 1, 2, 2)
    truth = np.array([[0.0, 0.0], [0.5, 0.25]], np.float32).reshape(1, 1, 1, 2, 2)
    # Errors 0, 0.5, 0.5, 0: summed over the 4 pixels, not averaged.
    assert mse_per_frame(prediction, truth)[0, 0] == pytest.approx(0.5)
    assert mae_per_frame(prediction, truth)[0, 0] == pytest.approx(1.0)
    # Per-pixel MSE 0.5 / 4 = 1/8 -> 10 log10(8).
    assert psnr_per_frame(prediction, truth)[0, 0] == pytest.approx(10 * math.log10(8))


def test_metrics_are_per_clip_and_frame() -> None:
    truth = np.zeros((2, 3, 2, 4, 4), np.float32)
    prediction = truth.copy()
    prediction[1, 2] = 0.5  # one frame of one clip is off by 0.5 on all 32 values
    mse = mse_per_frame(prediction, truth)
    assert mse.shape == (2, 3)
    expected = np.zeros((2, 3))
    expected[1, 2] = 32 * 0.25
    np.testing.assert_allclose(mse, expected)
    np.testing.assert_allclose(mae_per_frame(prediction, truth)[1, 2], 32 * 0.5)


def test_multichannel_ssim_is_the_mean_over_channels() -> None:
    prediction = random_clips((1, 2, 3, 16, 16), seed=1)
    truth = random_clips((1, 2, 3, 16, 16), seed=2)
    joint = ssim_per_frame(prediction, truth)
    per_channel = np.mean(
        [ssim_per_frame(prediction[:, :, [c]], truth[:, :, [c]]) for c in range(3)], axis=0
    )
    np.testing.assert_allclose(joint, per_channel, rtol=1e-6)
    assert np.all(joint < 0.5)  # unrelated noise is far from similar


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\]"):
        mse_per_frame(np.zeros((1, 2, 1, 4, 4)), np.zeros((1, 3, 1, 4, 4)))


def test_lpips_weights_are_looked_up_in_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert alexnet_weights_path() == tmp_path / "hub" / "checkpoints" / ALEXNET_WEIGHTS
    assert ALEXNET_WEIGHTS == "alexnet-owt-7be5be79.pth"


def test_lpips_unavailable_without_weights_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match=ALEXNET_WEIGHTS) as error:
        load_lpips(1, torch.device("cpu"))
    assert str(tmp_path / "hub" / "checkpoints") in str(error.value)


def test_lpips_refuses_a_weights_file_with_the_wrong_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    alexnet_weights_path().parent.mkdir(parents=True)
    alexnet_weights_path().write_bytes(b"not the AlexNet weights")
    with pytest.raises(MetricUnavailable, match="SHA-256"):
        check_lpips_available(3)


def test_lpips_unavailable_for_two_channel_fields() -> None:
    with pytest.raises(MetricUnavailable, match="2 channels"):
        check_lpips_available(2)


def test_lpips_linear_weights_ship_with_the_package() -> None:
    assert lpips_linear_weights_path().is_file()


def test_lpips_network_takes_every_layer_from_the_files_without_network_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's layer mapping, with an AlexNet-shaped file of random values (so no
    LPIPS value is asserted here: only which tensors end up where)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("LPIPS construction tried to reach the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    torch.manual_seed(0)
    features = torchvision.models.alexnet().features.state_dict()
    alexnet_file = tmp_path / ALEXNET_WEIGHTS
    torch.save({f"features.{name}": tensor for name, tensor in features.items()}, alexnet_file)

    network = build_lpips_network(alexnet_file, lpips_linear_weights_path())

    trunk = network.net.state_dict()
    assert len(trunk) == len(features) == 10
    for name, tensor in trunk.items():
        assert torch.equal(tensor, features[name.split(".", 1)[1]]), name
    linear = torch.load(lpips_linear_weights_path(), map_location="cpu", weights_only=True)
    for index, layer in enumerate(network.lins):
        assert torch.equal(layer.model[1].weight, linear[f"lin{index}.model.1.weight"])

    # Input plumbing: a gray frame is scored as the same frame replicated to RGB.
    scorer = LPIPSScorer(network, torch.device("cpu"))
    gray = random_clips((1, 2, 1, 32, 32), seed=3)
    other = random_clips((1, 2, 1, 32, 32), seed=4)
    np.testing.assert_allclose(
        scorer(gray, other), scorer(gray.repeat(3, axis=2), other.repeat(3, axis=2)), rtol=1e-5
    )
    np.testing.assert_allclose(scorer(gray, gray), 0.0, atol=1e-7)


def test_lpips_network_refuses_a_file_without_alexnet_features(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"classifier.1.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(MetricUnavailable, match="lacks the AlexNet features"):
        build_lpips_network(wrong, metrics.lpips_linear_weights_path())
