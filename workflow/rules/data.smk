# data/raw/{dataset} is a download cache, not an output: Snakemake deletes a job's outputs
# before it runs, and a re-run of `prepare` (after a params edit) must not re-download
# gigabytes. DVC versions it as a persistent output (dvc.yaml).
rule prepare:
    output:
        directory("data/prepared/{dataset}"),
    params:
        # Re-run when the params this job reads change (snakemake's params rerun trigger).
        params_hash=lambda w: pipeline.keys_hash(PARAMS, pipeline.PREPARE_KEYS, dataset=w.dataset),
    log:
        "logs/prepare/{dataset}.log",
    shell:
        "seemore prepare --dataset {wildcards.dataset} > {log} 2>&1"
