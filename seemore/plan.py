"""`seemore plan`: what the active params will launch and what it will cost, before anything runs.

It counts the jobs of every rule as seemore/pipeline.py lists them, and for every training job
the passes and FLOPs its updates take: one pass is one forward and backward of the variant's
training objective on a batch, measured with torch's FlopCounterMode on the meta device (a
paper-size model costs neither memory nor compute to measure). FLOPs become GPU hours on a
named reference GPU at a stated utilisation and CPU core-hours at a stated rate; the disk for
data and checkpoints is added up. Every assumption is printed beside the numbers.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seemore import pipeline
from seemore.backbones import BACKBONES, BackboneConfig, BackboneKind, ClipGeometry
from seemore.backbones.profile import (
    build_on_meta,
    count_flops,
    count_parameters,
    flop_counter,
    polynomial_in_frames,
    zero_clip,
)
from seemore.config import Params, TrainingConfig
from seemore.data import DATASETS
from seemore.method.lma import is_meta_update
from seemore.method.objective import Objective
from seemore.method.settings import LMAConfig, MethodConfig
from seemore.method.variants import VARIANTS, Variant, build_objective
from seemore.validation import is_scored

# Parameters, gradients-free: a stage checkpoint holds the weights and Adam's two moments of
# every network the stage trains (LMA keeps the same two moments), all float32.
CHECKPOINT_TENSORS_PER_PARAMETER = 3
BYTES_PER_PARAMETER = 4


@dataclass(frozen=True)
class ReferenceGPU:
    label: str
    peak_flops: float  # per second
    basis: str


# Training runs under bf16 autocast on CUDA where the GPU supports it natively
# (seemore.train.precision_for): bf16 peaks.
REFERENCE_GPUS = {
    "h100-sxm": ReferenceGPU("NVIDIA H100 SXM", 989e12, "bf16 dense tensor-core peak"),
    "a100-sxm": ReferenceGPU("NVIDIA A100 SXM", 312e12, "bf16 dense tensor-core peak"),
}
# Our assumption, not a measurement (no GPU was available to measure it): small-batch
# recurrent conv nets keep tensor cores far from peak. The one published figure near it,
# OpenSTL's V100 inference FPS (benchmarks/plan_check.md), is inference, not training.
DEFAULT_GPU_UTILISATION = 0.10
# Measured on this project's 2-core CPU machine: FLOPs of the embedded default's training
# steps over their wall time, one torch thread per job (benchmarks/plan_check.md).
DEFAULT_CPU_FLOPS_PER_CORE = 15e9


@dataclass(frozen=True)
class Assumptions:
    gpu: ReferenceGPU = REFERENCE_GPUS["h100-sxm"]
    gpu_utilisation: float = DEFAULT_GPU_UTILISATION
    cpu_flops_per_core: float = DEFAULT_CPU_FLOPS_PER_CORE
    cpu_cores: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass(frozen=True)
class PassCost:
    """One training pass of a (dataset, backbone, objective): what it trains and costs."""

    trained_parameters: int  # every network of the objective (BDN: forward and backward)
    flops: int  # one forward + backward of the objective on a training batch


@dataclass(frozen=True)
class StagePlan:
    stage: int
    updates: int  # updater steps: iterations, twice as many with reverse_input
    meta_steps: int  # LMA meta steps among the updates: one more pass each (the lookahead)
    cost: PassCost
    scorings: int  # validation scorings: every eval_every iterations and at the last
    # Their FLOPs: scorings x validation clips x one forward; None when the clip count is
    # unknown before preparing (real data cut into windows), then not counted.
    validation_flops: int | None

    @property
    def passes(self) -> int:
        return self.updates + self.meta_steps

    @property
    def flops(self) -> int:
        return self.passes * self.cost.flops + (self.validation_flops or 0)

    @property
    def checkpoint_bytes(self) -> int:
        return self.cost.trained_parameters * CHECKPOINT_TENSORS_PER_PARAMETER * BYTES_PER_PARAMETER


@dataclass(frozen=True)
class RunPlan:
    run: pipeline.Run
    parameters: int  # the inference network (what `model.pt` holds)
    inference_flops: int  # one forward of one test clip (at the test horizon)
    stage1_job: str  # the stage-one job this run's stage two starts from
    stage1: StagePlan
    stage2: StagePlan


@dataclass(frozen=True)
class Plan:
    jobs: dict[str, int]
    runs: list[RunPlan]
    stage1_jobs: dict[str, StagePlan]
    data_bytes: dict[str, int | None]
    data_on_disk: dict[str, int]
    assumptions: Assumptions

    @property
    def training_flops(self) -> int:
        stage1 = sum(stage.flops for stage in self.stage1_jobs.values())
        return stage1 + sum(run.stage2.flops for run in self.runs)

    @property
    def checkpoint_bytes(self) -> int:
        stage1 = sum(stage.checkpoint_bytes for stage in self.stage1_jobs.values())
        stage2 = sum(
            run.stage2.checkpoint_bytes + run.parameters * BYTES_PER_PARAMETER for run in self.runs
        )
        return stage1 + stage2

    @property
    def gpu_hours(self) -> float:
        a = self.assumptions
        return self.training_flops / (a.gpu.peak_flops * a.gpu_utilisation) / 3600

    @property
    def cpu_core_hours(self) -> float:
        return self.training_flops / self.assumptions.cpu_flops_per_core / 3600


def stage_updates(steps: int, training: TrainingConfig) -> int:
    """Updater steps of a stage: reverse_input takes a second step on the reversed batch."""
    return steps * training.updates_per_iteration


def lma_meta_steps(updates: int, lma: LMAConfig, updates_per_iteration: int) -> int:
    """How many of stage two's `updates` are LMA meta steps, by LMA's own rule."""
    return sum(is_meta_update(lma, update, updates_per_iteration) for update in range(updates))


def validation_scorings(stage: int, steps: int, eval_every: int | None) -> int:
    """How often a stage scores the validation split, by the training loop's own rule
    (every `eval_every` iterations; stage two also after its last)."""
    score_last = stage == 2
    return sum(is_scored(done, steps, eval_every, score_last) for done in range(1, steps + 1))


def objective_name(variant: Variant) -> str:
    return "bidirectional" if variant.bidirectional else "plain"


def pass_cost(
    backbone: str,
    config: object,
    geometry: ClipGeometry,
    variant: Variant,
    method: MethodConfig,
    batch_size: int,
) -> PassCost:
    """Trained parameters and FLOPs of one forward + backward of `variant`'s objective on a
    training batch (scheduled-sampling mask given to step-wise backbones), on meta. Step-wise
    backbones are counted on short clips and extrapolated exactly (`polynomial_in_frames`)."""
    backbone_class = BACKBONES.get(backbone)
    objective = build_objective(
        variant, lambda: build_on_meta(backbone_class, config, geometry), method
    )
    objective.train()

    def count(frames: int) -> int:
        return objective_flops(objective, geometry, batch_size, frames)

    frames = geometry.total_frames
    step_wise = backbone_class.kind is BackboneKind.STEP_WISE
    flops = polynomial_in_frames(count, frames) if step_wise else count(frames)
    return PassCost(count_parameters(objective), flops)


def objective_flops(
    objective: Objective, geometry: ClipGeometry, batch_size: int, frames: int
) -> int:
    """FLOPs of one forward + backward of `objective` on a zero training batch of the first
    `frames` frames, counted directly; step-wise networks get an all-true sampling mask."""
    parameter = next(objective.parameters())
    clip = zero_clip(geometry, batch_size, parameter)[:, :frames]
    mask = None
    if objective.forward_network.kind is BackboneKind.STEP_WISE:
        mask = torch.ones(batch_size, frames - 2, device=parameter.device)
    objective.zero_grad(set_to_none=True)  # each count as a fresh step's
    with flop_counter() as counter:
        objective(clip, mask).loss.backward()
    return int(counter.get_total_flops())


def _directory_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def rule_jobs(params: Params) -> dict[str, int]:
    """How many jobs each rule runs (seemore/pipeline.py's lists)."""
    runs = list(pipeline.runs(params))
    return {
        "prepare": len(params.experiment.datasets),
        "train_stage1": len({stage1_job_name(run) for run in runs}),
        "train_stage2": len(runs),
        "evaluate": len(runs),
        "report": 1,
    }


def planned_data_bytes(params: Params) -> dict[str, int | None]:
    """Bytes each dataset's preparation will store (None: only the real files tell)."""
    return {
        name: DATASETS.get(name).planned_bytes(params.data[name])
        for name in params.experiment.datasets
    }


def build_plan(params: Params, assumptions: Assumptions, root: Path = Path(".")) -> Plan:
    """The plan of `params`; `root` is the working directory whose data/ is measured."""
    method = params.method
    # Counts are cached by what decides them (backbone, its settings, geometry, batch), so a
    # (dataset, backbone) counts each distinct computation once however many runs share it.
    passes: dict[tuple[object, ...], PassCost] = {}
    forwards: dict[tuple[object, ...], tuple[int, int]] = {}

    def forward_cost(
        backbone: str, config: BackboneConfig, geometry: ClipGeometry
    ) -> tuple[int, int]:
        """(parameters, FLOPs) of one inference forward of a clip of `geometry`."""
        key = (backbone, config.model_dump_json(), geometry)
        if key not in forwards:
            network = build_on_meta(BACKBONES.get(backbone), config, geometry)
            forwards[key] = count_parameters(network), count_flops(network)
        return forwards[key]

    stage1_jobs: dict[str, StagePlan] = {}
    run_plans = []
    for run in pipeline.runs(params):
        variant = VARIANTS.get(run.variant)
        data = params.data[run.dataset]
        training = params.training[run.dataset].for_backbone(run.backbone)
        geometry = DATASETS.get(run.dataset).geometry(data)
        config = params.models[run.dataset][run.backbone]
        key = (
            run.backbone,
            config.model_dump_json(),
            geometry,
            training.batch_size,
            objective_name(variant),
        )
        if key not in passes:
            passes[key] = pass_cost(
                run.backbone, config, geometry, variant, method, training.batch_size
            )
        inference = forward_cost(run.backbone, config, test_geometry(geometry, data))
        # One forward of a validation clip (the training horizon).
        validation_forward = forward_cost(run.backbone, config, geometry)[1]
        val_clips = DATASETS.get(run.dataset).planned_val_clips(data)
        stages = []
        for stage, stage_config in ((1, training.stage1), (2, training.stage2)):
            updates = stage_updates(stage_config.steps, training)
            meta = 0
            if stage == 2 and variant.meta_adapted:
                meta = lma_meta_steps(updates, method.lma, training.updates_per_iteration)
            scorings = validation_scorings(stage, stage_config.steps, stage_config.eval_every)
            val_flops = None
            if val_clips is not None:
                val_flops = scorings * val_clips * validation_forward
            stages.append(StagePlan(stage, updates, meta, passes[key], scorings, val_flops))
        stage1, stage2 = stages
        job = stage1_job_name(run)
        stage1_jobs.setdefault(job, stage1)
        run_plans.append(RunPlan(run, *inference, job, stage1, stage2))
    data_bytes = planned_data_bytes(params)
    data_on_disk = {}
    for name in params.experiment.datasets:
        folders = [root / pipeline.prepared_dir(name), root / pipeline.raw_dir(name)]
        if any(folder.is_dir() for folder in folders):
            data_on_disk[name] = sum(_directory_bytes(f) for f in folders if f.is_dir())
    return Plan(rule_jobs(params), run_plans, stage1_jobs, data_bytes, data_on_disk, assumptions)


def stage1_job_name(run: pipeline.Run) -> str:
    """Which stage-one job a run's stage two continues: one per objective, shared by the
    variants that train it (seemore/pipeline.py)."""
    return str(run.stage_one.directory)


def test_geometry(geometry: ClipGeometry, data: object) -> ClipGeometry:
    """The clip geometry evaluation runs at: the test horizon."""
    horizon = data.test_horizon  # type: ignore[attr-defined]
    return ClipGeometry(
        geometry.channels, geometry.height, geometry.width, geometry.input_frames, horizon
    )


# --- text ---------------------------------------------------------------------------------


def si(value: float, unit: str) -> str:
    """`value` with a decimal prefix: 1.23 GFLOP, 45.6 MB."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.3g} k{unit}"
    return f"{value:.3g} {unit}"


def hours(value: float) -> str:
    if value < 1 / 3600:
        return "< 1 s"
    if value < 1 / 60:
        return f"{value * 3600:.0f} s"
    if value < 1:
        return f"{value * 60:.1f} min"
    if value < 48:
        return f"{value:.1f} h"
    return f"{value:.0f} h ({value / 24:.1f} days)"


def stage_cell(stage: StagePlan) -> str:
    """Passes, LMA meta steps among them, validation scorings."""
    meta = f", {stage.meta_steps:,} meta" if stage.meta_steps else ""
    return f"{stage.passes:,}{meta}, {stage.scorings:,} val"


def format_plan(plan: Plan, source: str) -> str:
    """The plan as text; `source` says which params it is of."""
    a = plan.assumptions
    lines = [f"seemore plan: {source}", "", "jobs per rule"]
    width = max(len(rule) for rule in plan.jobs)
    for rule, count in plan.jobs.items():
        lines.append(f"  {rule:<{width}}  {count:>5}")
    lines.append(f"  {'total':<{width}}  {sum(plan.jobs.values()):>5}")

    lines += [
        "",
        "training passes (one pass = forward + backward of the objective on a batch; val ="
        " validation scorings)",
    ]
    header = ("run", "params", "stage 1 passes", "stage 2 passes", "FLOP/pass", "run FLOP")
    rows = []
    for rp in plan.runs:
        rows.append(
            (
                f"{rp.run.dataset}/{rp.run.backbone}/{rp.run.variant}/seed{rp.run.seed}",
                si(rp.parameters, ""),
                stage_cell(rp.stage1),
                stage_cell(rp.stage2),
                si(rp.stage1.cost.flops, "FLOP"),
                si(rp.stage1.flops + rp.stage2.flops, "FLOP"),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        lines.append(
            "  "
            + "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )

    lines += [
        "",
        "training compute",
        f"  total: {si(plan.training_flops, 'FLOP')} over {plan.jobs['train_stage1']} stage-one "
        f"and {plan.jobs['train_stage2']} stage-two jobs",
        f"  GPU: {hours(plan.gpu_hours)} on one {a.gpu.label} at {a.gpu_utilisation:.0%} of its "
        f"{si(a.gpu.peak_flops, 'FLOP/s')} {a.gpu.basis}",
        f"  CPU here: {plan.cpu_core_hours:,.1f} core-hours at "
        f"{si(a.cpu_flops_per_core, 'FLOP/s')} per core: at least "
        f"{hours(plan.cpu_core_hours / a.cpu_cores)} on this machine's {a.cpu_cores} cores",
    ]

    lines += ["", "disk"]
    known = 0
    for name, planned in plan.data_bytes.items():
        text = (
            "unknown until prepared (the real files decide)"
            if planned is None
            else si(planned, "B")
        )
        known += planned or 0
        if name in plan.data_on_disk:
            text += f"; now on disk (raw + prepared): {si(plan.data_on_disk[name], 'B')}"
        lines.append(f"  data/prepared/{name}: {text}")
    lines.append(
        f"  checkpoints (stage1.pt, stage2.pt, model.pt): {si(plan.checkpoint_bytes, 'B')}"
    )
    lines.append(f"  total known: {si(known + plan.checkpoint_bytes, 'B')}")

    inference = sorted(
        {f"{rp.run.dataset}/{rp.run.backbone} {si(rp.inference_flops, 'FLOP')}" for rp in plan.runs}
    )
    assumptions = [
        "FLOPs as torch's FlopCounterMode counts them on the meta device: convolutions and "
        "matrix products (a multiply-add is 2); elementwise ops and optimizer updates excluded",
        "a pass is one forward + backward of the variant's objective on a training batch "
        "(training.batch_size): plain = one network; bidirectional (BDN) = both networks + "
        "distillation (+ backtracking for clip-wise backbones)",
        "an LMA meta step is two passes (its gradient and the lookahead's), a task step one; "
        "reverse_input doubles the updates of every iteration",
        "validation while training is counted where the clip count is known before "
        "preparing (stand-ins, generated clips): scorings x clips x one forward",
        "evaluation is not counted; one test clip's inference forward: " + ", ".join(inference),
        f"GPU utilisation {a.gpu_utilisation:.0%} of the {a.gpu.basis} is an assumption, not "
        "a measurement: no GPU was available to calibrate it (benchmarks/plan_check.md); "
        "time a few steps on your GPU and pass --gpu-utilisation",
        f"CPU rate {si(a.cpu_flops_per_core, 'FLOP/s')} per core: the embedded default's "
        "training measured on a 2-core machine (benchmarks/plan_check.md; --cpu-gflops to "
        "change it)",
        "checkpoints: float32 weights + Adam's two moments of every trained network per "
        "stage, weights only in model.pt; the training log, partial (resume) checkpoints "
        "while a job runs, and DVC's cache copy (unless it links) come on top",
    ]
    lines += ["", "assumptions"]
    for text in assumptions:
        lines += textwrap.wrap(text, 100, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(lines)
