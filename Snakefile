# Thin orchestration: every rule calls the `seemore` CLI; the jobs, their files and the params
# each one reads come from seemore/pipeline.py (dvc.yaml is written from the same module).
# Planning stays torch-free (a dry run takes about a second); `seemore check` validates every
# section before a real run starts, and every `seemore` job validates again.
from seemore import devices, pipeline

pipeline.refuse_if_dvc_running()
PARAMS = pipeline.load_plan("params.yaml")
RUNS = list(pipeline.runs(PARAMS))
# GPUs each GPU job holds (0 on a CPU-only machine or with experiment.device: cpu). A cluster
# profile sets `cluster: true` (workflow/profiles/slurm): jobs run elsewhere, so they request
# experiment.gpus_per_run GPUs whatever this host has.
CLUSTER = bool(config.get("cluster", False))
GPUS_PER_TRAIN = devices.rule_gpus(PARAMS, training=True, cluster=CLUSTER)
GPUS_PER_EVALUATE = devices.rule_gpus(PARAMS, training=False, cluster=CLUSTER)

wildcard_constraints:
    dataset="[^/]+",
    backbone="[^/]+",
    variant="[^/]+",
    objective="|".join(pipeline.OBJECTIVES),
    seed=r"\d+",

# Cheap jobs stay on the submitting host under a cluster executor.
localrules:
    all,
    report,


onstart:
    shell("seemore check")


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/ablation.html",
        "reports/ablation.csv",
