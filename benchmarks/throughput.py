"""Training throughput: eager versus compiled steps per backbone and step kind, and the data
producer against the step (issue 13).

For each backbone, four step kinds on one batch: baseline (Adam, plain objective), BDN (Adam,
f + g), and SeeMore's stage two, LMA on the BDN objective: its meta step (one extra forward
and backward at the lookahead) and its task step. Each runs eager and compiled
(`Updater.compile` with the mode `experiment.compile: true` gives on the device:
`default` on the CPU, `reduce-overhead`, CUDA graphs, on CUDA). The compiled objects are
shared as in training: one compiled plain objective, one compiled BDN objective serving the
BDN, meta and task steps. The first call of each compiled kind is timed apart (it includes
compiling); steps/s are from the median of interleaved steps after it.

The data producer: Moving MNIST clip generation (`generate_clips` from 60000 random uint8
digits) at the benchmark's batch size and the dataset geometry, by itself and through the
training loop's background `BatchProducer`, against the baseline eager step.

    .venv/bin/python benchmarks/throughput.py            # CPU, embedded preset (small)
    .venv/bin/python benchmarks/throughput.py --paper    # the paper configuration (CUDA)

`--paper` takes seemore/presets/paper.yaml's Moving MNIST geometry, models and batch size.
Writes benchmarks/throughput.{json,md}; evaluation time is benchmarks/evaluation_speed.md's.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from method_setup import display_path, environment, interleaved_medians, random_clip, write_result

from seemore.backbones import Backbone, build_backbone
from seemore.config import BDNConfig, LMAConfig, Params, preset_path, validate_params
from seemore.data import DATASETS
from seemore.data.moving_mnist import generate_clips
from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import Objective, PlainObjective
from seemore.method.updater import AdamUpdater, Updater
from seemore.producer import BatchProducer
from seemore.recipes import compose_preset
from seemore.train import compile_mode_for, precision_for

LR = 1e-4
KINDS = ("baseline", "bdn", "lma meta", "lma task")


def preset_params(name: str) -> Params:
    """A preset's params, composed from its recipes as `seemore use-preset` writes them."""
    return validate_params(compose_preset(name), f"preset {name}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="paper preset, its batch size")
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--dataset", default="human36m")
    parser.add_argument("--backbones", default="predrnn_v2,tau")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--producer-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.paper:
        args.preset, args.dataset = "paper", "moving_mnist"
        args.batch_size = preset_params(args.preset).training["moving_mnist"].batch_size
    args.params = preset_path(args.preset)
    return args


def updaters(
    make_network: Callable[[], Backbone], autocast: Callable[[], Any], mode: str | None
) -> dict[str, Updater]:
    """The four step kinds; the BDN, meta and task steps share one BDN objective."""
    torch.manual_seed(0)
    plain: Objective = PlainObjective(make_network())
    bidirectional: Objective = BidirectionalObjective(make_network(), make_network(), BDNConfig())

    def lma(meta: bool) -> Updater:
        config = LMAConfig(cycle=1, meta_steps=1 if meta else 0, a_max=LR)
        return LMAUpdater(bidirectional, LR, config, autocast, None)

    kinds = {
        "baseline": AdamUpdater(plain, LR, autocast, None),
        "bdn": AdamUpdater(bidirectional, LR, autocast, None),
        "lma meta": lma(meta=True),
        "lma task": lma(meta=False),
    }
    if mode is not None:
        for updater in kinds.values():
            updater.compile(mode)
    return kinds


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_throughput(args: argparse.Namespace, backbone: str) -> dict[str, Any]:
    params = preset_params(args.preset)
    geometry = DATASETS.get(args.dataset).geometry(params.data[args.dataset])
    config = params.models[args.dataset][backbone]
    device = torch.device(args.device)
    _, autocast = precision_for(device)
    mode = compile_mode_for(True, device)
    assert mode is not None

    def make_network() -> Backbone:
        return build_backbone(backbone, config, geometry).to(device)

    eager, compiled = updaters(make_network, autocast, None), updaters(make_network, autocast, mode)
    clip = random_clip(eager["baseline"].objective.forward_network, args.batch_size)
    mask = torch.ones(clip.shape[0], clip.shape[1] - 2, device=clip.device)
    first_call = {}
    for kind, updater in compiled.items():  # compiles, in the order training would
        synchronise(args.device)
        start = time.perf_counter()
        updater.step(clip, mask)
        synchronise(args.device)
        first_call[kind] = time.perf_counter() - start
    runs = {}
    for label, kinds in (("eager", eager), ("compiled", compiled)):
        for kind, updater in kinds.items():
            runs[f"{kind} {label}"] = lambda u=updater: u.step(clip, mask)
    seconds = interleaved_medians(runs, args.repeats, args.device)
    rows = {}
    for kind in KINDS:
        eager_s, compiled_s = seconds[f"{kind} eager"], seconds[f"{kind} compiled"]
        saved = eager_s - compiled_s
        rows[kind] = {
            "eager_steps_per_s": 1 / eager_s,
            "compiled_steps_per_s": 1 / compiled_s,
            "speedup": eager_s / compiled_s,
            "first_compiled_call_s": first_call[kind],
            # Steps after which compiling has paid for itself (None: it never does).
            "break_even_steps": first_call[kind] / saved if saved > 0 else None,
        }
    return {"geometry": vars(geometry), "compile_mode": mode, "kinds": rows}


def producer_throughput(args: argparse.Namespace, baseline_step_s: float) -> dict[str, Any]:
    params = preset_params(args.preset)
    data = params.data[args.dataset]
    geometry = DATASETS.get(args.dataset).geometry(data)
    size, frames = geometry.height, geometry.total_frames
    digits = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    rng = np.random.default_rng(1)
    generate_clips(digits, args.batch_size, frames, size, rng)  # warm-up
    start = time.perf_counter()
    for _ in range(args.producer_batches):
        generate_clips(digits, args.batch_size, frames, size, rng)
    generator_s = (time.perf_counter() - start) / args.producer_batches

    def batches():
        while True:
            yield generate_clips(digits, args.batch_size, frames, size, rng)

    producer = BatchProducer(batches(), rng, torch.device(args.device))
    try:
        producer.next()
        start = time.perf_counter()
        for _ in range(args.producer_batches):
            producer.next()
        produced_s = (time.perf_counter() - start) / args.producer_batches
    finally:
        producer.close()
    return {
        "clip": f"Moving MNIST, {frames} frames of {size}x{size}, batch {args.batch_size}",
        "generator_batches_per_s": 1 / generator_s,
        "producer_batches_per_s": 1 / produced_s,
        "baseline_eager_steps_per_s": 1 / baseline_step_s,
        "generator_share_of_step": generator_s / baseline_step_s,
    }


def markdown(args: argparse.Namespace, results: dict[str, Any], producer: dict[str, Any]) -> str:
    command = "benchmarks/throughput.py" + (" --paper" if args.paper else "")
    lines = [
        "# Training throughput: eager vs compiled, data producer",
        "",
        f"    nice -n 10 .venv/bin/python {command} --threads {args.threads}",
        "",
        f"{args.dataset} geometry from `{display_path(args.params)}`, batch {args.batch_size}, "
        f"{args.device}, {args.threads} thread(s), torch {torch.__version__}; median of "
        f"{args.repeats} interleaved steps after the first call. One run.",
        "",
        "| backbone | step | eager steps/s | compiled steps/s | speedup | first compiled "
        "call s | break-even steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for backbone, result in results.items():
        for kind, row in result["kinds"].items():
            even = row["break_even_steps"]
            lines.append(
                f"| {backbone} | {kind} | {row['eager_steps_per_s']:.2f} | "
                f"{row['compiled_steps_per_s']:.2f} | {row['speedup']:.2f}x | "
                f"{row['first_compiled_call_s']:.1f} | "
                f"{'never' if even is None else f'{even:.0f}'} |"
            )
    lines += [
        "",
        f"Data producer ({producer['clip']}): generator "
        f"{producer['generator_batches_per_s']:.1f} batches/s, through the background "
        f"producer {producer['producer_batches_per_s']:.1f} batches/s, against "
        f"{producer['baseline_eager_steps_per_s']:.2f} baseline eager steps/s (generation is "
        f"{100 * producer['generator_share_of_step']:.1f}% of a step, made ahead on a thread).",
        "",
        f"Machine: {args.threads} thread(s) of a 2-core CPU shared with other sessions (load "
        f"average {os.getloadavg()[0]:.1f} at the end), so absolute times move between runs; "
        "eager and compiled steps are interleaved, so their ratios are comparable. Eager is "
        "today's path (sync-free since issue 13; the step before it: benchmarks/step_cost.md). "
        "Evaluation time: benchmarks/evaluation_speed.md.",
        "",
    ]
    if args.device == "cpu":
        lines += [
            "GPU not measured: none lent. On CUDA run the same script with `--paper` (compiled "
            "= `reduce-overhead`, CUDA graphs) and commit its figures.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    results = {}
    for backbone in args.backbones.split(","):
        print(f"{backbone} ...", flush=True)
        results[backbone] = step_throughput(args, backbone)
    first = next(iter(results.values()))["kinds"]["baseline"]
    producer = producer_throughput(args, 1 / first["eager_steps_per_s"])
    setting = argparse.Namespace(**{**vars(args), "backbone": args.backbones})
    result = {**environment(setting), "paper": args.paper, "backbones": results}
    write_result("throughput", {**result, "producer": producer}, markdown(args, results, producer))


if __name__ == "__main__":
    main()
