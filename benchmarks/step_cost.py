"""Cost of one training step: baseline Adam, BDN (stage one), LMA task and meta steps.

Each step kind is timed on the same batch (median wall time after a warm-up); ratios are
against the baseline step. LMA's average step is its cycle's mix of meta and task steps.

    .venv/bin/python benchmarks/step_cost.py [--backbone predrnn_v2] [--device cpu]

Writes benchmarks/step_cost.{json,md}.
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
from seemore.config import BDNConfig, LMAConfig
from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import Objective, PlainObjective
from seemore.method.updater import AdamUpdater, Updater

LR = 1e-4
DEFAULT_LMA = LMAConfig()


def step_kinds(
    make_network: Callable[[], Backbone],
) -> dict[str, Callable[[], Updater]]:
    def plain() -> Objective:
        return PlainObjective(make_network())

    def bidirectional() -> Objective:
        return BidirectionalObjective(make_network(), make_network(), BDNConfig())

    def lma(objective: Callable[[], Objective], meta: bool) -> Callable[[], Updater]:
        config = LMAConfig(cycle=1, meta_steps=1 if meta else 0)
        return lambda: LMAUpdater(objective(), LR, config, nullcontext, None)

    return {
        "baseline (Adam, plain)": lambda: AdamUpdater(plain(), LR, nullcontext, None),
        "bdn (Adam, f + g)": lambda: AdamUpdater(bidirectional(), LR, nullcontext, None),
        "lma task step (plain)": lma(plain, meta=False),
        "lma meta step (plain)": lma(plain, meta=True),
        "seemore task step (LMA, f + g)": lma(bidirectional, meta=False),
        "seemore meta step (LMA, f + g)": lma(bidirectional, meta=True),
    }


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(args.threads)
    make_network = network_factory(args)
    updaters, steps = {}, {}
    for label, make_updater in step_kinds(make_network).items():
        torch.manual_seed(0)
        updater = updaters[label] = make_updater()
        clip = random_clip(updater.objective.forward_network, args.batch_size)
        mask = torch.ones(clip.shape[0], clip.shape[1] - 2, device=clip.device)
        steps[label] = lambda u=updater, c=clip, m=mask: u.step(c, m)
    seconds = interleaved_medians(steps, args.repeats, args.device)
    rows = {}
    for label, updater in updaters.items():
        calls = args.repeats + 1
        passes = updater.passes.as_dict()
        rows[label] = {
            "median_seconds": seconds[label],
            "forward_passes_per_step": passes["forward_passes"] / calls,
            "backward_passes_per_step": passes["backward_passes"] / calls,
        }
    baseline = rows["baseline (Adam, plain)"]["median_seconds"]
    for row in rows.values():
        row["ratio_to_baseline"] = row["median_seconds"] / baseline
    meta_share = DEFAULT_LMA.meta_steps / DEFAULT_LMA.cycle
    for prefix in ("lma", "seemore"):
        task = next(r for k, r in rows.items() if k.startswith(f"{prefix} task"))
        meta = next(r for k, r in rows.items() if k.startswith(f"{prefix} meta"))
        average = (
            meta_share * meta["ratio_to_baseline"] + (1 - meta_share) * task["ratio_to_baseline"]
        )
        rows[f"{prefix} stage-two average ({DEFAULT_LMA.meta_steps}/{DEFAULT_LMA.cycle} meta)"] = {
            "ratio_to_baseline": average
        }

    lines = [
        "# Training step cost: baseline, BDN, LMA",
        "",
        f"`{args.backbone}` from `{display_path(args.params)}` on {args.dataset} geometry, batch "
        f"{args.batch_size}, {args.device}, {args.threads} thread(s), median of {args.repeats} "
        f"interleaved steps after a warm-up (torch {torch.__version__}). One run.",
        "",
        "| step | median s | forward / backward passes | ratio to baseline |",
        "|---|---|---|---|",
    ]
    for label, row in rows.items():
        if "median_seconds" in row:
            passes = f"{row['forward_passes_per_step']:g} / {row['backward_passes_per_step']:g}"
            lines.append(
                f"| {label} | {row['median_seconds']:.4f} | {passes} | "
                f"{row['ratio_to_baseline']:.2f} |"
            )
        else:
            lines.append(f"| {label} | | | {row['ratio_to_baseline']:.2f} |")
    write_result("step_cost", {**environment(args), "steps": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
