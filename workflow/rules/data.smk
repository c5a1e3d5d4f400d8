rule prepare:
    output:
        raw=directory("data/raw/{dataset}"),
        prepared=directory("data/prepared/{dataset}"),
    params:
        # Re-run when the params this job reads change (snakemake's params rerun trigger).
        params_hash=lambda w: pipeline.keys_hash(PARAMS, pipeline.PREPARE_KEYS, dataset=w.dataset),
    log:
        "logs/prepare/{dataset}.log",
    shell:
        "seemore prepare --dataset {wildcards.dataset} > {log} 2>&1"
