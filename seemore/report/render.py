"""Render `ablation.html`, `ablation.csv` and `ablation.json` from a results tree."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from seemore.data.base import atomic_write_bytes
from seemore.metrics import METRICS, REFERENCE_CONVENTIONS, REFERENCE_RESIDUALS
from seemore.report import figures
from seemore.report.collect import METRIC_NAMES, DatasetRuns, Run, collect
from seemore.report.published import CONVENTION, PUBLISHED, SOURCE
from seemore.report.stats import (
    INTERVAL_METHOD,
    LOWER_IS_BETTER,
    RelativeChange,
    Summary,
    best_indices,
    is_improvement,
    paired_relative_change,
    summarize,
)

TEMPLATES = Path(__file__).parent / "templates"
BASELINE = "baseline"
METRIC_LABELS = {name: metric.label for name, metric in METRICS.items()}
VARIANT_LABELS = {"baseline": "baseline", "bdn": "+BDN", "lma": "+LMA", "seemore": "SeeMore"}
STRIP_CLIPS = 2
CSV_COLUMNS = (
    "dataset",
    "backbone",
    "variant",
    "seed",
    "metric",
    "value",
    "missing_reason",
    "data_source",
    "stand_in",
    "preset",
)
PROTOCOLS_DOC = "../docs/protocols.md"  # relative to reports/ablation.html
NOT_RECORDED = "not recorded"
CONVENTIONS = (
    "All metrics are computed on the fixed test clips over the predicted frames only "
    "(after the input frames), per clip and frame, then averaged over clips and frames; "
    "frames are in [0, 1].",
    "References compute the same metric differently, so each is stored in each convention "
    "and a published number is compared only with the value in its own convention. "
    "SeeMore/PredRNN: MSE/MAE on the clamped prediction, SSIM on truncated uint8 frames "
    "(data range 1 on [0, 1] frames). OpenSTL: MSE/MAE on the unclamped prediction, SSIM on "
    "float frames with the data range 2 its pinned scikit-image (≤ 0.19.3) assumes.",
    *(f"{metric.label}: {metric.convention}." for metric in METRICS.values()),
    *(f"Residual ({name}): {text}" for name, text in REFERENCE_RESIDUALS.items()),
    "↓ lower is better, ↑ higher is better. ★ marks the best mean of a column in its table.",
)


def _decimals(metric: str, value: float) -> int:
    if metric == "psnr":
        return 2
    if metric.startswith(("ssim", "lpips")):
        return 4
    return significant_decimals(value, 4)


def significant_decimals(value: float, digits: int) -> int:
    """Decimals that show `value` with `digits` significant digits."""
    if value == 0 or not math.isfinite(value):
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def significant(value: float, digits: int) -> str:
    return f"{value:.{significant_decimals(value, digits)}f}"


def format_value(metric: str, value: float) -> str:
    return f"{value:.{_decimals(metric, value)}f}"


def format_mean_std(metric: str, mean: float, std: float | None) -> str:
    """Mean and std at the mean's precision."""
    decimals = _decimals(metric, mean)
    text = f"{mean:.{decimals}f}"
    return text if std is None else f"{text} ± {std:.{decimals}f}"


def format_count(value: float | None, unit: str = "") -> str | None:
    if value is None:
        return None
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:g} {unit}".strip()


def format_seconds(summary: Summary) -> str | None:
    if summary.mean is None:
        return None
    decimals = significant_decimals(summary.mean, 3)
    text = f"{summary.mean:.{decimals}f} s"
    if summary.std is not None:
        text += f" ± {summary.std:.{decimals}f}"
    return text


class Footnotes:
    """Numbered reasons for missing values, one number per distinct reason in a table."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def number(self, reason: str) -> int:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return self.reasons.index(reason) + 1


@dataclass
class MetricCell:
    mean: float | None
    text: str | None  # "mean ± std", None when no seed has a value
    seeds_detail: str  # per-seed values and reasons, for the cell's tooltip
    n: int
    of: int
    notes: list[int] = field(default_factory=list)
    best: bool = False
    change: str | None = None
    change_class: str = ""
    change_significant: bool = False


@dataclass
class TableRow:
    backbone: str
    variant: str
    variant_label: str
    first_of_backbone: bool
    backbone_rows: int
    cells: dict[str, MetricCell]


@dataclass
class PublishedRow:
    """One published value beside our baseline's value in the same convention."""

    backbone: str
    reference: str  # method and setting in the source
    metric: str  # label of the published metric
    published: str
    ours: str  # our baseline, mean over seeds, or NOT_RECORDED
    ours_column: str  # the label of the column it is taken from


