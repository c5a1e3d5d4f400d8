rule evaluate:
    input:
        "data/prepared/{dataset}",
        RUN_DIR + "/model.pt",
        RUN_DIR + "/model_best.pt",
    output:
        RUN_DIR + "/metrics.json",
        RUN_DIR + "/per_frame.csv",
        RUN_DIR + "/samples.npz",
    params:
        params_hash=lambda w: pipeline.keys_hash(
            PARAMS, pipeline.EVALUATE_KEYS, dataset=w.dataset
        ),
    threads: 1
    resources:
        gpu=GPUS_PER_EVALUATE,
    log:
        RUN_DIR + "/evaluate.log",
    shell:
        "seemore evaluate --dataset {wildcards.dataset} --backbone {wildcards.backbone}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --threads {threads}"
        " > {log} 2>&1"
