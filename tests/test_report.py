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

from seemore.report import render_report
from seemore.report.render import format_mean_std
from seemore.report.stats import paired_relative_change

METRICS = ("mse", "mae", "ssim", "psnr", "lpips")
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
    )
    render_report(results, root / "reports")
    return {
        "results": results,
        "html": (root / "reports" / "ablation.html").read_text(),
        "csv": list(csv.DictReader((root / "reports" / "ablation.csv").open())),
        "json": json.loads((root / "reports" / "ablation.json").read_text()),
    }


def metric_values(results: Path, dataset: str, backbone: str, variant: str) -> dict[int, float]:
    values = {}
    for path in sorted((results / dataset / backbone / variant).glob("seed*/metrics.json")):
        record = json.loads(path.read_text())
        values[record["seed"]] = record["metrics"]["mse"]
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
    assert "Published reference" in kth
    assert "PredRNN.V2 (100 epochs, 10→20, 128×128): MSE 39.57" in kth
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
    assert len(starred) == 4  # one per column that has values (LPIPS has none)


def test_csv_is_tidy(report: dict) -> None:
    rows = report["csv"]
    assert list(rows[0]) == [
        "dataset", "backbone", "variant", "seed", "metric", "value",
        "missing_reason", "data_source", "stand_in", "preset",
    ]  # fmt: skip
    keys = [(r["dataset"], r["backbone"], r["variant"], r["seed"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    # Every grid cell appears, done or not: 2 x 4 x 3 Moving MNIST + 1 x 2 x 1 KTH runs.
    assert len(rows) == (2 * 4 * 3 + 2) * len(METRICS)
    for row in rows:
        assert row["metric"] in METRICS
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
    assert external == []
    assert "url(" not in html and "@import" not in html
    mnist = dataset_section(html, "moving_mnist")
    for caption in (
        "Per-frame MSE against horizon",
        "Per-frame SSIM against horizon",
        "Training loss",
        "LMA: learned rate per level over training",
        "Qualitative samples",
        "|prediction − truth|",
    ):
        assert caption in mnist
    assert mnist.count('src="data:image/png;base64,') >= 4 + 2 * 2 * (2 + 2 * 4)
    assert "MSE and MAE: squared / absolute error summed over the C×H×W values" in html
    assert "Provenance" in html and "0123abcd" in html and "torch 2.14.1" in html


def test_cost_table_shows_inference_parity(report: dict, tmp_path: Path) -> None:
    mnist = dataset_section(report["html"], "moving_mnist")
    assert "same parameters and FLOPs" in mnist
    assert "architecture differs" not in mnist
    write_run(tmp_path / "results", "d", "b", "baseline", 0, parameters=100)
    write_run(tmp_path / "results", "d", "b", "seemore", 0, parameters=200)
    render_report(tmp_path / "results", tmp_path / "reports")
    assert "architecture differs" in (tmp_path / "reports" / "ablation.html").read_text()


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
