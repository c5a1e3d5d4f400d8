"""Metric values on known inputs in each convention, the torch SSIM against scikit-image,
PSNR's cap, and LPIPS's weights: offline availability rules and the verified fetch."""

from __future__ import annotations

import hashlib
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from fixtures_results import moving_square
from skimage.metrics import structural_similarity

from seemore import metrics
from seemore.metrics import (
    ALEXNET_WEIGHTS,
    FETCH_FAILURE_SUFFIX,
    PSNR_CAP_DB,
    SSIM_CONVENTIONS,
    LPIPSScorer,
    MetricUnavailable,
    alexnet_weights_path,
    build_lpips_network,
    check_lpips_available,
    fetch_weights,
    frame_metrics,
    load_lpips,
    lpips_linear_weights_path,
    mae_per_frame,
    mse_per_frame,
    psnr_per_frame,
    quantize_like_predrnn,
    ssim_per_frame,
)

PREDRNN = SSIM_CONVENTIONS["predrnn"]
OPENSTL = SSIM_CONVENTIONS["openstl"]


def random_clips(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape).astype(np.float32))


def clip(frame: np.ndarray) -> torch.Tensor:
    """One frame `[H, W]` as a clip `[1, 1, 1, H, W]`."""
    return torch.from_numpy(np.asarray(frame, np.float32)).reshape(1, 1, 1, *frame.shape)


def test_identical_clips_score_perfectly() -> None:
    clips = random_clips((2, 3, 1, 16, 16))
    scores = frame_metrics(clips, clips)
    for name in ("mse", "mae", "mse_unclamped", "mae_unclamped"):
        assert torch.all(scores[name] == 0.0), name
    for name in ("ssim", "ssim_openstl"):
        torch.testing.assert_close(scores[name], torch.ones(2, 3, dtype=torch.float64))
    # Identical frames: the per-pixel MSE is floored, so PSNR is the documented cap.
    assert torch.all(scores["psnr"] == PSNR_CAP_DB)
    assert math.isclose(PSNR_CAP_DB, 100.0)


def test_hand_computed_errors_sum_over_pixels() -> None:
    prediction = clip(np.array([[0.0, 0.5], [1.0, 0.25]]))
    truth = clip(np.array([[0.0, 0.0], [0.5, 0.25]]))
    # Errors 0, 0.5, 0.5, 0: summed over the 4 pixels, not averaged.
    assert mse_per_frame(prediction, truth)[0, 0] == pytest.approx(0.5)
    assert mae_per_frame(prediction, truth)[0, 0] == pytest.approx(1.0)
    # Per-pixel MSE 0.5 / 4 = 1/8 -> 10 log10(8).
    assert psnr_per_frame(prediction, truth)[0, 0] == pytest.approx(10 * math.log10(8))


def test_clamped_and_unclamped_errors_differ_as_computed_by_hand() -> None:
    """OpenSTL scores the raw prediction, SeeMore/PredRNN the one clamped to [0, 1]."""
    raw = clip(np.full((8, 8), 1.5))
    raw[..., 0, 0] = -0.5
    truth = clip(np.full((8, 8), 0.75))
    scores = frame_metrics(raw, truth)
    # Raw: 63 pixels off by 0.75, one off by 1.25. Clamped: 63 off by 0.25, one by 0.75.
    assert scores["mse_unclamped"][0, 0] == pytest.approx(63 * 0.75**2 + 1.25**2)
    assert scores["mae_unclamped"][0, 0] == pytest.approx(63 * 0.75 + 1.25)
    assert scores["mse"][0, 0] == pytest.approx(63 * 0.25**2 + 0.75**2)
    assert scores["mae"][0, 0] == pytest.approx(63 * 0.25 + 0.75)
    assert scores["psnr"][0, 0] == pytest.approx(-10 * math.log10((63 * 0.0625 + 0.5625) / 64))


