"""The ablation report: `render_report(results_dir, out_dir)` writes `ablation.html` (one
self-contained page), `ablation.csv` (tidy) and `ablation.json` (summaries).

For DVC, declare per run in dvc.yaml (paths under results/<dataset>/<backbone>/<variant>/
seed<k>/): `metrics.json` as a metrics file (`cache: false`) and `per_frame.csv` as a plots
file with `x: frame` and `y: mse` (or ssim/psnr/...); `dvc metrics show` and
`dvc plots show` then read them directly.
"""

from seemore.report.render import render_report

__all__ = ["render_report"]
