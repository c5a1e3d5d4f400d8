rule report:
    input:
        [run.directory / name for run in RUNS for name in ("metrics.json", "train_log.csv")],
    output:
        "reports/ablation.html",
        "reports/ablation.csv",
    shell:
        "seemore report --results results --out reports"
