"""Per-frame prediction metrics (DESIGN.md §6), in torch on the evaluation device.

Every function takes clips `[N, T, C, H, W]` (torch tensors, frames in [0, 1] except an
unclamped prediction) and returns one float64 value per clip and frame, `[N, T]`;
averaging over clips and frames is the caller's job.

References disagree on conventions, so each metric is stored in each reference's
convention (`METRICS` lists them; `REFERENCE_CONVENTIONS` says which key a reference's
published number is compared with):

- `mse`, `mae`: squared / absolute error summed over C*H*W of a frame (not the pixel mean)
  on the prediction clamped to [0, 1], as the SeeMore/PredRNN code does.
  `mse_unclamped`, `mae_unclamped`: the same sums on the raw prediction, as OpenSTL's
  `metric()` computes them (it clamps only afterwards, for SSIM, PSNR and LPIPS).
- `ssim`: the SeeMore/PredRNN convention. Their test loop turns both frames into uint8 by
  truncation (`np.uint8(255 x)`, after clamping the prediction) and calls scikit-image's
  `structural_similarity` with its uint8 default `data_range=255`, i.e. data range 1 on
  [0, 1] frames quantized that way.
  `ssim_openstl`: OpenSTL's convention: float frames (clamped prediction) and no
  `data_range`, which its pinned scikit-image (<= 0.19.3) takes from the float dtype's
  nominal range [-1, 1]: data range 2. (scikit-image >= 0.20 refuses float input without
  `data_range`.) Both use scikit-image's defaults otherwise: a 7x7 uniform window, sample
  covariance (N / (N - 1)), K1 = 0.01, K2 = 0.03, the mean over the window positions fully
  inside the frame, channels averaged.
- `psnr`: `10 log10(1 / m)` on the clamped prediction, `m` the frame's per-pixel MSE
  floored at `PSNR_MSE_FLOOR`, so identical frames score `PSNR_CAP_DB` (100 dB) instead of
  infinity (OpenSTL's formula, which returns inf there).
- `lpips`: the `lpips` package, AlexNet trunk (v0.1 linear layers), the clamped prediction
  mapped to [-1, 1] as OpenSTL does, a gray frame replicated to 3 channels. It needs
  torchvision's ImageNet AlexNet weights in the torch hub cache (`seemore fetch-weights`
  puts them there); without them it is unavailable, never computed from random weights.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seemore.data.download import sha256_file

PSNR_MSE_FLOOR = 1e-10
PSNR_CAP_DB = -10.0 * math.log10(PSNR_MSE_FLOOR)

SSIM_WINDOW = 7  # scikit-image's default side of the uniform window
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_CPU_CHUNK_FRAMES = 16  # frames scored together on a CPU: their float64 images fit in L2

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
# torchvision's AlexNet_Weights.IMAGENET1K_V1.url
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_WEIGHTS}"
# torchvision publishes a weights file's hash in its name, `<name>-<first 8 hex of its
# SHA-256>.pth`; torch.hub.load_state_dict_from_url(check_hash=True) takes that prefix from
# the name and compares it with the downloaded file's SHA-256. It is the only hash published.
ALEXNET_SHA256_PREFIX = "7be5be79"
FETCH_TIMEOUT_S = 60.0
# Beside the weights: why the last `seemore fetch-weights` could not put them there.
FETCH_FAILURE_SUFFIX = ".fetch-failed"
LPIPS_LINEAR_VERSION = "0.1"  # lpips v0.0 had an input-scaling bug


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed here; the message is the reason, for the report."""


@dataclass(frozen=True)
class SSIMConvention:
    """How a reference calls scikit-image's SSIM: on uint8 frames made by truncating 255 x
    (`quantize`), and with which data range (in the units of the frames it is given)."""

    quantize: bool
    data_range: float


SSIM_CONVENTIONS = {
    "predrnn": SSIMConvention(quantize=True, data_range=255.0),
    "openstl": SSIMConvention(quantize=False, data_range=2.0),
}


def _check_pair(prediction: Tensor, truth: Tensor) -> None:
    if prediction.shape != truth.shape or prediction.ndim != 5:
        raise ValueError(
            "metrics need two clips [N, T, C, H, W] of one shape; got "
            f"{tuple(prediction.shape)} and {tuple(truth.shape)}"
        )


