"""Checkpoint overhead at the paper configuration (benchmarks/resume.md): bytes, save and load
seconds of a partial checkpoint of PredRNN-V2 (one network, and BDN's two) with Adam moments."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from seemore.backbones import BACKBONES
from seemore.backbones.reference import reference_config
from seemore.checkpoint import load_checkpoint, save_atomic
from seemore.method.updater import adam


def measure(networks: int) -> None:
    config, geometry = reference_config("predrnn_v2", "moving_mnist")
    build = BACKBONES.get("predrnn_v2")
    modules = torch.nn.ModuleList(build(config, geometry) for _ in range(networks))
    optimizer = adam(modules.parameters(), 1e-4)
    for parameter in modules.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # allocates both moments, as after any real step
    path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    state = {"format": 1, "objective": modules.state_dict(), "optimizer": optimizer.state_dict()}
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        size = save_atomic(state, path)
        seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    load_checkpoint(path)
    load = time.perf_counter() - started
    parameters = sum(p.numel() for p in modules.parameters())
    print(
        f"networks={networks} parameters={parameters} bytes={size} "
        f"save_s={min(seconds):.3f}/{max(seconds):.3f} load_s={load:.3f}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    for count in (1, 2):
        measure(count)
