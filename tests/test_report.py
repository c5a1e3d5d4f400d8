"""The ablation report rendered from fixture results (no training)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_results import write_ablation, write_run
from scipy import stats

from seemore.evaluate import METRIC_NAMES
from seemore.report import render_report
from seemore.report.render import PROTOCOLS_DOC, format_mean_std, format_value
from seemore.report.stats import paired_relative_change

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Moving MNIST stand-in: 2 backbones x 4 variants x 3 seeds, LPIPS unavailable, one
    seed never run and one never evaluated. KTH: real data, paper preset, LPIPS present,
    one seed, and a title that tries to inject markup."""
    root = tmp_path_factory.mktemp("report")
    results = root / "results"
    write_ablation(results, seeds=SEEDS)
    shutil.rmtree(results / "moving_mnist" / "convlstm" / "lma" / "seed2")
    (results / "moving_mnist" / "convlstm" / "bdn" / "seed1" / "metrics.json").unlink()
    write_ablation(
        results,
        dataset="kth",
        backbones=("predrnn_v2",),
        variants=("baseline", "seemore"),
        seeds=(0,),
        title="KTH <script>alert('x')</script>",
        stand_in=False,
        preset="paper",
        lpips_reason=None,
        input_frames=10,
        horizon=20,
        frame_size=128,
        recipe="openstl_kth",
        checkpoint={"selected": "best", "step": 20},
        precision={"stage2": "fp16-autocast", "stage1": "fp32"},
        grad_scaler={"stage2": True, "stage1": False},
    )
    render_report(results, root / "reports")
    return {
        "results": results,
        "html": (root / "reports" / "ablation.html").read_text(),
        "csv": list(csv.DictReader((root / "reports" / "ablation.csv").open())),
        "json": json.loads((root / "reports" / "ablation.json").read_text()),
    }


def metric_values(
    results: Path, dataset: str, backbone: str, variant: str, metric: str = "mse"
) -> dict[int, float]:
    values = {}
    for path in sorted((results / dataset / backbone / variant).glob("seed*/metrics.json")):
        record = json.loads(path.read_text())
        values[record["seed"]] = record["metrics"][metric]
    return values


def dataset_section(html: str, name: str) -> str:
    start = html.index(f"({name})</span></h2>")
    end = html.find("</section>", start)
    return html[start:end]


def test_mean_and_std_over_seeds(report: dict) -> None:
    values = list(metric_values(report["results"], "moving_mnist", "predrnn_v2", "bdn").values())
    assert len(values) == 3
    summary = report["json"]["datasets"]["moving_mnist"]["predrnn_v2"]["bdn"]["mse"]
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(np.mean(values))
    assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    assert format_mean_std("mse", np.mean(values), np.std(values, ddof=1)) in report["html"]


def test_relative_change_is_a_paired_t_interval(report: dict) -> None:
    baseline = metric_values(report["results"], "moving_mnist", "predrnn_v2", "baseline")
    variant = metric_values(report["results"], "moving_mnist", "predrnn_v2", "seemore")
    changes = np.array([100 * (variant[s] - baseline[s]) / baseline[s] for s in SEEDS])
    half = stats.t.ppf(0.975, 2) * changes.std(ddof=1) / np.sqrt(3)
    change = report["json"]["datasets"]["moving_mnist"]["predrnn_v2"]["seemore"]["mse"]
    assert change["relative_change_percent"]["mean"] == pytest.approx(changes.mean())
    assert change["relative_change_percent"]["low"] == pytest.approx(changes.mean() - half)
    assert change["relative_change_percent"]["high"] == pytest.approx(changes.mean() + half)
    assert "paired t interval" in report["html"]
    mean = changes.mean()
    assert f"Δ {mean:+.1f} % [{mean - half:+.1f}, {mean + half:+.1f}] n=3" in report["html"]