def _change_text(change: RelativeChange) -> str:
    text = f"Δ {change.percent:+.1f} %"
    if change.low is None:
        return text + " (n=1, no interval)"
    return text + f" [{change.low:+.1f}, {change.high:+.1f}] n={change.n}"


def _metric_cell(
    metric: str, runs: list[Run], baseline_runs: list[Run] | None, notes: Footnotes
) -> MetricCell:
    values = {run.seed: run.metric(metric) for run in runs}
    present = {seed: value for seed, value in values.items() if value is not None}
    summary = summarize(list(present.values()))
    details, numbers = [], []
    for run in runs:
        value = values[run.seed]
        if value is None:
            reason = run.missing_reason(metric) or "missing"
            details.append(f"seed {run.seed}: {reason}")
            numbers.append(notes.number(reason))
        else:
            details.append(f"seed {run.seed}: {format_value(metric, value)}")
    text = None
    if summary.mean is not None:
        text = format_mean_std(metric, summary.mean, summary.std)
    cell = MetricCell(
        mean=summary.mean,
        text=text,
        seeds_detail="; ".join(details),
        n=summary.n,
        of=len(runs),
        notes=sorted(set(numbers)),
    )
    if baseline_runs is not None and present:
        baseline = {
            run.seed: run.metric(metric) for run in baseline_runs if run.metric(metric) is not None
        }
        change = paired_relative_change(baseline, present)
        if change is not None:
            cell.change = _change_text(change)
            cell.change_class = "better" if is_improvement(metric, change.percent) else "worse"
            cell.change_significant = change.excludes_zero
    return cell


def _published_rows(dataset: DatasetRuns, backbone: str, comparable: bool) -> list[PublishedRow]:
    """The published numbers of `backbone`, when its runs match the source's setting
    (comparable data and preset, the source's protocol or none recorded, the same horizon
    and frame size), each beside this backbone's baseline mean in the source's convention."""
    table = PUBLISHED.get(dataset.name)
    if not comparable or table is None or backbone not in table.rows:
        return []
    runs = [run for run in dataset.done() if run.backbone == backbone]
    horizons = {
        (run.get("horizon", "input_frames"), run.get("horizon", "output_frames")) for run in runs
    }
    if horizons != {(table.input_frames, table.output_frames)}:
        return []
    if {run.get("protocol") for run in runs} - {None, CONVENTION}:
        return []
    if _frame_height(dataset, backbone) != table.image_size:
        return []
    reference = table.rows[backbone]
    keys = REFERENCE_CONVENTIONS[CONVENTION]
    baseline = [run for run in runs if run.variant == BASELINE]
    rows = []
    for name, value in reference.metrics.items():
        ours = summarize([v for run in baseline if (v := run.metric(keys[name])) is not None])
        rows.append(
            PublishedRow(
                backbone=backbone,
                reference=f"{reference.method} ({table.setting}, "
                f"{table.image_size}×{table.image_size})",
                metric=METRIC_LABELS[name],
                published=format_value(name, value),
                ours=NOT_RECORDED if ours.mean is None else format_value(name, ours.mean),
                ours_column=METRIC_LABELS[keys[name]],
            )
        )
    return rows


def _metric_table(dataset: DatasetRuns) -> tuple[list[TableRow], list[str], list[str]]:
    """Rows, the metrics shown (columns), and the footnote texts."""
    notes = Footnotes()
    rows = []
    for backbone in dataset.backbones:
        baseline_runs = dataset.cell(backbone, BASELINE) if BASELINE in dataset.variants else None
        for index, variant in enumerate(dataset.variants):
            runs = dataset.cell(backbone, variant)
            reference = baseline_runs if variant != BASELINE else None
            rows.append(
                TableRow(
                    backbone=backbone,
                    variant=variant,
                    variant_label=VARIANT_LABELS.get(variant, variant),
                    first_of_backbone=index == 0,
                    backbone_rows=len(dataset.variants),
                    cells={m: _metric_cell(m, runs, reference, notes) for m in METRIC_NAMES},
                )
            )
    for metric in METRIC_NAMES:
        for index in best_indices(metric, [row.cells[metric].mean for row in rows]):
            rows[index].cells[metric].best = True
    return rows, list(METRIC_NAMES), notes.reasons