def single_window_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """SSIM of two 7x7 frames: one window position, sample (co)variances (ddof 1), as
    scikit-image's definition gives it; computed from the formula, not from any library."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = ((x - mx) * (y - my)).sum() / (x.size - 1)
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_the_two_ssim_conventions_differ_as_computed_by_hand() -> None:
    # Flat frames at 0.5 and 0.25: only the luminance term is left.
    # PredRNN: uint8 by truncation, 127 and 63, data range 255: C1 = 2.55^2.
    # OpenSTL: float frames, data range 2: C1 = 0.02^2.
    flat_x, flat_y = clip(np.full((7, 7), 0.5)), clip(np.full((7, 7), 0.25))
    c1 = 2.55**2
    predrnn = (2 * 127 * 63 + c1) / (127**2 + 63**2 + c1)
    openstl = (2 * 0.5 * 0.25 + 0.02**2) / (0.5**2 + 0.25**2 + 0.02**2)
    assert ssim_per_frame(flat_x, flat_y, PREDRNN)[0, 0] == pytest.approx(predrnn, abs=1e-12)
    assert ssim_per_frame(flat_x, flat_y, OPENSTL)[0, 0] == pytest.approx(openstl, abs=1e-12)
    assert predrnn == pytest.approx(0.796264, abs=1e-6)
    assert openstl == pytest.approx(0.800256, abs=1e-6)

    # A faint 3x3 square moved by one pixel (0.25 is 63 after truncation): with faint
    # structure the constants dominate, and OpenSTL's four times larger ones make its
    # SSIM clearly higher.
    x, y = np.zeros((7, 7)), np.zeros((7, 7))
    x[2:5, 2:5] = 0.25
    y[2:5, 3:6] = 0.25
    by_hand_predrnn = single_window_ssim(x * 252, y * 252, 255.0)  # 0.25 -> 63 = 0.25 * 252
    by_hand_openstl = single_window_ssim(x, y, 2.0)
    assert ssim_per_frame(clip(x), clip(y), PREDRNN)[0, 0] == pytest.approx(
        by_hand_predrnn, abs=1e-10
    )
    assert ssim_per_frame(clip(x), clip(y), OPENSTL)[0, 0] == pytest.approx(
        by_hand_openstl, abs=1e-10
    )
    assert by_hand_predrnn == pytest.approx(0.610431, abs=1e-6)
    assert by_hand_openstl == pytest.approx(0.656331, abs=1e-6)


def test_predrnn_quantization_is_numpy_uint8_truncation_of_float32() -> None:
    values = np.concatenate(
        [np.arange(256, dtype=np.float32) / 255, np.random.default_rng(0).random(10_000)]
    ).astype(np.float32)
    expected = np.uint8(values * 255)  # what their test loop does
    quantized = quantize_like_predrnn(torch.from_numpy(values)).numpy()
    np.testing.assert_array_equal(quantized, expected.astype(np.float32))


def skimage_ssim(prediction: np.ndarray, truth: np.ndarray, convention: str) -> np.ndarray:
    """scikit-image's SSIM per frame, called as each reference calls it."""
    clips, frames = prediction.shape[:2]
    scores = np.empty((clips, frames))
    for n in range(clips):
        for t in range(frames):
            if convention == "predrnn":
                a, b = np.uint8(prediction[n, t] * 255), np.uint8(truth[n, t] * 255)
                data_range = 255  # scikit-image's default for uint8
            else:
                # OpenSTL passes float frames without data_range: on its pinned
                # scikit-image that is the float dtype's range [-1, 1]; here explicitly.
                a, b = prediction[n, t].astype(np.float64), truth[n, t].astype(np.float64)
                data_range = 2.0
            scores[n, t] = structural_similarity(
                a.transpose(1, 2, 0), b.transpose(1, 2, 0), data_range=data_range, channel_axis=2
            )
    return scores


