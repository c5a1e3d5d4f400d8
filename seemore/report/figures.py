"""Figures of the report as inline PNG data URIs (the page must load with no network)."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from seemore.report.collect import DatasetRuns, Run

MAX_STRIP_FRAMES = 10
STRIP_GAP = 2  # pixels between frames of a strip
PLOT_DPI = 100


def _label(text: str) -> str:
    # Names come from params.yaml: keep matplotlib from reading `$...$` as mathtext.
    return text.replace("$", r"\$")


def figure_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    # The object-oriented Figure renders with Agg without touching pyplot's global state.
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _subplots(count: int, width: float = 5.0, height: float = 3.4) -> tuple[Figure, list]:
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    flat = list(axes.flat)
    for unused in flat[count:]:
        unused.set_visible(False)
    return figure, flat[:count]


def _finish_axis(
    axis: Axes, backbone: str, xlabel: str, ylabel: str, log_scale: bool = False
) -> None:
    """A backbone's panel: title, axis labels, grid, and a legend when a line has a label."""
    axis.set_title(_label(backbone))
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if log_scale:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small")


def _color(index: int) -> str:
    return f"C{index % 10}"


def per_frame_plot(dataset: DatasetRuns, metric: str, label: str) -> str | None:
    """Metric against horizon, one panel per backbone, one line per variant (mean over
    seeds, band ± one std when there are several seeds). None when no run has the metric."""
    figure, axes = _subplots(len(dataset.backbones))
    drawn = False
    for axis, backbone in zip(axes, dataset.backbones, strict=True):
        for index, variant in enumerate(dataset.variants):
            curves = [
                run.per_frame[metric]
                for run in dataset.cell(backbone, variant)
                if metric in run.per_frame and not np.all(np.isnan(run.per_frame[metric]))
            ]
            if not curves or len({len(curve) for curve in curves}) != 1:
                continue
            stacked = np.vstack(curves)
            frames = np.arange(1, stacked.shape[1] + 1)
            mean = stacked.mean(axis=0)
            axis.plot(frames, mean, marker=".", color=_color(index), label=_label(variant))
            if len(curves) > 1:
                spread = stacked.std(axis=0, ddof=1)
                axis.fill_between(
                    frames, mean - spread, mean + spread, color=_color(index), alpha=0.2
                )
            drawn = True
        _finish_axis(axis, backbone, "predicted frame (horizon)", label)
    if not drawn:
        return None
    return figure_uri(figure)


def loss_plot(dataset: DatasetRuns) -> str | None:
    """Training loss against step, one panel per backbone, one colour per variant, one line
    per seed; a dotted line where stage two starts."""
    figure, axes = _subplots(len(dataset.backbones))
    drawn = False
    for axis, backbone in zip(axes, dataset.backbones, strict=True):
        losses = []
        for index, variant in enumerate(dataset.variants):
            labelled = False
            for run in dataset.cell(backbone, variant):
                log = run.train_log
                if "step" not in log or "loss" not in log:
                    continue
                axis.plot(
                    log["step"],
                    log["loss"],
                    color=_color(index),
                    alpha=0.8,
                    linewidth=1,
                    label=None if labelled else _label(variant),
                )
                labelled = drawn = True
                losses.append(log["loss"])
                if "stage" in log and np.any(log["stage"] == 2):
                    axis.axvline(log["step"][log["stage"] == 2][0], color="gray", linestyle=":")
        _finish_axis(
            axis,
            backbone,
            "training step (stage two after the dotted line)",
            "training loss",
            log_scale=bool(losses) and all(np.nanmin(loss) > 0 for loss in losses),
        )
    if not drawn:
        return None
    return figure_uri(figure)


def rate_columns(run: Run) -> list[str]:
    return [name for name in run.train_log if name.startswith("rate/")]


def lma_rate_plot(dataset: DatasetRuns) -> str | None:
    """LMA's learned rate per level against step: one panel per backbone x variant that
    logged rates (its first seed), one line per level. None when no run logged rates."""
    panels = []
    for backbone in dataset.backbones:
        for variant in dataset.variants:
            runs = [run for run in dataset.cell(backbone, variant) if rate_columns(run)]
            if runs:
                panels.append((backbone, variant, runs[0]))
    if not panels:
        return None
    figure, axes = _subplots(len(panels), width=4.6, height=3.2)
    for axis, (backbone, variant, run) in zip(axes, panels, strict=True):
        log = run.train_log
        columns = rate_columns(run)
        for index, column in enumerate(columns):
            present = ~np.isnan(log[column])
            axis.plot(
                log["step"][present],
                log[column][present],
                color=matplotlib.colormaps["viridis"](index / max(len(columns) - 1, 1)),
                label=_label(column.removeprefix("rate/")),
            )
        axis.set_title(_label(f"{backbone} · {variant} (seed {run.seed})"))
        axis.set_xlabel("training step")
        axis.set_ylabel("learned rate a_l")
        # No offset notation: rates are read as absolute values (e.g. 1.0006e-3).
        axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small", title="level (shallow → deep)", title_fontsize="x-small")
    return figure_uri(figure)


@dataclass(frozen=True)
class StripRow:
    """One row of a qualitative strip: frames, and for a prediction its absolute error."""

    label: str
    uri: str | None
    error_uri: str | None = None
    note: str | None = None