@dataclass
class CostRow:
    backbone: str
    variant_label: str
    first_of_backbone: bool
    backbone_rows: int
    parameters: str | None
    flops: str | None
    stage1: str | None
    stage2: str | None
    passes: str | None
    inference: str | None
    parity: str | None
    parity_ok: bool | None


def _single(values: list[Any]) -> Any:
    """The value when all runs agree, None when absent, 'varies' otherwise."""
    distinct = {json.dumps(v, sort_keys=True) for v in values if v is not None}
    if not distinct:
        return None
    if len(distinct) > 1:
        return "varies"
    return next(v for v in values if v is not None)


def _passes_text(passes: Any) -> str | None:
    if not isinstance(passes, dict):
        return None
    parts = []
    for stage, counts in sorted(passes.items()):
        if isinstance(counts, dict):
            inner = ", ".join(
                f"{name.removesuffix('_passes')} {value}" for name, value in counts.items()
            )
            parts.append(f"{stage}: {inner}")
    return "; ".join(parts) or None


def _cost_table(dataset: DatasetRuns) -> list[CostRow]:
    rows = []
    for backbone in dataset.backbones:
        baseline_done = (
            [run for run in dataset.cell(backbone, BASELINE) if run.record is not None]
            if BASELINE in dataset.variants
            else []
        )
        baseline_size = (
            _single([run.get("cost", "parameters") for run in baseline_done]),
            _single([run.get("cost", "flops") for run in baseline_done]),
        )
        for index, variant in enumerate(dataset.variants):
            done = [run for run in dataset.cell(backbone, variant) if run.record is not None]
            parameters = _single([run.get("cost", "parameters") for run in done])
            flops = _single([run.get("cost", "flops") for run in done])
            latency = summarize(
                [
                    run.get("inference_seconds_per_clip")
                    for run in done
                    if run.get("inference_seconds_per_clip") is not None
                ]
            )
            stage_times = {
                stage: summarize(
                    [
                        run.get("cost", "train_seconds_per_step", stage)
                        for run in done
                        if run.get("cost", "train_seconds_per_step", stage) is not None
                    ]
                )
                for stage in ("stage1", "stage2")
            }
            parity, parity_ok = None, None
            if variant != BASELINE and done and baseline_done:
                same = (parameters, flops) == baseline_size
                parity_ok = same
                # Per-job latencies are not compared: jobs ran side by side on shared
                # cores. Latency parity comes from the controlled measurement.
                parity = "same parameters and FLOPs" if same else "architecture differs"
            rows.append(
                CostRow(
                    backbone=backbone,
                    variant_label=VARIANT_LABELS.get(variant, variant),
                    first_of_backbone=index == 0,
                    backbone_rows=len(dataset.variants),
                    parameters=parameters if parameters == "varies" else format_count(parameters),
                    flops=flops if flops == "varies" else format_count(flops),
                    stage1=format_seconds(stage_times["stage1"]),
                    stage2=format_seconds(stage_times["stage2"]),
                    passes=_passes_text(_single([run.get("cost", "passes") for run in done])),
                    inference=format_seconds(latency),
                    parity=parity,
                    parity_ok=parity_ok,
                )
            )
    return rows


@dataclass
class StripBlock:
    backbone: str
    clip: int
    rows: list[figures.StripRow]
    height: int  # on-screen pixels


@dataclass
class SetupRow:
    """How one run was made: its data protocol, training recipe and the checkpoint scored."""

    run: str
    protocol: str
    recipe: str
    checkpoint: str
    precision: str