def structured_clips(channels: int) -> tuple[np.ndarray, np.ndarray]:
    truth = np.stack([moving_square(c, 4, size=24) for c in range(3)]).astype(np.float32) / 255
    truth = np.repeat(truth, channels, axis=2)
    # A prediction that lags by one pixel and blurs a little, plus mild noise.
    shifted = np.roll(truth, 1, axis=-1)
    blurred = (shifted + np.roll(shifted, 1, axis=-2)) / 2
    noise = 0.03 * np.random.default_rng(3).standard_normal(truth.shape)
    return np.clip(blurred + noise, 0, 1).astype(np.float32), truth


def flat_grey_clips(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform mid-grey frames 128/255 and 131/255: zero variance, where the variance's
    cancellation would show float32 window sums' rounding (1.4e-5 in OpenSTL's convention)."""
    shape = (1, 2, channels, 16, 16)
    return np.full(shape, 128 / 255, np.float32), np.full(shape, 131 / 255, np.float32)


@pytest.mark.parametrize("convention", ["predrnn", "openstl"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["random", "structured", "flat grey"])
def test_torch_ssim_equals_scikit_image(
    convention: str, channels: int, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 5 frames: chunk boundaries fall inside clips and a last chunk is partial.
    monkeypatch.setattr(metrics, "SSIM_CPU_CHUNK_FRAMES", 5)
    if kind == "random":
        prediction = random_clips((2, 3, channels, 20, 17), seed=1).numpy()
        truth = random_clips((2, 3, channels, 20, 17), seed=2).numpy()
    elif kind == "structured":
        prediction, truth = structured_clips(channels)
    else:
        prediction, truth = flat_grey_clips(channels)
    ours = ssim_per_frame(
        torch.from_numpy(prediction), torch.from_numpy(truth), SSIM_CONVENTIONS[convention]
    )
    reference = skimage_ssim(prediction, truth, convention)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-5)
    if kind == "structured":
        assert reference.min() > 0.3 and reference.max() < 0.99  # a meaningful regime


def test_metrics_are_per_clip_and_frame() -> None:
    truth = torch.zeros((2, 3, 2, 4, 4))
    prediction = truth.clone()
    prediction[1, 2] = 0.5  # one frame of one clip is off by 0.5 on all 32 values
    mse = mse_per_frame(prediction, truth)
    assert mse.shape == (2, 3)
    expected = torch.zeros((2, 3), dtype=torch.float64)
    expected[1, 2] = 32 * 0.25
    torch.testing.assert_close(mse, expected)
    assert mae_per_frame(prediction, truth)[1, 2] == pytest.approx(32 * 0.5)


def test_multichannel_ssim_is_the_mean_over_channels() -> None:
    prediction = random_clips((1, 2, 3, 16, 16), seed=1)
    truth = random_clips((1, 2, 3, 16, 16), seed=2)
    joint = ssim_per_frame(prediction, truth, OPENSTL)
    per_channel = torch.stack(
        [ssim_per_frame(prediction[:, :, [c]], truth[:, :, [c]], OPENSTL) for c in range(3)]
    ).mean(dim=0)
    torch.testing.assert_close(joint, per_channel)
    assert torch.all(joint < 0.5)  # unrelated noise is far from similar


def test_mismatched_shapes_and_tiny_frames_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\]"):
        mse_per_frame(torch.zeros((1, 2, 1, 4, 4)), torch.zeros((1, 3, 1, 4, 4)))
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_per_frame(torch.zeros((1, 1, 1, 6, 9)), torch.zeros((1, 1, 1, 6, 9)), PREDRNN)


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
    assert "seemore fetch-weights" in str(error.value)


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


def alexnet_shaped_file(path: Path) -> Path:
    """An AlexNet state dict of random values (the real weights are never downloaded)."""
    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()
    torch.save(state, path)
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_lpips_network_takes_every_layer_from_the_files_without_network_access(
    tmp_path: Path, no_network: None
) -> None:
    """The loader's layer mapping, with an AlexNet-shaped file of random values (so no
    LPIPS value is asserted here: only which tensors end up where)."""
    alexnet_file = alexnet_shaped_file(tmp_path / ALEXNET_WEIGHTS)
    features = {
        name.removeprefix("features."): tensor
        for name, tensor in torch.load(alexnet_file, weights_only=True).items()
        if name.startswith("features.")
    }

    network = build_lpips_network(alexnet_file, lpips_linear_weights_path())

    trunk = network.net.state_dict()
    assert len(trunk) == len(features) == 10
    for name, tensor in trunk.items():
        assert torch.equal(tensor, features[name.split(".", 1)[1]]), name
    linear = torch.load(lpips_linear_weights_path(), map_location="cpu", weights_only=True)
    for index, layer in enumerate(network.lins):
        assert torch.equal(layer.model[1].weight, linear[f"lin{index}.model.1.weight"])

    # Input plumbing: a gray frame is scored as the same frame replicated to RGB, and
    # batching (frames per network call) does not change a value.
    scorer = LPIPSScorer(network, torch.device("cpu"))
    gray = random_clips((2, 3, 1, 32, 32), seed=3)
    other = random_clips((2, 3, 1, 32, 32), seed=4)
    batched = scorer(gray, other)
    assert batched.shape == (2, 3) and batched.dtype == torch.float64
    torch.testing.assert_close(
        batched, scorer(gray.repeat(1, 1, 3, 1, 1), other.repeat(1, 1, 3, 1, 1))
    )
    torch.testing.assert_close(batched, scorer(gray, other, batch_size=2))
    torch.testing.assert_close(scorer(gray, gray), torch.zeros(2, 3, dtype=torch.float64))


def test_lpips_network_refuses_a_file_without_alexnet_features(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"classifier.1.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(MetricUnavailable, match="lacks the AlexNet features"):
        build_lpips_network(wrong, metrics.lpips_linear_weights_path())


def sha256_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_fetch_weights_from_a_file_url_verifies_and_moves_into_place(
    tmp_path: Path, no_network: None
) -> None:
    source = alexnet_shaped_file(tmp_path / "served.pth")
    target = tmp_path / "cache" / "alexnet-test.pth"
    assert fetch_weights(source.as_uri(), target, sha256_prefix(source), 5.0) == target
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["alexnet-test.pth"]
    # A verified copy in place is kept: no download is attempted.
    assert fetch_weights("file:///nowhere/at/all.pth", target, sha256_prefix(source), 5.0)


@pytest.mark.parametrize("case", ["wrong hash", "not alexnet", "unreachable"])
def test_fetch_weights_refuses_and_leaves_nothing_that_looks_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, case: str
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    target = alexnet_weights_path()
    if case == "wrong hash":
        source = alexnet_shaped_file(tmp_path / "served.pth")
        url, prefix, message = source.as_uri(), "7be5be79", "does not start with the published"
    elif case == "not alexnet":
        source = tmp_path / "served.pth"
        torch.save({"features.0.weight": torch.zeros(3)}, source)
        url, prefix, message = source.as_uri(), sha256_prefix(source), "not AlexNet weights"
    else:
        url, prefix, message = (tmp_path / "absent.pth").as_uri(), "7be5be79", "download failed"
    with pytest.raises(MetricUnavailable, match=message) as error:
        fetch_weights(url, target, prefix, 5.0)
    assert url in str(error.value) or str(target.parent) in str(error.value)
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ALEXNET_WEIGHTS + FETCH_FAILURE_SUFFIX
    ]
    # Evaluation then records LPIPS as unavailable with that reason.
    with pytest.raises(MetricUnavailable, match="fetch-weights` failed") as unavailable:
        check_lpips_available(1)
    assert message in str(unavailable.value)


def test_fetch_weights_command_fails_with_one_line_or_warns_when_allowed_offline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_network: None,
    capsys: pytest.CaptureFixture,
) -> None:
    from seemore.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    absent = (tmp_path / "absent.pth").as_uri()
    assert main(["fetch-weights", "--url", absent]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"seemore fetch-weights: error: {absent}: download failed")
    assert main(["fetch-weights", "--url", absent, "--allow-offline"]) == 0
    assert "LPIPS will be unavailable" in capsys.readouterr().out
    assert not alexnet_weights_path().exists()
