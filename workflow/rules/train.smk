RUN_DIR = "results/{dataset}/{backbone}/{variant}/seed{seed}"
# One stage one per objective (plain | bidirectional), shared by the variants using it.
STAGE_ONE_DIR = "results/{dataset}/{backbone}/" + pipeline.STAGE_ONE_DIR + "/{objective}/seed{seed}"


def _stage_one(w):
    return pipeline.StageOne(w.dataset, w.backbone, w.objective, int(w.seed))


def _run(w):
    return pipeline.Run(w.dataset, w.backbone, w.variant, int(w.seed))


rule train_stage1:
    input:
        "data/prepared/{dataset}",
    output:
        STAGE_ONE_DIR + "/stage1.pt",
    params:
        params_hash=lambda w: pipeline.keys_hash(
            PARAMS, pipeline.stage_one_keys(PARAMS, _stage_one(w))
        ),
    threads: 1
    resources:
        gpu=GPUS_PER_TRAIN,
    log:
        STAGE_ONE_DIR + "/stage1.log",
    shell:
        "seemore train --stage 1 --dataset {wildcards.dataset} --backbone {wildcards.backbone}"
        " --objective {wildcards.objective} --seed {wildcards.seed} --threads {threads}"
        " > {log} 2>&1"


rule train_stage2:
    input:
        "data/prepared/{dataset}",
        lambda w: str(_run(w).stage_one.checkpoint),
    output:
        RUN_DIR + "/stage2.pt",
        RUN_DIR + "/model.pt",
        RUN_DIR + "/model_best.pt",
        RUN_DIR + "/train_log.csv",
    params:
        params_hash=lambda w: pipeline.keys_hash(PARAMS, pipeline.stage_two_keys(PARAMS, _run(w))),
    threads: 1
    resources:
        gpu=GPUS_PER_TRAIN,
    log:
        RUN_DIR + "/stage2.log",
    shell:
        "seemore train --stage 2 --dataset {wildcards.dataset} --backbone {wildcards.backbone}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --threads {threads}"
        " > {log} 2>&1"