@dataclass
class DatasetView:
    name: str
    anchor: str
    title: str
    data_labels: list[str]
    stand_in: bool
    presets: list[str]
    scaled_down: bool
    mixed_data: bool
    horizon: str | None
    seeds: list[int]
    rows: list[TableRow]
    metrics: list[str]
    footnotes: list[str]
    published_source: str | None
    published: list[PublishedRow]
    plots: list[tuple[str, str]]
    missing_plots: list[str]
    strips: list[StripBlock]
    costs: list[CostRow]
    setups: list[SetupRow]
    latency_parity: str | None


def _checkpoint_text(run: Run) -> str:
    selected, step = run.get("checkpoint", "selected"), run.get("checkpoint", "step")
    if selected is None and step is None:
        return NOT_RECORDED
    text = f"{selected or 'selection ' + NOT_RECORDED}"
    return text + (f" (step {step})" if step is not None else f" (step {NOT_RECORDED})")


def _precision_text(run: Run) -> str:
    precision = run.get("precision")
    if not isinstance(precision, dict) or not precision:
        return NOT_RECORDED
    scaled = run.get("grad_scaler")
    scaled = scaled if isinstance(scaled, dict) else {}
    return ", ".join(
        f"{stage}: {value}" + (" + grad scaler" if scaled.get(stage) is True else "")
        for stage, value in sorted(precision.items())
    )


def _setups(dataset: DatasetRuns) -> list[SetupRow]:
    return [
        SetupRow(
            run=f"{run.backbone} / {run.variant} / seed {run.seed}",
            protocol=str(run.get("protocol") or NOT_RECORDED),
            recipe=str(run.get("recipe") or NOT_RECORDED),
            checkpoint=_checkpoint_text(run),
            precision=_precision_text(run),
        )
        for run in dataset.done()
    ]


def latency_parity_text(benchmark: dict[str, Any] | None, dataset: str) -> str | None:
    """The controlled inference measurement (benchmarks/inference_latency.py's JSON) with
    its conditions, when it was made on this dataset's geometry."""
    if not benchmark or benchmark.get("dataset") != dataset:
        return None
    seconds = benchmark.get("median_seconds") or {}
    return (
        f"{benchmark.get('backbone')}: baseline {significant(seconds['baseline'], 3)} s, "
        f"SeeMore {significant(seconds['seemore'], 3)} s per forward "
        f"(ratio {benchmark['ratio_seemore_over_baseline']:.3f}); both networks timed in one "
        f"process, interleaved, median of {benchmark.get('repeats')} runs after a warm-up, "
        f"batch {benchmark.get('batch_size')}, {benchmark.get('device')}, "
        f"{benchmark.get('threads')} thread(s), torch {benchmark.get('torch')}, params "
        f"{benchmark.get('params')}"
    )


def _data_label(run: Run) -> str:
    data = run.get("data") or {}
    source = data.get("source", "unknown source")
    description = data.get("description", "")
    # Unknown provenance is never presented as the real benchmark.
    kind = {True: "EMBEDDED STAND-IN", False: "real data"}.get(
        data.get("stand_in"), "data of unrecorded origin (treated as a stand-in)"
    )
    return f"{kind} (source: {source}){': ' + description if description else ''}"


def _frame_height(dataset: DatasetRuns, backbone: str) -> int | None:
    """Frame height of a backbone's saved samples; None without samples."""
    for run in dataset.done():
        if run.backbone == backbone and run.samples_path.is_file():
            with np.load(run.samples_path) as samples:
                return int(samples["truth"].shape[-2])
    return None


def _data_kind(run: Run) -> str:
    data = run.get("data") or {}
    kind = {True: "stand-in", False: "real"}.get(data.get("stand_in"), "unrecorded")
    return f"{kind} ({data.get('source', 'unknown source')})"