def test_relative_change_pairs_only_seeds_both_runs_have() -> None:
    change = paired_relative_change({0: 10.0, 1: 20.0, 2: 30.0}, {0: 9.0, 2: 27.0})
    assert change is not None and change.n == 2
    assert change.percent == pytest.approx(-10.0)
    assert change.low == pytest.approx(-10.0) and change.high == pytest.approx(-10.0)
    single = paired_relative_change({0: 10.0}, {0: 12.0})
    assert single is not None and single.low is None and single.percent == pytest.approx(20.0)
    assert paired_relative_change({0: 10.0}, {1: 12.0}) is None


def test_one_seed_says_there_is_no_interval(report: dict) -> None:
    kth = dataset_section(report["html"], "kth")
    assert "n=1, no interval" in kth
    change = report["json"]["datasets"]["kth"]["predrnn_v2"]["seemore"]["mse"]
    assert change["relative_change_percent"]["low"] is None


def test_unavailable_lpips_is_shown_with_its_reason_never_as_zero(report: dict) -> None:
    mnist = dataset_section(report["html"], "moving_mnist")
    assert "LPIPS unavailable: AlexNet weights alexnet-owt-7be5be79.pth not found" in mnist
    lpips_rows = [
        row
        for row in report["csv"]
        if row["dataset"] == "moving_mnist" and row["metric"] == "lpips"
    ]
    assert lpips_rows and all(row["value"] == "" for row in lpips_rows)
    assert all(row["missing_reason"] for row in lpips_rows)
    summary = report["json"]["datasets"]["moving_mnist"]["convlstm"]["baseline"]["lpips"]
    assert summary == {"mean": None, "std": None, "n": 0}
    # KTH had LPIPS: its values are shown.
    assert report["json"]["datasets"]["kth"]["predrnn_v2"]["baseline"]["lpips"]["n"] == 1


def test_missing_runs_are_shown_with_the_reason(report: dict) -> None:
    mnist = dataset_section(report["html"], "moving_mnist")
    assert "run not done" in mnist
    assert "not evaluated: metrics.json missing" in mnist
    assert ">2/3<" in mnist  # the convlstm lma and bdn cells have two of three seeds
    rows = {
        (row["backbone"], row["variant"], row["seed"], row["metric"]): row for row in report["csv"]
    }
    not_run = rows["convlstm", "lma", "2", "mse"]
    assert not_run["value"] == "" and not_run["missing_reason"] == "run not done"
    assert rows["convlstm", "bdn", "1", "mse"]["missing_reason"].startswith("not evaluated")
    assert report["json"]["datasets"]["moving_mnist"]["convlstm"]["lma"]["mse"]["n"] == 2


def test_stand_in_and_scaled_down_runs_are_labelled(report: dict) -> None:
    mnist = dataset_section(report["html"], "moving_mnist")
    assert "Embedded stand-in data" in mnist
    assert "scaled-down preset (embedded)" in mnist
    assert "not comparable to published numbers" in mnist
    assert "EMBEDDED STAND-IN (source: embedded)" in mnist
    assert 'id="comparability-banner"' in report["html"]
    # No published reference beside stand-in numbers.
    assert "Published reference" not in mnist


def test_published_numbers_only_for_real_data_with_the_paper_preset(report: dict) -> None:
    kth = dataset_section(report["html"], "kth")
    assert "Real data, paper preset." in kth
    assert "Published reference, in its own convention" in kth
    # Like with like: each published value beside our baseline in OpenSTL's convention.
    for metric, label, published, column in (
        ("mse_unclamped", "MSE", "39.57", "MSE unclamped"),
        ("ssim_openstl", "SSIM", "0.9099", "SSIM OpenSTL"),
        ("psnr", "PSNR", "28.01", "PSNR"),
        ("lpips", "LPIPS", "0.2148", "LPIPS"),
    ):
        ours = metric_values(report["results"], "kth", "predrnn_v2", "baseline", metric)[0]
        assert (
            "<tr><td>predrnn_v2</td><td>PredRNN.V2 (100 epochs, 10→20, 128×128)</td>"
            f'<td>{label}</td><td class="num">{published}</td>'
            f'<td class="num">{format_value(metric, ours)}</td><td>{column}</td></tr>'
        ) in kth
    assert "OpenSTL model zoo" in kth