def _as_rgb(frames: np.ndarray, colormap: str | None = None) -> np.ndarray:
    """uint8 frames `[T, C, H, W]` as RGB `[T, H, W, 3]`: gray and RGB as they are; other
    channel counts (e.g. TaxiBJ's two flows) as channel 0; `colormap` maps one channel."""
    if colormap is not None or frames.shape[1] not in (1, 3):
        mapped = matplotlib.colormaps[colormap or "viridis"](frames[:, 0] / 255.0)[..., :3]
        return np.round(mapped * 255).astype(np.uint8)
    if frames.shape[1] == 1:
        return np.repeat(frames[:, 0, :, :, None], 3, axis=-1)
    return frames.transpose(0, 2, 3, 1)


def _strip_uri(frames: np.ndarray, colormap: str | None = None) -> str:
    rgb = _as_rgb(frames, colormap)
    count, height, width, _ = rgb.shape
    canvas = np.full((height, count * width + (count - 1) * STRIP_GAP, 3), 255, np.uint8)
    for index in range(count):
        left = index * (width + STRIP_GAP)
        canvas[:, left : left + width] = rgb[index]
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, canvas, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def shown_frames(count: int) -> np.ndarray:
    """At most MAX_STRIP_FRAMES evenly spaced frame indices, the last one included."""
    if count <= MAX_STRIP_FRAMES:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, MAX_STRIP_FRAMES)).astype(int))


def strip_display_height(frame_height: int) -> int:
    """On-screen height of a strip: small frames enlarged, large ones reduced."""
    return min(max(frame_height, 48), 96)


def sample_strips(dataset: DatasetRuns, backbone: str, clip: int) -> list[StripRow] | None:
    """Rows for one test clip: inputs, truth, then each variant's prediction beside its
    absolute error (from the variant's lowest seed with samples). None when no run has
    this clip."""
    loaded: dict[str, tuple[int, dict[str, np.ndarray]]] = {}
    missing: dict[str, str] = {}
    for variant in dataset.variants:
        runs = dataset.cell(backbone, variant)
        with_samples = [run for run in runs if run.samples_path.is_file()]
        if not with_samples:
            reasons = {run.problem for run in runs if run.problem}
            missing[variant] = "; ".join(sorted(reasons)) or "no samples.npz"
            continue
        with np.load(with_samples[0].samples_path) as samples:
            if len(samples["predictions"]) <= clip:
                missing[variant] = f"fewer than {clip + 1} sample clips saved"
                continue
            loaded[variant] = (
                with_samples[0].seed,
                {name: samples[name][clip] for name in ("inputs", "truth", "predictions")},
            )
    if not loaded:
        return None
    _, reference = next(iter(loaded.values()))
    inputs, truth = reference["inputs"], reference["truth"]
    input_index = shown_frames(len(inputs))
    output_index = shown_frames(len(truth))
    rows = [
        StripRow(f"input (frames {_frame_list(input_index + 1)})", _strip_uri(inputs[input_index])),
        StripRow(
            f"truth (horizon {_frame_list(output_index + 1)})", _strip_uri(truth[output_index])
        ),
    ]
    for variant in dataset.variants:
        if variant not in loaded:
            rows.append(StripRow(variant, None, note=missing[variant]))
            continue
        seed, samples = loaded[variant]
        prediction = samples["predictions"][output_index]
        error = np.abs(prediction.astype(np.int16) - truth[output_index].astype(np.int16))
        rows.append(
            StripRow(
                f"{variant} (seed {seed})",
                _strip_uri(prediction),
                _strip_uri(error.max(axis=1, keepdims=True).astype(np.uint8), "magma"),
            )
        )
    return rows


def _frame_list(numbers: np.ndarray) -> str:
    if len(numbers) > 1 and np.all(np.diff(numbers) == 1):
        return f"{numbers[0]}–{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)


def validation_plot(dataset: DatasetRuns) -> str | None:
    """Validation MSE (`val_mse` rows of train_log.csv) against step, one panel per
    backbone, one colour per variant, one line per seed; a circle at the checkpoint step
    metrics.json says was scored. None when no run logged validation."""
    figure, axes = _subplots(len(dataset.backbones))
    drawn = False
    for axis, backbone in zip(axes, dataset.backbones, strict=True):
        for index, variant in enumerate(dataset.variants):
            labelled = False
            for run in dataset.cell(backbone, variant):
                log = run.train_log
                if "step" not in log or "val_mse" not in log:
                    continue
                present = ~np.isnan(log["val_mse"])
                if not present.any():
                    continue
                steps, values = log["step"][present], log["val_mse"][present]
                axis.plot(
                    steps,
                    values,
                    color=_color(index),
                    marker=".",
                    linewidth=1,
                    label=None if labelled else _label(variant),
                )
                scored = run.get("checkpoint", "step")
                if isinstance(scored, int) and scored in steps:
                    axis.plot(
                        scored,
                        values[steps == scored][0],
                        marker="o",
                        markersize=9,
                        markerfacecolor="none",
                        color=_color(index),
                    )
                labelled = drawn = True
        _finish_axis(axis, backbone, "training step", "validation MSE (sum over C×H×W)")
    if not drawn:
        return None
    return figure_uri(figure)
