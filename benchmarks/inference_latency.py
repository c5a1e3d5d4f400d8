"""Inference latency of a baseline-built vs a SeeMore-built forward network (one run).

SeeMore only changes training: the inference model is the forward network alone, of the
baseline's class and size, so the ratio should be 1 up to timing noise. The SeeMore network
here has taken real BDN and LMA steps first, so nothing training-time is left attached.

    .venv/bin/python benchmarks/inference_latency.py [--backbone predrnn_v2] [--device cpu]

Writes benchmarks/inference_latency.{json,md}.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from method_setup import (
    arguments,
    display_path,
    environment,
    interleaved_medians,
    network_factory,
    random_clip,
    write_result,
)

from seemore.backbones import Backbone
from seemore.backbones.profile import count_parameters
from seemore.method.settings import (
    MethodConfig,
    ScheduledSamplingConfig,
    StageTwoConfig,
    TrainingConfig,
)
from seemore.method.variants import VARIANTS, build_objective, build_updater

METHOD = MethodConfig()
STAGE = StageTwoConfig(steps=2, lr=METHOD.lma.a_max, scheduled_sampling=ScheduledSamplingConfig())
TRAINING = TrainingConfig(
    batch_size=1, reverse_input=False, grad_clip=None, stage1=STAGE, stage2=STAGE
)


def seemore_network(make_network: Callable[[], Backbone], clip: torch.Tensor) -> Backbone:
    variant = VARIANTS.get("seemore")
    objective = build_objective(variant, make_network, METHOD)
    mask = torch.ones(clip.shape[0], clip.shape[1] - 2, device=clip.device)
    for stage in (1, 2):
        updater = build_updater(variant, stage, objective, TRAINING, METHOD, nullcontext)
        for _ in range(STAGE.steps):
            updater.step(clip, mask)
    return objective.forward_network


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    make_network = network_factory(args)
    baseline = build_objective(VARIANTS.get("baseline"), make_network, METHOD).forward_network
    clip = random_clip(baseline, args.batch_size)
    seemore = seemore_network(make_network, clip)

    networks = {"baseline": baseline.eval(), "seemore": seemore.eval()}
    with torch.no_grad():
        seconds = interleaved_medians(
            {label: lambda n=network: n(clip) for label, network in networks.items()},
            args.repeats,
            args.device,
        )
    ratio = seconds["seemore"] / seconds["baseline"]
    result = {
        **environment(args),
        "class": {k: type(n).__name__ for k, n in (("baseline", baseline), ("seemore", seemore))},
        "parameters": {
            "baseline": count_parameters(baseline),
            "seemore": count_parameters(seemore),
        },
        "median_seconds": seconds,
        "ratio_seemore_over_baseline": ratio,
    }
    markdown = (
        f"# Inference latency: baseline vs SeeMore forward network\n\n"
        f"`{args.backbone}` from `{display_path(args.params)}` on {args.dataset} geometry, batch "
        f"{args.batch_size}, {args.device}, {args.threads} thread(s), median of "
        f"{args.repeats} interleaved runs after a warm-up (torch {torch.__version__}).\n\n"
        f"| network | class | parameters | median s / forward |\n|---|---|---|---|\n"
        f"| baseline | {result['class']['baseline']} | {result['parameters']['baseline']} | "
        f"{seconds['baseline']:.4f} |\n"
        f"| seemore | {result['class']['seemore']} | {result['parameters']['seemore']} | "
        f"{seconds['seemore']:.4f} |\n\n"
        f"Ratio seemore / baseline: **{ratio:.3f}** (one run; same class and size, so any "
        f"difference is timing noise).\n"
    )
    write_result("inference_latency", result, markdown)


if __name__ == "__main__":
    main()