def error_sums(prediction: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Squared and absolute error summed over C*H*W, `[N, T]` each, float64, from one
    difference (float32 frames are promoted exactly)."""
    _check_pair(prediction, truth)
    difference = prediction - truth.double()
    return difference.square().sum(dim=(2, 3, 4)), difference.abs_().sum(dim=(2, 3, 4))


def mse_per_frame(prediction: Tensor, truth: Tensor) -> Tensor:
    """Squared error summed over C*H*W, `[N, T]`."""
    return error_sums(prediction, truth)[0]


def mae_per_frame(prediction: Tensor, truth: Tensor) -> Tensor:
    """Absolute error summed over C*H*W, `[N, T]`."""
    return error_sums(prediction, truth)[1]


def psnr_from_squared_error(squared_error: Tensor, values_per_frame: int) -> Tensor:
    """PSNR in dB for a peak of 1 from per-frame squared-error sums; identical frames give
    `PSNR_CAP_DB`."""
    pixel_mse = squared_error / values_per_frame
    return -10.0 * torch.log10(pixel_mse.clamp(min=PSNR_MSE_FLOOR))


def psnr_per_frame(prediction: Tensor, truth: Tensor) -> Tensor:
    """PSNR in dB for a peak of 1, `[N, T]`; identical frames give `PSNR_CAP_DB`."""
    return psnr_from_squared_error(mse_per_frame(prediction, truth), prediction[0, 0].numel())


def quantize_like_predrnn(frames: Tensor) -> Tensor:
    """`np.uint8(frames * 255)` of float32 frames in [0, 1]: the product in float32, then
    truncated (so a float32 u/255 can come back as u - 1, exactly as in their code)."""
    return torch.floor(frames.float() * 255.0)


def ssim_per_frame(prediction: Tensor, truth: Tensor, convention: SSIMConvention) -> Tensor:
    """Mean SSIM of each frame, `[N, T]`, as scikit-image's `structural_similarity` with a
    `SSIM_WINDOW` uniform window computes it (channels averaged).

    Frames of every clip are scored together, `SSIM_CPU_CHUNK_FRAMES` at a time on a CPU
    (their filtered images then stay in cache; on a GPU all at once)."""
    _check_pair(prediction, truth)
    clips, frames, channels, height, width = prediction.shape
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    x = prediction.reshape(-1, height, width)
    y = truth.reshape(-1, height, width)
    chunk = SSIM_CPU_CHUNK_FRAMES if x.device.type == "cpu" else len(x)
    scores = torch.cat(
        [
            _mean_ssim(x[start : start + chunk], y[start : start + chunk], convention)
            for start in range(0, len(x), chunk)
        ]
    )
    return scores.reshape(clips, frames, channels).mean(dim=2)


def _mean_ssim(x: Tensor, y: Tensor, convention: SSIMConvention) -> Tensor:
    """Mean SSIM of each image pair `[B, H, W]`, float64, from the window sums S of x, y,
    x² + y² and xy: with n pixels a window, mean = S / n and scikit-image's sample
    (co)variances (n S_ab - S_a S_b) / (n (n - 1)), its formula

        (2 mx my + C1) (2 cov + C2) / ((mx² + my² + C1) (vx + vy + C2))

    is, multiplied through by n² (first factors) and n (n - 1) (second factors),

        (2 P + C1 n²) (2 (n S_xy - P) + C2 n (n - 1)) / ((Q + C1 n²) (n S_xx+yy - Q + C2 n (n - 1)))

    with P = S_x S_y, Q = S_x² + S_y²: four filtered images instead of five."""
    if convention.quantize:
        # Truncated 255·x values are integers 0..255: every window sum of them, of x² + y²
        # and of xy (at most 49 · 2 · 255² < 2^24) is exact in float32.
        x, y = quantize_like_predrnn(x), quantize_like_predrnn(y)
    else:
        # Float frames: float32 sums would leave ~1e-7 errors in the second moments, which
        # the variance (a difference of nearly equal terms) amplifies past 1e-5 on flat
        # mid-grey regions; float64 keeps them at ~1e-15.
        x, y = x.double(), y.double()
    images = torch.empty((4, *x.shape), dtype=x.dtype, device=x.device)
    images[0], images[1] = x, y
    torch.mul(x, x, out=images[2]).addcmul_(y, y)
    torch.mul(x, y, out=images[3])
    sums = _window_sums(images).double()
    sum_x, sum_y, sum_squares, sum_xy = sums
    n = SSIM_WINDOW**2
    c1 = (SSIM_K1 * convention.data_range) ** 2 * n * n
    c2 = (SSIM_K2 * convention.data_range) ** 2 * n * (n - 1)
    p = sum_x * sum_y
    q = torch.addcmul(sum_x * sum_x, sum_y, sum_y)
    numerator = (2 * p + c1).mul_(sum_xy.mul_(n).sub_(p).mul_(2).add_(c2))
    denominator = (q + c1).mul_(sum_squares.mul_(n).sub_(q).add_(c2))
    return numerator.div_(denominator).mean(dim=(1, 2))


def _window_sums(images: Tensor) -> Tensor:
    """Sum of every SSIM_WINDOW x SSIM_WINDOW window fully inside the frame (the positions
    scikit-image keeps after cropping (win - 1) / 2 pixels at each border, whatever its
    padding), over the last two axes: separable, the window's shifted slices added along
    H, then along W (faster on a CPU than running sums, and exact for small integers)."""
    for axis in (-2, -1):
        count = images.shape[axis] - SSIM_WINDOW + 1
        total = images.narrow(axis, 0, count).clone()
        for offset in range(1, SSIM_WINDOW):
            total.add_(images.narrow(axis, offset, count))
        images = total
    return images


@dataclass(frozen=True)
class Metric:
    """One stored metric: its label, direction and convention (one line for the report)."""

    label: str
    lower_is_better: bool
    convention: str


METRICS: dict[str, Metric] = {
    "mse": Metric(
        "MSE",
        True,
        "squared error summed over C×H×W per frame, prediction clamped to [0, 1] (SeeMore/PredRNN)",
    ),
    "mae": Metric(
        "MAE",
        True,
        "absolute error summed over C×H×W per frame, prediction clamped to [0, 1] "
        "(SeeMore/PredRNN)",
    ),
    "ssim": Metric(
        "SSIM",
        False,
        "scikit-image SSIM on uint8 frames truncated from 255·x, data_range 255 (= 1 on "
        "[0, 1] frames), 7×7 uniform window (SeeMore/PredRNN)",
    ),
    "psnr": Metric(
        "PSNR",
        False,
        "10·log10(1 / per-pixel MSE) per frame on the clamped prediction, MSE floored at "
        f"1e-10 ({PSNR_CAP_DB:.0f} dB cap) (OpenSTL's formula)",
    ),
    "lpips": Metric(
        "LPIPS",
        True,
        "lpips AlexNet v0.1, clamped prediction mapped to [-1, 1], gray replicated to RGB "
        "(OpenSTL)",
    ),
    "mse_unclamped": Metric(
        "MSE unclamped",
        True,
        "squared error summed over C×H×W per frame on the raw prediction (OpenSTL)",
    ),
    "mae_unclamped": Metric(
        "MAE unclamped",
        True,
        "absolute error summed over C×H×W per frame on the raw prediction (OpenSTL)",
    ),
    "ssim_openstl": Metric(
        "SSIM OpenSTL",
        False,
        "scikit-image ≤ 0.19.3 SSIM on float frames without data_range, i.e. data_range 2, "
        "clamped prediction, 7×7 uniform window (OpenSTL)",
    ),
}


def frame_metrics(raw: Tensor, truth: Tensor) -> dict[str, Tensor]:
    """Every metric of `METRICS` but LPIPS, `[N, T]` each, from the raw prediction."""
    clamped = raw.clamp(0.0, 1.0)
    squared, absolute = error_sums(clamped, truth)
    squared_unclamped, absolute_unclamped = error_sums(raw, truth)
    return {
        "mse": squared,
        "mae": absolute,
        "ssim": ssim_per_frame(clamped, truth, SSIM_CONVENTIONS["predrnn"]),
        "psnr": psnr_from_squared_error(squared, raw[0, 0].numel()),
        "mse_unclamped": squared_unclamped,
        "mae_unclamped": absolute_unclamped,
        "ssim_openstl": ssim_per_frame(clamped, truth, SSIM_CONVENTIONS["openstl"]),
    }


# Which stored key each reference's published metric is compared with; a metric a
# reference computes differently from every stored key is absent (with the reason).
REFERENCE_CONVENTIONS: dict[str, dict[str, str]] = {
    "openstl": {
        "mse": "mse_unclamped",
        "mae": "mae_unclamped",
        "ssim": "ssim_openstl",
        "psnr": "psnr",
        "lpips": "lpips",
    },
    "predrnn": {"mse": "mse", "mae": "mae", "ssim": "ssim"},
}
REFERENCE_RESIDUALS = {
    "openstl": (
        "OpenSTL's scikit-image 0.19 computes SSIM in float32 for float32 input (seemore: "
        "float64; about 2e-8 apart on test frames); its PSNR of an exactly reproduced frame "
        "is infinite (seemore: 100 dB)."
    ),
    "predrnn": (
        "The SeeMore/PredRNN code computes PSNR on the truncated uint8 frames and feeds "
        "LPIPS [0, 1] frames instead of [-1, 1]; seemore stores neither variant."
    ),
}


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
    def __call__(self, prediction: Tensor, truth: Tensor, batch_size: int = 256) -> Tensor:
        """LPIPS of each frame, `[N, T]` (float64, on the scorer's device), in batches of
        `batch_size` frames."""
        _check_pair(prediction, truth)
        clips, frames = prediction.shape[:2]
        flat_prediction = prediction.flatten(0, 1)
        flat_truth = truth.flatten(0, 1)
        scores = [
            self.network(
                self._as_lpips_input(flat_prediction[start : start + batch_size]),
                self._as_lpips_input(flat_truth[start : start + batch_size]),
            ).flatten()
            for start in range(0, len(flat_prediction), batch_size)
        ]
        return torch.cat(scores).double().reshape(clips, frames)

    def _as_lpips_input(self, images: Tensor) -> Tensor:
        images = images.to(self.device, torch.float32)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images * 2.0 - 1.0


def check_lpips_available(channels: int) -> None:
    """Raise `MetricUnavailable` with the reason when LPIPS cannot be computed here."""
    if channels not in (1, 3):
        raise MetricUnavailable(
            f"LPIPS is defined for gray or RGB images; these clips have {channels} channels"
        )
    weights = alexnet_weights_path()
    if not weights.is_file():
        failure = weights.with_name(weights.name + FETCH_FAILURE_SUFFIX)
        why = (
            f"`seemore fetch-weights` failed: {failure.read_text().strip()}"
            if failure.is_file()
            else "run `seemore fetch-weights` with a network to put them there"
        )
        raise MetricUnavailable(
            f"AlexNet weights {ALEXNET_WEIGHTS} not found in {weights.parent} (torch hub "
            f"cache, $TORCH_HOME); {why}"
        )
    if not sha256_file(weights).startswith(ALEXNET_SHA256_PREFIX):
        raise MetricUnavailable(
            f"{weights}: SHA-256 does not start with {ALEXNET_SHA256_PREFIX}; the file is "
            "corrupt or not torchvision's AlexNet weights (delete it and run "
            "`seemore fetch-weights`)"
        )
    if not lpips_linear_weights_path().is_file():
        raise MetricUnavailable(
            f"the lpips package lacks its linear-layer weights {lpips_linear_weights_path()}"
        )


def check_alexnet_state(path: Path) -> None:
    """Refuse a file that is not an AlexNet state dict (every `features.*` tensor of
    torchvision's AlexNet, with its shape), loading it without running code."""
    import torchvision

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is refused the same way
        raise MetricUnavailable(f"{path}: not a readable PyTorch state dict ({error})") from None
    with torch.device("meta"):
        expected = torchvision.models.alexnet().features.state_dict()
    for name, tensor in expected.items():
        found = state.get(f"features.{name}") if isinstance(state, dict) else None
        if not isinstance(found, Tensor) or found.shape != tensor.shape:
            raise MetricUnavailable(
                f"{path}: features.{name} missing or of the wrong shape; not AlexNet weights"
            )


def fetch_weights(url: str, target: Path, sha256_prefix: str, timeout: float) -> Path:
    """Download `url` to `target`, streamed to a temp file beside it, and move it into place
    only when its SHA-256 starts with `sha256_prefix` (torchvision's check) and it holds
    AlexNet's features. A valid `target` already there is kept without any download; on
    failure nothing is left and the reason is written beside `target` (for evaluation)."""
    failure = target.with_name(target.name + FETCH_FAILURE_SUFFIX)
    try:
        if target.is_file() and sha256_file(target).startswith(sha256_prefix):
            check_alexnet_state(target)
        else:
            _download_verified(url, target, sha256_prefix, timeout)
    except MetricUnavailable as error:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{error}\n")
        raise
    failure.unlink(missing_ok=True)
    return target


def _download_verified(url: str, target: Path, sha256_prefix: str, timeout: float) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(handle, "wb") as out,
                urllib.request.urlopen(url, timeout=timeout) as response,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, ValueError) as error:  # URLError, timeouts and ENOSPC are OSErrors
            raise MetricUnavailable(f"{url}: download failed ({error})") from None
        if not digest.hexdigest().startswith(sha256_prefix):
            raise MetricUnavailable(
                f"{url}: SHA-256 {digest.hexdigest()} does not start with the published "
                f"{sha256_prefix}; nothing was kept"
            )
        check_alexnet_state(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


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
