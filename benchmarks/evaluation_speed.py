"""Evaluation speed: today's torch path (every metric batched on the evaluation device, both
SSIM conventions) against the per-frame scikit-image path it replaced, end to end through
`evaluate()` on Moving MNIST-shaped test clips (uint8, 10 -> 10 frames, 64 x 64).

The replaced path is the library's own code at git revision LEGACY_REVISION
(seemore/metrics.py and seemore/evaluate.py read with `git show`), not a re-implementation.

Two networks: `last-frame` (repeats the last input frame; costs nothing, so the time is the
evaluation's own work: data, metrics, samples) and the embedded preset's `predrnn_v2` (the
network forward, identical in both paths, is then part of the time). LPIPS is off in both
(its weights are not on this machine). Each path runs `--repeats` times, interleaved; the
median is reported and extrapolated linearly to the 10,000 clips of mnist_test_seq.npy.

    nice -n 10 .venv/bin/python benchmarks/evaluation_speed.py [--clips 200] [--repeats 3]

Writes benchmarks/evaluation_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from method_setup import clock
from torch import Tensor

from seemore.backbones import BACKBONES
from seemore.backbones.base import Backbone, BackboneConfig, BackboneKind, ClipGeometry, Output
from seemore.config import EvaluationConfig, validate_params
from seemore.data.moving_mnist import MovingMNIST, MovingMNISTConfig
from seemore.evaluate import evaluate
from seemore.metrics import SSIM_CONVENTIONS, SSIM_WINDOW, ssim_per_frame
from seemore.recipes import compose_preset

LEGACY_REVISION = "48b26ad"
FULL_TEST_CLIPS = 10_000
HERE = Path(__file__).parent


class LastFrame(Backbone):
    """Step-wise: predicts every frame as the last frame it was given."""

    kind = BackboneKind.STEP_WISE
    config_class = BackboneConfig

    def forward(self, clip: Tensor, sampling_mask: Tensor | None = None) -> Output:
        last = clip[:, self.geometry.input_frames - 1 : self.geometry.input_frames]
        frames = torch.cat(
            [
                clip[:, 1 : self.geometry.input_frames],
                last.expand(-1, self.geometry.output_frames, -1, -1, -1),
            ],
            dim=1,
        )
        return Output(frames, frames, torch.zeros(()))

    def levels(self) -> list[tuple[str, list[str]]]:
        return []


def legacy_evaluate() -> ModuleType:
    """`evaluate` as it was at LEGACY_REVISION, importing that revision's metrics module."""
    modules = {}
    for name in ("metrics", "evaluate"):
        source = subprocess.run(
            ["git", "show", f"{LEGACY_REVISION}:seemore/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        ).stdout
        source = source.replace("from seemore.metrics import", "from legacy_metrics import")
        spec = importlib.util.spec_from_loader(f"legacy_{name}", loader=None)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[f"legacy_{name}"] = module
        exec(compile(source, f"{LEGACY_REVISION}:seemore/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    return modules["evaluate"]


def test_clips(count: int, workdir: Path) -> np.ndarray:
    config = MovingMNISTConfig(input_frames=10, output_frames=10, image_size=64, test_clips=count)
    MovingMNIST.prepare(config, workdir / "raw", workdir / "prepared")
    return MovingMNIST.test_clips(config, workdir / "prepared")


def ssim_operations(height: int, width: int) -> int:
    """Arithmetic operations of one frame's SSIM in one convention, as seemore/metrics.py
    does it: 5 per pixel to form x, y, x² + y², xy; (window - 1) adds per output value of
    each of the two separable passes over the 4 images; about 14 per SSIM-map value."""
    inner_h, inner_w = height - SSIM_WINDOW + 1, width - SSIM_WINDOW + 1
    filtering = 4 * (SSIM_WINDOW - 1) * (inner_h * width + inner_h * inner_w)
    return 5 * height * width + filtering + 14 * inner_h * inner_w


SSIMBatches = list[tuple[Tensor, Tensor]]
SSIMFunction = Callable[[Tensor, Tensor], Tensor]


def ssim_batches(clips: np.ndarray, batch: int, device: torch.device) -> SSIMBatches:
    """The predicted frames of `clips` (the last-frame prediction) and their truth, in
    evaluation batches."""
    frames = torch.from_numpy(clips).float().div(255.0)
    truth, prediction = frames[:, 10:], frames[:, 9:10].expand(-1, 10, -1, -1, -1)
    return [
        (prediction[s : s + batch].to(device), truth[s : s + batch].to(device))
        for s in range(0, len(clips), batch)
    ]


def ssim_functions() -> dict[str, SSIMFunction]:
    """Today's torch SSIM in each convention, eager and through `torch.compile` (inductor:
    the window sums and the SSIM map fused into generated loops, static shapes)."""
    eager: dict[str, SSIMFunction] = {
        f"torch {name}": lambda p, t, c=convention: ssim_per_frame(p, t, c)
        for name, convention in SSIM_CONVENTIONS.items()
    }
    compiled = {f"{name}, compiled": torch.compile(f, dynamic=False) for name, f in eager.items()}
    return {**eager, **compiled}


def ssim_seconds(
    legacy_metrics: ModuleType,
    batches: SSIMBatches,
    functions: dict[str, SSIMFunction],
    device: torch.device,
) -> dict[str, float]:
    """Time of SSIM alone over `batches` by each of `functions` and by the replaced
    per-frame scikit-image SSIM (one convention)."""
    seconds = {}
    now = clock(device.type)
    for name, function in functions.items():
        began = now()
        torch.stack([function(p, t).sum(dim=0) for p, t in batches]).cpu()
        seconds[name] = now() - began
    began = now()
    for p, t in batches:
        legacy_metrics.ssim_per_frame(p.cpu().numpy(), t.cpu().numpy())
    seconds[f"scikit-image ({LEGACY_REVISION})"] = now() - began
    return seconds


def networks(geometry: ClipGeometry) -> dict[str, Backbone]:
    params = validate_params(compose_preset("embedded"), "preset embedded")
    torch.manual_seed(0)
    predrnn = BACKBONES.get("predrnn_v2")(params.models["moving_mnist"]["predrnn_v2"], geometry)
    return {"last-frame": LastFrame(BackboneConfig(), geometry), "predrnn_v2": predrnn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    legacy = legacy_evaluate()
    config = EvaluationConfig(batch_size=16, lpips=False, samples=4)
    with tempfile.TemporaryDirectory() as workdir:
        clips = np.array(test_clips(args.clips, Path(workdir)))
    geometry = ClipGeometry(1, 64, 64, 10, 10)
    paths = {"torch (today)": evaluate, f"scikit-image ({LEGACY_REVISION})": legacy.evaluate}
    results: dict[str, Any] = {}
    for network_name, network in networks(geometry).items():
        network = network.to(device).eval()
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        outputs = {}
        for _ in range(args.repeats):
            for name, run in paths.items():
                began = clock(device.type)()
                outputs[name] = run(network, clips, 10, config, device)
                seconds[name].append(clock(device.type)() - began)
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        today, replaced = outputs["torch (today)"], outputs[f"scikit-image ({LEGACY_REVISION})"]
        results[network_name] = {
            "median_seconds": medians,
            "seconds_per_10000_clips": {
                name: value * FULL_TEST_CLIPS / args.clips for name, value in medians.items()
            },
            "speedup": medians[f"scikit-image ({LEGACY_REVISION})"] / medians["torch (today)"],
            "max_abs_difference": {
                "mse": float(np.max(np.abs(today.per_frame["mse"] - replaced.per_frame["mse"]))),
                # The replaced path took SSIM at data range 1 on float frames; today's `ssim`
                # is the SeeMore/PredRNN convention on truncated uint8 frames.
                "ssim_vs_unquantized": float(
                    np.max(np.abs(today.per_frame["ssim"] - replaced.per_frame["ssim"]))
                ),
            },
        }
    batches = ssim_batches(clips, config.batch_size, device)
    functions = ssim_functions()
    # The first pass compiles (one graph per batch shape); it is timed apart, on the wall.
    compile_seconds = {}
    for name, function in functions.items():
        if name.endswith("compiled"):
            began = time.perf_counter()
            for p, t in batches:
                function(p, t)
            compile_seconds[name] = time.perf_counter() - began
    ssim_runs = [
        ssim_seconds(sys.modules["legacy_metrics"], batches, functions, device)
        for _ in range(args.repeats)
    ]
    ssim_median = {name: statistics.median(run[name] for run in ssim_runs) for name in ssim_runs[0]}
    frames_scored = args.clips * 10
    operations = ssim_operations(64, 64)
    ssim_rates = {
        name: {
            "microseconds_per_frame": 1e6 * seconds / frames_scored,
            "operations_per_second": operations * frames_scored / seconds,
        }
        for name, seconds in ssim_median.items()
        if name.startswith("torch")
    }
    result = {
        "clips": args.clips,
        "frames_scored": frames_scored,
        "repeats": args.repeats,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "batch_size": config.batch_size,
        "networks": results,
        "ssim_alone_median_seconds": ssim_median,
        "ssim_operations_per_frame_and_convention": operations,
        "ssim_rates": ssim_rates,
        "ssim_first_compiled_pass_seconds": compile_seconds,
        "load_average": os.getloadavg()[0],
    }
    (HERE / "evaluation_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(
        f"| {network} | {path} | {entry['median_seconds'][path]:.3f} | "
        f"{entry['seconds_per_10000_clips'][path]:.1f} | "
        + (f"{entry['speedup']:.2f}×" if path.startswith("torch") else "1×")
        + " |"
        for network, entry in results.items()
        for path in paths
    )
    ssim_rows = "\n".join(
        f"| {name} | {seconds:.3f} | {1e6 * seconds / frames_scored:.0f} | "
        + (
            f"{ssim_rates[name]['operations_per_second'] / 1e9:.2f}"
            if name in ssim_rates
            else "n/a (scipy's running-sum filter, float64)"
        )
        + " |"
        for name, seconds in ssim_median.items()
    )
    differences = "; ".join(
        f"{network}: MSE {entry['max_abs_difference']['mse']:.2e}, SSIM "
        f"{entry['max_abs_difference']['ssim_vs_unquantized']:.2e}"
        for network, entry in results.items()
    )
    own_work = results["last-frame"]["speedup"]
    both = ssim_median["torch predrnn"] + ssim_median["torch openstl"]
    legacy_ssim = ssim_median[f"scikit-image ({LEGACY_REVISION})"]
    needed = 2 * operations * frames_scored / (legacy_ssim / 10)
    verdict = (
        f"Goal (issue 13): the evaluation at least 10× faster than the per-frame scikit-image "
        f"path on the same machine. Measured here: {own_work:.2f}× end to end on "
        f"{args.device} ({'met' if own_work >= 10 else 'NOT met'})."
    )
    if args.device == "cpu":
        verdict += (
            f" Why not on a CPU thread: one frame's SSIM in one convention is {operations:,} "
            "arithmetic operations (mostly the box filter's adds, see `ssim_operations`), "
            f"{2 * operations:,} for the two conventions today's path stores. The replaced "
            f"path's SSIM (one convention) took {1e6 * legacy_ssim / frames_scored:.0f} µs "
            "per frame; 10× faster with both conventions means "
            f"{1e6 * legacy_ssim / frames_scored / 10:.0f} µs per frame, i.e. "
            f"{needed / 1e9:.1f} G operations/s sustained. Torch's CPU kernels reach "
            + ", ".join(
                f"{rate['operations_per_second'] / 1e9:.2f} G/s ({name})"
                for name, rate in ssim_rates.items()
                if not name.endswith("compiled")
            )
            + ": each elementwise kernel streams whole images through memory and does one "
            "operation per value loaded (memory-bound, not compute-bound), and OpenSTL's "
            "convention needs float64 (float32 window sums miss scikit-image by 1.4e-5 on "
            "flat grey frames, tests/test_metrics.py), half the values per cache line. "
            f"Both conventions' SSIM take {both / legacy_ssim:.2f}× the replaced path's one "
            "SSIM here. Compiling does not close the gap: inductor's generated CPU loops reach "
            + ", ".join(
                f"{rate['operations_per_second'] / 1e9:.2f} G/s ({name})"
                for name, rate in ssim_rates.items()
                if name.endswith("compiled")
            )
            + " after a first pass of "
            + ", ".join(f"{value:.0f} s" for value in compile_seconds.values())
            + " (compiling, wall), longer than the whole replaced evaluation of the full "
            f"test set ({legacy_ssim * FULL_TEST_CLIPS / args.clips:.0f} s of SSIM). Only a "
            "hand-fused native kernel (every window sum and the SSIM map in one pass over "
            "cached rows) could approach that rate on a CPU thread. On a GPU the same "
            "script runs unchanged: each metric of a batch is a few dozen kernels over every "
            "frame of every clip at once (no host loop over frames, per-frame sums kept on "
            "the device, one read at the end), so its time is kernel launches plus a few MB "
            "of memory traffic per frame at TB/s; it is expected to be far past 10×, but it "
            "is NOT measured here (no GPU). Re-run the script on a CUDA device for that figure."
        )
    unit = "CPU s" if device.type == "cpu" else "s"
    markdown = (
        "# Evaluation speed: torch on the device vs per-frame scikit-image\n\n"
        f"`evaluate()` end to end on {args.clips} Moving MNIST-shaped test clips (embedded "
        f"stand-in, uint8, 10 → 10 frames, 64×64: {frames_scored} scored frames), batch "
        f"{config.batch_size}, LPIPS off, {args.device}, {args.threads} thread(s), "
        f"{result['processor']}, torch {torch.__version__}; median of {args.repeats} "
        f"interleaved runs, `nice -n 10`, load average {result['load_average']:.1f} at the end "
        "(times on the CPU are this process's CPU seconds, which other processes' load does "
        "not inflate as it does wall time). Today's "
        "path computes more (both SSIM conventions, clamped and unclamped MSE/MAE) than the "
        f"replaced one (the library at {LEGACY_REVISION}: one SSIM per frame with "
        "scikit-image).\n\n"
        f"| network | path | median {unit} | s per 10,000 clips (extrapolated) | speed-up |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "`last-frame` costs nothing, so its row is the evaluation's own work; with "
        "`predrnn_v2` the network forward (the same in both paths, on the CPU here) is part "
        "of the time.\n\n"
        f"Where the time goes: SSIM alone on the same {frames_scored} frames, in batches of "
        f"{config.batch_size} clips (median of {args.repeats}); operations counted as "
        "`ssim_operations` does.\n\n"
        f"| SSIM | {unit} | µs per frame | G operations/s |\n|---|---|---|---|\n"
        f"{ssim_rows}\n\n"
        f"{verdict}\n\n"
        f"Largest per-frame difference between the two paths: {differences}. The MSE agrees "
        "to float precision; the SSIM difference is the SeeMore/PredRNN uint8 truncation, "
        "which today's `ssim` reproduces and the replaced path did not.\n\n"
        "Command: `nice -n 10 .venv/bin/python benchmarks/evaluation_speed.py "
        f"--clips {args.clips} --repeats {args.repeats} --threads {args.threads}`\n"
    )
    (HERE / "evaluation_speed.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