@pytest.mark.parametrize(
    ("horizon", "frame_size", "shown"), [(20, 128, True), (40, 128, False), (20, 64, False)]
)
def test_published_numbers_need_the_same_horizon_and_frame_size(
    tmp_path: Path, horizon: int, frame_size: int, shown: bool
) -> None:
    for variant in ("baseline", "seemore"):
        write_run(
            tmp_path / "results", "kth", "predrnn_v2", variant, 0,
            stand_in=False, preset="paper", input_frames=10, horizon=horizon,
            frame_size=frame_size,
        )  # fmt: skip
    render_report(tmp_path / "results", tmp_path / "reports")
    html = (tmp_path / "reports" / "ablation.html").read_text()
    assert ("Published reference" in html) is shown


def test_names_cannot_inject_markup(report: dict, tmp_path: Path) -> None:
    html = report["html"]
    assert "<script" not in html
    assert "KTH &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    write_run(tmp_path / "results", "d", "<b>bold<", "baseline", 0, description="<img src=x>")
    render_report(tmp_path / "results", tmp_path / "reports")
    other = (tmp_path / "reports" / "ablation.html").read_text()
    assert "<b>bold" not in other and "&lt;b&gt;bold&lt;" in other
    assert "<img src=x>" not in other and "&lt;img src=x&gt;" in other


def test_best_value_per_column_is_marked(report: dict) -> None:
    cells = report["json"]["datasets"]["moving_mnist"]
    means = {
        (backbone, variant): entry["mse"]["mean"]
        for backbone, variants in cells.items()
        for variant, entry in variants.items()
    }
    best = min(means, key=means.get)
    assert best[1] == "seemore"  # the fixture makes SeeMore best
    mnist = dataset_section(report["html"], "moving_mnist")
    starred = re.findall(r'<td class="num best"[^>]*>\s*([^<★]+) ★', mnist)
    best_runs = metric_values(report["results"], "moving_mnist", *best)
    values = list(best_runs.values())
    assert format_mean_std("mse", np.mean(values), np.std(values, ddof=1)) in [
        text.strip() for text in starred
    ]
    assert len(starred) == len(METRIC_NAMES) - 1  # one per column with values (not LPIPS)