def _dataset_view(
    dataset: DatasetRuns, index: int, latency_benchmark: dict[str, Any] | None
) -> DatasetView:
    done = list(dataset.done())
    titles = {run.get("dataset_title") for run in done} - {None}
    data_labels = sorted({_data_label(run) for run in done})
    stand_in = any(run.get("data", "stand_in") is not False for run in done)
    presets = sorted({str(run.get("preset") or "unknown") for run in done})
    scaled_down = presets != ["paper"]
    comparable = bool(done) and not stand_in and not scaled_down
    horizons = {
        (run.get("horizon", "input_frames"), run.get("horizon", "output_frames")) for run in done
    }
    horizon = None
    if len(horizons) == 1:
        inputs, outputs = next(iter(horizons))
        if inputs is not None and outputs is not None:
            horizon = f"{inputs} → {outputs} frames"
    rows, metrics, footnotes = _metric_table(dataset)
    published = [
        row
        for backbone in dataset.backbones
        for row in _published_rows(dataset, backbone, comparable)
    ]

    plots, missing_plots = [], []
    for title, make in (
        (
            "Per-frame MSE against horizon (mean over seeds, band ± 1 std)",
            lambda: figures.per_frame_plot(dataset, "mse", "MSE (sum over C×H×W)"),
        ),
        (
            "Per-frame SSIM against horizon (mean over seeds, band ± 1 std)",
            lambda: figures.per_frame_plot(dataset, "ssim", "SSIM"),
        ),
        (
            "Validation MSE during training (every seed; ○ the checkpoint scored on the test "
            "split)",
            lambda: figures.validation_plot(dataset),
        ),
        (
            "Training loss (every seed; stage two after the dotted line). Each variant's own "
            "objective: one with more loss terms is not worse for a higher curve",
            lambda: figures.loss_plot(dataset),
        ),
        ("LMA: learned rate per level over training", lambda: figures.lma_rate_plot(dataset)),
    ):
        uri = make()
        if uri is None:
            missing_plots.append(f"{title}: no run has the data for it")
        else:
            plots.append((title, uri))

    strips = []
    for backbone in dataset.backbones:
        for clip in range(STRIP_CLIPS):
            strip_rows = figures.sample_strips(dataset, backbone, clip)
            if strip_rows is not None:
                height = figures.strip_display_height(_frame_height(dataset, backbone) or 64)
                strips.append(StripBlock(backbone, clip, strip_rows, height))
    return DatasetView(
        name=dataset.name,
        anchor=f"dataset-{index}",
        title=titles.pop() if len(titles) == 1 else dataset.name,
        data_labels=data_labels,
        stand_in=stand_in,
        presets=presets,
        scaled_down=scaled_down,
        mixed_data=len(data_labels) > 1,
        horizon=horizon,
        seeds=dataset.seeds,
        rows=rows,
        metrics=metrics,
        footnotes=footnotes,
        published_source=SOURCE if published else None,
        published=published,
        plots=plots,
        missing_plots=missing_plots,
        strips=strips,
        costs=_cost_table(dataset),
        setups=_setups(dataset),
        latency_parity=latency_parity_text(latency_benchmark, dataset.name),
    )


@dataclass
class ProvenanceRow:
    run: str
    data: str
    preset: str
    git_revision: str
    params_hash: str
    device: str
    date: str
    wall_time: str
    versions: str | None


