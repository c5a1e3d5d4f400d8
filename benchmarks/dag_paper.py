"""DAG size and training cost of the paper preset with stage one per objective (now) and per
variant (before): jobs per rule and GPU hours from FLOPs (seemore/plan.py, on the meta device).
Run: .venv/bin/python benchmarks/dag_paper.py"""

from seemore.config import validate_params
from seemore.plan import Assumptions, build_plan
from seemore.recipes import compose_preset


def main() -> None:
    plan = build_plan(validate_params(compose_preset("paper")), Assumptions())
    shared = sum(job.flops for job in plan.stage1_jobs.values())
    per_variant = sum(run.stage1.flops for run in plan.runs)
    stage_two = sum(run.stage2.flops for run in plan.runs)
    a = plan.assumptions
    rate = a.gpu.peak_flops * a.gpu_utilisation * 3600
    before, after = per_variant + stage_two, shared + stage_two
    print(f"runs: {len(plan.runs)}; jobs per rule now: {plan.jobs}")
    print(f"train_stage1 jobs: before {len(plan.runs)}, after {len(plan.stage1_jobs)}")
    print(f"training FLOPs: before {before:.3e}, after {after:.3e} ({1 - after / before:.1%} less)")
    print(
        f"GPU hours ({a.gpu.label} at {a.gpu_utilisation:.0%} of peak): "
        f"before {before / rate:.1f}, after {after / rate:.1f}"
    )


if __name__ == "__main__":
    main()
