"""Training step in the default (NCHW) memory format vs channels_last convolution weights,
eager, per backbone and preset configuration.

Why it is here: TAU's compiled CPU step misses issue 13's 1.2x goal (benchmarks/throughput.md)
because its time is in oneDNN convolutions, which compiling leaves as they are. The one layout
change a convolution-bound step can take is channels_last weights (every activation after the
first convolution then follows them). This measures whether that is a win worth a switch: it
is only if it is one at the configurations that are trained, not just the tiny embedded one.

One baseline Adam step (plain objective, fp32) of each backbone, from the same weights, with
every Conv2d/ConvTranspose2d weight left contiguous or made channels_last; interleaved
medians of CPU (or CUDA wall) seconds per step.

    nice -n 10 .venv/bin/python benchmarks/memory_format.py \\
        --settings embedded:human36m:4,openstl:moving_mnist:2 --threads 1

Writes benchmarks/memory_format.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import torch
from method_setup import clock, interleaved_medians, random_clip, write_result
from throughput import preset_params

from seemore.backbones import build_backbone
from seemore.config import Params
from seemore.data import DATASETS
from seemore.method.objective import PlainObjective
from seemore.method.updater import AdamUpdater, Updater

LR = 1e-4
LAYOUTS = ("contiguous", "channels_last")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings",
        default="embedded:human36m:4,openstl:moving_mnist:2",
        help="comma-separated preset:dataset:batch_size",
    )
    parser.add_argument("--backbones", default="", help="default: every backbone of the preset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def updater(params: Params, dataset: str, backbone: str, layout: str, device: str) -> Updater:
    geometry = DATASETS.get(dataset).geometry(params.data[dataset])
    torch.manual_seed(0)
    network = build_backbone(backbone, params.models[dataset][backbone], geometry).to(device)
    if layout == "channels_last":
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                module.weight.data = module.weight.data.contiguous(
                    memory_format=torch.channels_last
                )
    return AdamUpdater(PlainObjective(network), LR, contextlib.nullcontext, None)


def step_seconds(
    params: Params, dataset: str, backbone: str, batch_size: int, args: argparse.Namespace
) -> dict[str, float]:
    updaters = {
        layout: updater(params, dataset, backbone, layout, args.device) for layout in LAYOUTS
    }
    clip = random_clip(updaters["contiguous"].objective.forward_network, batch_size)
    mask = torch.ones(clip.shape[0], clip.shape[1] - 2, device=clip.device)
    runs = {layout: lambda u=each: u.step(clip, mask) for layout, each in updaters.items()}
    return interleaved_medians(runs, args.repeats, args.device, clock(args.device))


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    settings: list[dict[str, Any]] = []
    for setting in args.settings.split(","):
        preset, dataset, batch = setting.split(":")
        params = preset_params(preset)
        backbones = args.backbones.split(",") if args.backbones else list(params.models[dataset])
        rows = {}
        for backbone in backbones:
            seconds = step_seconds(params, dataset, backbone, int(batch), args)
            rows[backbone] = {
                "seconds_per_step": seconds,
                "speedup": seconds["contiguous"] / seconds["channels_last"],
            }
            print(preset, dataset, backbone, rows[backbone], flush=True)
        settings.append(
            {"preset": preset, "dataset": dataset, "batch_size": int(batch), "backbones": rows}
        )
    result = {
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "settings": settings,
    }
    unit = "CPU s" if args.device == "cpu" else "s"
    tables = "\n\n".join(
        f"`{s['preset']}` preset, {s['dataset']}, batch {s['batch_size']}:\n\n"
        f"| backbone | contiguous {unit}/step | channels_last {unit}/step | speedup |\n"
        "|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {row['seconds_per_step']['contiguous']:.4f} | "
            f"{row['seconds_per_step']['channels_last']:.4f} | {row['speedup']:.2f}x |"
            for name, row in s["backbones"].items()
        )
        for s in settings
    )
    markdown = (
        "# Memory format of the training step: contiguous vs channels_last\n\n"
        f"    nice -n 10 .venv/bin/python benchmarks/memory_format.py --settings "
        f"{args.settings} --threads {args.threads}\n\n"
        f"One baseline Adam step (fp32, eager) per backbone, {args.device}, {args.threads} "
        f"thread(s), torch {torch.__version__}; median of {args.repeats} interleaved steps "
        "after one warm-up step each. One run.\n\n"
        f"{tables}\n"
    )
    write_result("memory_format", result, markdown)


if __name__ == "__main__":
    main()
