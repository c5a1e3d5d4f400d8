RUN_DIR = "results/{dataset}/{backbone}/{variant}/seed{seed}"


def _run(w):
    return pipeline.Run(w.dataset, w.backbone, w.variant, int(w.seed))


rule train_stage1:
    input:
        "data/prepared/{dataset}",
    output:
        RUN_DIR + "/stage1.pt",
    params:
        params_hash=lambda w: pipeline.stage_hash(PARAMS, _run(w), 1),
    threads: 1
    log:
        RUN_DIR + "/stage1.log",
    shell:
        "seemore train --stage 1 --dataset {wildcards.dataset} --backbone {wildcards.backbone}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --threads {threads} --quiet"
        " > {log} 2>&1"


rule train_stage2:
    input:
        "data/prepared/{dataset}",
        RUN_DIR + "/stage1.pt",
    output:
        RUN_DIR + "/stage2.pt",
        RUN_DIR + "/model.pt",
        RUN_DIR + "/model_best.pt",
        RUN_DIR + "/train_log.csv",
    params:
        params_hash=lambda w: pipeline.stage_hash(PARAMS, _run(w), 2),
    threads: 1
    log:
        RUN_DIR + "/stage2.log",
    shell:
        "seemore train --stage 2 --dataset {wildcards.dataset} --backbone {wildcards.backbone}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --threads {threads} --quiet"
        " > {log} 2>&1"
