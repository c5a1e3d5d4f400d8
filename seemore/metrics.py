"""Per-frame prediction metrics (DESIGN.md §6) on float clips `[N, T, C, H, W]` in [0, 1].

Each function returns one value per clip and frame, `[N, T]`; averaging over clips (and
then over frames) is the caller's job. Conventions, as behind the published tables:

- MSE, MAE: squared / absolute error summed over C*H*W of a frame (not the pixel mean).
- SSIM: scikit-image `structural_similarity` with `data_range=1`, channels as channel axis.
- PSNR: `10 log10(1 / m)` with `m` the frame's per-pixel mean squared error floored at
  `PSNR_MSE_FLOOR`, so identical frames score `PSNR_CAP_DB` (100 dB) instead of infinity
  and one perfect frame cannot turn an average infinite.
- LPIPS: the `lpips` package, AlexNet trunk (v0.1 linear layers), inputs mapped to
  [-1, 1], a gray frame replicated to 3 channels. It needs torchvision's ImageNet AlexNet
  weights in the torch hub cache; without them it is unavailable, never computed from
  random weights and never downloaded.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from seemore.data.download import sha256_file

PSNR_MSE_FLOOR = 1e-10
PSNR_CAP_DB = -10.0 * math.log10(PSNR_MSE_FLOOR)

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
# torch.hub names cached weights `<name>-<first 8 hex of their SHA-256>.pth`.
ALEXNET_SHA256_PREFIX = "7be5be79"
LPIPS_LINEAR_VERSION = "0.1"  # lpips v0.0 had an input-scaling bug


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed here; the message is the reason, for the report."""


