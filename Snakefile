# Thin orchestration: every rule calls the `seemore` CLI; the logic lives in the library.
# The experiment comes from params.yaml (switch presets with `make paper` / `make embedded`).
from seemore import pipeline
from seemore.config import load_params

PARAMS = load_params("params.yaml")
RUNS = list(pipeline.runs(PARAMS))


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports/ablation.html",
        "reports/ablation.csv",