def _wall_time(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {significant(float(v), 3)} s" for k, v in value.items())
    if isinstance(value, int | float):
        return f"{significant(float(value), 3)} s"
    return "—"


def _provenance(datasets: list[DatasetRuns]) -> tuple[list[ProvenanceRow], dict[str, str]]:
    """One row per evaluated run; library versions once when every run agrees."""
    done = [run for dataset in datasets for run in dataset.done()]
    version_sets = {json.dumps(run.get("provenance", "versions"), sort_keys=True) for run in done}
    shared = len(version_sets) == 1
    rows = []
    for run in done:
        provenance = run.get("provenance") or {}
        versions = provenance.get("versions") or {}
        rows.append(
            ProvenanceRow(
                run=f"{run.dataset} / {run.backbone} / {run.variant} / seed {run.seed}",
                data=_data_kind(run),
                preset=str(run.get("preset") or "unknown"),
                git_revision=str(provenance.get("git_revision", "—")),
                params_hash=str(provenance.get("params_hash", "—")),
                device=str(provenance.get("device", "—")),
                date=str(provenance.get("date", "—")),
                wall_time=_wall_time(provenance.get("wall_time_s")),
                versions=None if shared else ", ".join(f"{k} {v}" for k, v in versions.items()),
            )
        )
    common = (done[0].get("provenance", "versions") or {}) if shared and done else {}
    return rows, {str(k): str(v) for k, v in common.items()}


def _tidy_rows(datasets: list[DatasetRuns]) -> list[dict[str, Any]]:
    rows = []
    for dataset in datasets:
        for (backbone, variant, seed), run in dataset.runs.items():
            data = run.get("data") or {}
            for metric in METRIC_NAMES:
                value = run.metric(metric)
                rows.append(
                    {
                        "dataset": dataset.name,
                        "backbone": backbone,
                        "variant": variant,
                        "seed": seed,
                        "metric": metric,
                        "value": "" if value is None else repr(value),
                        "missing_reason": run.missing_reason(metric) or "",
                        "data_source": data.get("source", ""),
                        "stand_in": "" if "stand_in" not in data else str(data["stand_in"]).lower(),
                        "preset": run.get("preset") or "",
                    }
                )
    return rows


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _summary_json(datasets: list[DatasetRuns]) -> bytes:
    """Machine-readable summaries: mean, std, n and relative change per cell."""
    out: dict[str, Any] = {"interval_method": INTERVAL_METHOD, "datasets": {}}
    for dataset in datasets:
        cells: dict[str, Any] = {}
        for backbone in dataset.backbones:
            for variant in dataset.variants:
                runs = dataset.cell(backbone, variant)
                entry: dict[str, Any] = {}
                for metric in METRIC_NAMES:
                    per_seed = {
                        run.seed: run.metric(metric)
                        for run in runs
                        if run.metric(metric) is not None
                    }
                    summary = summarize(list(per_seed.values()))
                    item: dict[str, Any] = {
                        "mean": summary.mean,
                        "std": summary.std,
                        "n": summary.n,
                    }
                    if variant != BASELINE and BASELINE in dataset.variants:
                        baseline = {
                            run.seed: run.metric(metric)
                            for run in dataset.cell(backbone, BASELINE)
                            if run.metric(metric) is not None
                        }
                        change = paired_relative_change(baseline, per_seed)
                        item["relative_change_percent"] = (
                            None
                            if change is None
                            else {
                                "mean": change.percent,
                                "low": change.low,
                                "high": change.high,
                                "n": change.n,
                            }
                        )
                    entry[metric] = item
                cells.setdefault(backbone, {})[variant] = entry
        out["datasets"][dataset.name] = cells
    return (json.dumps(out, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def environment() -> Environment:
    # Autoescape everything: dataset/backbone names and descriptions come from params.yaml.
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(results_dir: Path, out_dir: Path, latency_benchmark: Path | None = None) -> None:
    """Write `ablation.html` (self-contained), `ablation.csv` (tidy: one row per dataset,
    backbone, variant, seed and metric) and `ablation.json` into `out_dir`.

    `latency_benchmark`: the JSON of benchmarks/inference_latency.py, the controlled
    inference measurement the cost table cites for latency parity (absent: not shown)."""
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: results folder missing; run training first")
    latency = None
    if latency_benchmark is not None and latency_benchmark.is_file():
        latency = json.loads(latency_benchmark.read_text())
    datasets = collect(results_dir)
    views = [_dataset_view(dataset, index, latency) for index, dataset in enumerate(datasets)]
    provenance, versions = _provenance(datasets)
    html = (
        environment()
        .get_template("ablation.html.j2")
        .render(
            datasets=views,
            conventions=CONVENTIONS,
            protocols_doc=PROTOCOLS_DOC,
            metric_labels=METRIC_LABELS,
            metric_conventions={name: metric.convention for name, metric in METRICS.items()},
            lower_is_better=LOWER_IS_BETTER,
            interval_method=INTERVAL_METHOD,
            provenance=provenance,
            versions=versions,
            stand_in_count=sum(view.stand_in for view in views),
            scaled_down_count=sum(view.scaled_down for view in views),
            variant_names=sorted({v for d in datasets for v in d.variants}),
            backbone_names=sorted({b for d in datasets for b in d.backbones}),
            seed_list=sorted({s for d in datasets for s in d.seeds}),
        )
    )
    atomic_write_bytes(out_dir / "ablation.html", lambda file: file.write(html.encode()))
    csv_payload = _csv_bytes(_tidy_rows(datasets))
    atomic_write_bytes(out_dir / "ablation.csv", lambda file: file.write(csv_payload))
    json_payload = _summary_json(datasets)
    atomic_write_bytes(out_dir / "ablation.json", lambda file: file.write(json_payload))
