if pipeline.fetches_lpips_weights(PARAMS):

    # LPIPS's AlexNet weights (into the torch hub cache), once, before any evaluation; offline
    # the record holds the one-line reason and evaluation records LPIPS as unavailable. Back
    # online, delete the record (or `snakemake -R fetch_weights`) to fetch them.
    localrules:
        fetch_weights,

    rule fetch_weights:
        output:
            str(pipeline.LPIPS_WEIGHTS_RECORD),
        shell:
            pipeline.FETCH_WEIGHTS_COMMAND + " > {output}"


rule evaluate:
    input:
        lambda w: pipeline.evaluate_inputs(PARAMS, _run(w)),
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
