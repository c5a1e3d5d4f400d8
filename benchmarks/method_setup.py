"""Shared set-up of the SeeMore method benchmarks: a backbone from a params file, a random
clip of its geometry, timing, and writing a JSON + markdown result beside the scripts."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seemore.backbones import Backbone, build_backbone
from seemore.config import load_params
from seemore.data import DATASETS
from seemore.data.base import atomic_write_bytes

BENCHMARKS_DIR = Path(__file__).resolve().parent


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dataset", default="moving_mnist")
    parser.add_argument("--backbone", default="predrnn_v2")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def network_factory(args: argparse.Namespace) -> Callable[[], Backbone]:
    params = load_params(args.params)
    geometry = DATASETS.get(args.dataset).geometry(params.data[args.dataset])
    config = params.models[args.dataset][args.backbone]
    device = torch.device(args.device)
    return lambda: build_backbone(args.backbone, config, geometry).to(device)


def random_clip(network: Backbone, batch_size: int) -> torch.Tensor:
    g = network.geometry
    device = next(network.parameters()).device
    generator = torch.Generator().manual_seed(0)
    clip = torch.rand(
        batch_size, g.total_frames, g.channels, g.height, g.width, generator=generator
    )
    return clip.to(device)


def clock(device: str) -> Callable[[], float]:
    """CPU seconds of this process on a CPU (the machine is shared: other sessions' load
    inflates wall time, not this process's CPU time; with one thread they are the same on
    an idle core); wall seconds on a GPU, whose work the CPU only waits for."""
    return time.process_time if device == "cpu" else time.perf_counter


def interleaved_medians(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    device: str,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median time of each run by `clock` (wall time unless given) after one warm-up call
    each. Rounds take every run in turn, so a change in machine load (shared CPUs) hits all
    of them alike."""

    def synchronise() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for run in runs.values():
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            synchronise()
            start = clock()
            run()
            synchronise()
            times[label].append(clock() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def display_path(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(BENCHMARKS_DIR.parent))
    except ValueError:
        return str(path)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "params": display_path(args.params),
        "dataset": args.dataset,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, result: dict[str, Any], markdown: str) -> None:
    json_text = json.dumps(result, indent=2) + "\n"
    atomic_write_bytes(BENCHMARKS_DIR / f"{name}.json", lambda f: f.write(json_text.encode()))
    atomic_write_bytes(BENCHMARKS_DIR / f"{name}.md", lambda f: f.write(markdown.encode()))
    print(markdown)