def _check_pair(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape or prediction.ndim != 5:
        raise ValueError(
            f"metrics need two clips [N, T, C, H, W] of one shape; got {prediction.shape} "
            f"and {truth.shape}"
        )


def mse_per_frame(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Squared error summed over C*H*W, `[N, T]`."""
    _check_pair(prediction, truth)
    error = prediction.astype(np.float64) - truth.astype(np.float64)
    return np.sum(error**2, axis=(2, 3, 4))


def mae_per_frame(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Absolute error summed over C*H*W, `[N, T]`."""
    _check_pair(prediction, truth)
    error = prediction.astype(np.float64) - truth.astype(np.float64)
    return np.sum(np.abs(error), axis=(2, 3, 4))


def psnr_per_frame(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR in dB for a peak of 1, `[N, T]`; identical frames give `PSNR_CAP_DB`."""
    _check_pair(prediction, truth)
    pixels = np.prod(prediction.shape[2:])
    pixel_mse = mse_per_frame(prediction, truth) / pixels
    return -10.0 * np.log10(np.maximum(pixel_mse, PSNR_MSE_FLOOR))


def ssim_per_frame(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """SSIM of each frame, `[N, T]` (scikit-image defaults: 7x7 uniform window)."""
    _check_pair(prediction, truth)
    clips, frames, channels = prediction.shape[:3]
    scores = np.empty((clips, frames))
    for clip in range(clips):
        for frame in range(frames):
            predicted = prediction[clip, frame].astype(np.float64)
            true = truth[clip, frame].astype(np.float64)
            if channels == 1:
                scores[clip, frame] = structural_similarity(predicted[0], true[0], data_range=1.0)
            else:
                scores[clip, frame] = structural_similarity(
                    predicted, true, data_range=1.0, channel_axis=0
                )
    return scores


def alexnet_weights_path() -> Path:
    """Where torchvision keeps the ImageNet AlexNet weights (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


def lpips_linear_weights_path() -> Path:
    """The LPIPS linear-layer weights shipped inside the `lpips` package."""
    import lpips

    return Path(lpips.__file__).parent / "weights" / f"v{LPIPS_LINEAR_VERSION}" / "alex.pth"


class LPIPSScorer:
    """LPIPS (AlexNet) built from local files only. Construct with `load_lpips`."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        self.network = network.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(
        self, prediction: np.ndarray, truth: np.ndarray, batch_size: int = 64
    ) -> np.ndarray:
        """LPIPS of each frame, `[N, T]`."""
        _check_pair(prediction, truth)
        clips, frames, channels, height, width = prediction.shape
        flat_prediction = prediction.reshape(clips * frames, channels, height, width)
        flat_truth = truth.reshape(clips * frames, channels, height, width)
        scores = []
        for start in range(0, len(flat_prediction), batch_size):
            pair = [
                self._as_lpips_input(part[start : start + batch_size])
                for part in (flat_prediction, flat_truth)
            ]
            scores.append(self.network(*pair).flatten().float().cpu().numpy())
        return np.concatenate(scores).astype(np.float64).reshape(clips, frames)

    def _as_lpips_input(self, images: np.ndarray) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(images, dtype=np.float32), device=self.device)
        if tensor.shape[1] == 1:
            tensor = tensor.expand(-1, 3, -1, -1)
        return tensor * 2.0 - 1.0


def check_lpips_available(channels: int) -> None:
    """Raise `MetricUnavailable` with the reason when LPIPS cannot be computed here."""
    if channels not in (1, 3):
        raise MetricUnavailable(
            f"LPIPS is defined for gray or RGB images; these clips have {channels} channels"
        )
    weights = alexnet_weights_path()
    if not weights.is_file():
        raise MetricUnavailable(
            f"AlexNet weights {ALEXNET_WEIGHTS} not found in {weights.parent} (torch hub "
            "cache, $TORCH_HOME); put them there to compute LPIPS (nothing is downloaded)"
        )
    if not sha256_file(weights).startswith(ALEXNET_SHA256_PREFIX):
        raise MetricUnavailable(
            f"{weights}: SHA-256 does not start with {ALEXNET_SHA256_PREFIX}; the file is "
            "corrupt or not torchvision's AlexNet weights"
        )
    if not lpips_linear_weights_path().is_file():
        raise MetricUnavailable(
            f"the lpips package lacks its linear-layer weights {lpips_linear_weights_path()}"
        )


def _load_strict(module: torch.nn.Module, state: dict, source: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as error:
        raise MetricUnavailable(f"{source}: does not fit the LPIPS AlexNet: {error}") from None


def build_lpips_network(alexnet_path: Path, linear_path: Path) -> torch.nn.Module:
    """The lpips AlexNet network with every layer loaded strictly from the two files.

    It is built without any weights first (`pnet_rand=True`, `pretrained=False`: neither
    torchvision nor lpips reads or downloads anything). Checks no checksum: `load_lpips` does.
    """
    import lpips

    with warnings.catch_warnings():
        # lpips still passes torchvision's deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        network = lpips.LPIPS(
            net="alex",
            version=LPIPS_LINEAR_VERSION,
            pretrained=False,
            pnet_rand=True,
            verbose=False,
        )

    alexnet_state = torch.load(alexnet_path, map_location="cpu", weights_only=True)
    # The lpips trunk keeps AlexNet's `features.<i>` layers as `slice<k>.<i>`, same index i.
    trunk_state = {
        name: alexnet_state.get(f"features.{name.split('.', 1)[1]}")
        for name in network.net.state_dict()
    }
    missing = [name for name, tensor in trunk_state.items() if tensor is None]
    if missing:
        raise MetricUnavailable(f"{alexnet_path}: lacks the AlexNet features for {missing}")
    _load_strict(network.net, trunk_state, alexnet_path)

    linear_state = torch.load(linear_path, map_location="cpu", weights_only=True)
    for index, layer in enumerate(network.lins):
        prefix = f"lin{index}."
        layer_state = {
            name.removeprefix(prefix): tensor
            for name, tensor in linear_state.items()
            if name.startswith(prefix)
        }
        _load_strict(layer, layer_state, linear_path)
    return network


def load_lpips(channels: int, device: torch.device) -> LPIPSScorer:
    """LPIPS from the cached AlexNet weights and the package's linear layers, or
    `MetricUnavailable` with the reason."""
    check_lpips_available(channels)
    network = build_lpips_network(alexnet_weights_path(), lpips_linear_weights_path())
    return LPIPSScorer(network, device)
