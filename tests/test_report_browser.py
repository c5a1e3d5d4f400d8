"""The report in a real browser: headless Chromium loads the page from disk, with every host
unresolvable, and we check what it parsed (the DOM) and what it drew (a screenshot).

Skipped when no Chromium is installed, unless SEEMORE_REQUIRE_BROWSER is set (as .ci/run
does, after installing Debian's `chromium`), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fixtures_results import write_ablation
from PIL import Image

from seemore.report import render_report

WIDTH, HEIGHT = 1400, 4000
# matplotlib's first line colour (tab:blue), drawn only if the plot images rendered.
PLOT_BLUE = np.array([31, 119, 180])


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    message = "no Chromium found (install Debian's `chromium` package to run the browser test)"
    if os.environ.get("SEEMORE_REQUIRE_BROWSER"):
        pytest.fail(message + "; SEEMORE_REQUIRE_BROWSER is set")
    pytest.skip(message)


def run_chromium(browser: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Any network fetch would fail: the page must stand on its own.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class DomSummary(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.images: list[str] = []
        self.cells = 0
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append(attributes.get("class") or "")
        elif tag == "img":
            self.images.append(attributes.get("src") or "")
        elif tag == "td":
            self.cells += 1
        elif tag == "h2":
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings[-1] += data


def test_chromium_renders_tables_and_images(tmp_path: Path) -> None:
    browser = chromium()
    results = tmp_path / "results"
    write_ablation(
        results,
        backbones=("predrnn_v2",),
        variants=("baseline", "seemore"),
        seeds=(0, 1),
        title="Moving MNIST <script>document.title='pwned'</script>",
    )
    render_report(results, tmp_path / "reports")
    page = (tmp_path / "reports" / "ablation.html").as_uri()

    dom = run_chromium(browser, tmp_path / "profile-dom", "--dump-dom", page).stdout
    summary = DomSummary()
    summary.feed(dom)
    assert {"metrics", "cost", "provenance"} <= set(summary.tables)
    assert summary.cells > 50
    assert len(summary.images) >= 4 + 2 * (2 + 2 * 2)
    assert all(src.startswith("data:image/png;base64,") for src in summary.images)
    # The injected markup stayed text: it is in the heading, and no script ran or exists.
    assert any("<script>document.title='pwned'</script>" in h for h in summary.headings)
    assert "<script" not in dom.lower()
    assert "<title>SeeMore ablation report</title>" in dom

    screenshot = tmp_path / "page.png"
    run_chromium(
        browser,
        tmp_path / "profile-shot",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={screenshot}",
        page,
    )
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    assert screenshot.stat().st_size > 100_000
    # Plots drew their lines and sample strips their (black) frames.
    blue = np.abs(pixels - PLOT_BLUE).sum(axis=-1) < 30
    assert blue.sum() > 200
    assert (pixels.sum(axis=-1) < 20).sum() > 20_000
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