def test_csv_is_tidy(report: dict) -> None:
    rows = report["csv"]
    assert list(rows[0]) == [
        "dataset", "backbone", "variant", "seed", "metric", "value",
        "missing_reason", "data_source", "stand_in", "preset",
    ]  # fmt: skip
    keys = [(r["dataset"], r["backbone"], r["variant"], r["seed"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    # Every grid cell appears, done or not: 2 x 4 x 3 Moving MNIST + 1 x 2 x 1 KTH runs.
    assert len(rows) == (2 * 4 * 3 + 2) * len(METRIC_NAMES)
    for row in rows:
        assert row["metric"] in METRIC_NAMES
        assert (row["value"] == "") != (row["missing_reason"] == "")
        if row["value"]:
            float(row["value"])
    kth = [row for row in rows if row["dataset"] == "kth"]
    assert {row["stand_in"] for row in kth} == {"false"} and {row["preset"] for row in kth} == {
        "paper"
    }


def test_page_is_self_contained_with_plots_and_strips(report: dict) -> None:
    html = report["html"]
    external = re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', html)
    # Only the link to the protocol table beside the repo's reports/ (nothing is loaded).
    assert set(external) == {PROTOCOLS_DOC} and PROTOCOLS_DOC == "../docs/protocols.md"
    assert "url(" not in html and "@import" not in html
    mnist = dataset_section(html, "moving_mnist")
    for caption in (
        "Per-frame MSE against horizon",
        "Per-frame SSIM against horizon",
        "Validation MSE during training",
        "Training loss",
        "LMA: learned rate per level over training",
        "Qualitative samples",
        "|prediction − truth|",
    ):
        assert caption in mnist
    assert mnist.count('src="data:image/png;base64,') >= 5 + 2 * 2 * (2 + 2 * 4)
    assert "MSE: squared error summed over C×H×W per frame, prediction clamped" in html
    assert "MSE unclamped: squared error summed over C×H×W per frame on the raw" in html
    assert "Provenance" in html and "0123abcd" in html and "torch 2.14.1" in html


def test_cost_table_shows_architecture_parity_not_per_job_latency(
    report: dict, tmp_path: Path
) -> None:
    mnist = dataset_section(report["html"], "moving_mnist")
    assert "same parameters and FLOPs" in mnist
    assert "architecture differs" not in mnist
    # Per-job latencies were measured beside other jobs: labelled as such, never a ratio.
    assert "Inference s/clip (per job, shared cores)" in mnist
    assert "× baseline" not in report["html"]
    assert "parity (controlled measurement):</strong>\nnot measured for this dataset" in mnist
    write_run(tmp_path / "results", "d", "b", "baseline", 0, parameters=100)
    write_run(tmp_path / "results", "d", "b", "seemore", 0, parameters=200)
    render_report(tmp_path / "results", tmp_path / "reports")
    assert "architecture differs" in (tmp_path / "reports" / "ablation.html").read_text()


def test_latency_parity_comes_from_the_controlled_measurement_with_its_conditions(
    tmp_path: Path,
) -> None:
    benchmark = {
        "params": "seemore/presets/embedded.yaml",
        "dataset": "moving_mnist",
        "backbone": "predrnn_v2",
        "batch_size": 4,
        "repeats": 30,
        "threads": 1,
        "device": "cpu",
        "torch": "2.14.1",
        "median_seconds": {"baseline": 0.0499, "seemore": 0.0525},
        "ratio_seemore_over_baseline": 1.0531,
    }
    (tmp_path / "latency.json").write_text(json.dumps(benchmark))
    write_ablation(tmp_path / "results", backbones=("predrnn_v2",), seeds=(0,))
    render_report(tmp_path / "results", tmp_path / "reports", tmp_path / "latency.json")
    html = (tmp_path / "reports" / "ablation.html").read_text()
    assert (
        "predrnn_v2: baseline 0.0499 s, SeeMore 0.0525 s per forward (ratio 1.053); both "
        "networks timed in one process, interleaved, median of 30 runs after a warm-up, "
        "batch 4, cpu, 1 thread(s), torch 2.14.1"
    ) in html


def test_runs_show_protocol_recipe_checkpoint_precision_or_not_recorded(report: dict) -> None:
    kth = dataset_section(report["html"], "kth")
    row = re.search(r"<tr><td>predrnn_v2 / seemore / seed 0</td>(.*?)</tr>", kth)
    assert row is not None
    assert re.findall(r"<td>([^<]*)</td>", row.group(1)) == [
        "openstl", "openstl_kth", "best (step 20)",
        "stage1: fp32, stage2: fp16-autocast + grad scaler",
    ]  # fmt: skip
    mnist = dataset_section(report["html"], "moving_mnist")
    row = re.search(r"<tr><td>predrnn_v2 / baseline / seed 0</td>(.*?)</tr>", mnist)
    assert row is not None and row.group(1).endswith("<td>not recorded</td>")
    assert f'<a href="{PROTOCOLS_DOC}">docs/protocols.md</a>' in mnist


def test_older_results_without_the_new_fields_render_as_not_recorded(tmp_path: Path) -> None:
    for variant in ("baseline", "seemore"):
        write_run(
            tmp_path / "results", "kth", "predrnn_v2", variant, 0,
            stand_in=False, preset="paper", input_frames=10, horizon=20, frame_size=128,
            protocol=None, recipe=None, both_conventions=False,
        )  # fmt: skip
    render_report(tmp_path / "results", tmp_path / "reports")
    html = (tmp_path / "reports" / "ablation.html").read_text()
    row = re.search(r"<tr><td>predrnn_v2 / seemore / seed 0</td>(.*?)</tr>", html)
    assert row is not None
    assert re.findall(r"<td>([^<]*)</td>", row.group(1)) == ["not recorded"] * 4
    assert "ssim_openstl not recorded" in html
    # The published value has nothing of its own convention to stand beside.
    assert (
        '<td>MSE</td><td class="num">39.57</td><td class="num">not recorded</td>'
        "<td>MSE unclamped</td>"
    ) in html


def test_published_numbers_need_the_reference_protocol(tmp_path: Path) -> None:
    for variant in ("baseline", "seemore"):
        write_run(
            tmp_path / "results", "kth", "predrnn_v2", variant, 0,
            stand_in=False, preset="paper", input_frames=10, horizon=20, frame_size=128,
            protocol="avi",
        )  # fmt: skip
    render_report(tmp_path / "results", tmp_path / "reports")
    assert "Published reference" not in (tmp_path / "reports" / "ablation.html").read_text()


def test_both_ssim_conventions_are_shown_with_their_definitions(report: dict) -> None:
    mnist = dataset_section(report["html"], "moving_mnist")
    for metric in ("ssim", "ssim_openstl"):
        values = list(
            metric_values(report["results"], "moving_mnist", "predrnn_v2", "bdn", metric).values()
        )
        assert format_mean_std(metric, np.mean(values), np.std(values, ddof=1)) in mnist
    assert 'title="scikit-image ≤ 0.19.3 SSIM on float frames without data_range' in mnist
    assert ">SSIM OpenSTL ↑</th>" in mnist and ">SSIM ↑</th>" in mnist


def test_the_validation_curve_is_plotted_only_with_validation_rows(tmp_path: Path) -> None:
    directory = write_run(tmp_path / "results", "d", "b", "baseline", 0)
    log = (directory / "train_log.csv").read_text().splitlines()
    without = [",".join(line.split(",")[:3] + line.split(",")[4:]) for line in log]
    (directory / "train_log.csv").write_text("\n".join(without) + "\n")
    render_report(tmp_path / "results", tmp_path / "reports")
    html = (tmp_path / "reports" / "ablation.html").read_text()
    assert "Validation MSE during training (every seed; ○ the checkpoint scored on the " in html
    assert "test split): no run has the data for it" in html


def test_without_lma_runs_the_rate_plot_says_why(tmp_path: Path) -> None:
    write_run(tmp_path / "results", "d", "b", "baseline", 0)
    render_report(tmp_path / "results", tmp_path / "reports")
    html = (tmp_path / "reports" / "ablation.html").read_text()
    assert "LMA: learned rate per level over training: no run has the data for it" in html


def test_empty_and_missing_results(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    render_report(tmp_path / "results", tmp_path / "reports")
    assert "No results found" in (tmp_path / "reports" / "ablation.html").read_text()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        render_report(tmp_path / "nowhere", tmp_path / "reports")


def test_runs_without_a_recorded_data_source_are_not_called_real(tmp_path: Path) -> None:
    directory = write_run(tmp_path / "results", "moving_mnist", "b", "baseline", 0, preset="paper")
    record = json.loads((directory / "metrics.json").read_text())
    del record["data"]
    (directory / "metrics.json").write_text(json.dumps(record))
    render_report(tmp_path / "results", tmp_path / "reports")
    html = (tmp_path / "reports" / "ablation.html").read_text()
    assert "unrecorded origin" in html
    assert "not comparable to published numbers" in html
    assert "Real data, paper preset." not in html
