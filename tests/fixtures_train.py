"""A tiny training workspace: one dataset (Moving MNIST stand-in at 16x16), ConvLSTM, a
few steps per stage; params as a mapping to mutate, and the comparison of two finished runs."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from seemore.checkpoint import load_checkpoint
from seemore.progress import TIMING_COLUMNS


def tiny_raw(embedded_raw: dict[str, Any], steps: tuple[int, int] = (3, 2)) -> dict[str, Any]:
    raw = embedded_raw
    raw["experiment"].update(
        datasets=["moving_mnist"],
        backbones=["convlstm"],
        variants=["baseline", "seemore"],
        device="cpu",
    )
    for section in ("data", "models", "training"):
        raw[section] = {"moving_mnist": raw[section]["moving_mnist"]}
    raw["data"]["moving_mnist"].update(image_size=16, test_clips=4)
    raw["models"]["moving_mnist"]["convlstm"].update(num_hidden=[4], patch_size=4)
    training = raw["training"]["moving_mnist"]
    training.update(batch_size=2)
    training["stage1"]["steps"], training["stage2"]["steps"] = steps
    raw["method"]["lma"].update(cycle=3, meta_steps=1)
    return raw


def write_params(raw: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _tensors_equal(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _tensors_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, f"{where}: nan vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def assert_same_stage(path: Path, expected: Path) -> None:
    """Two stage checkpoints hold the same tensors (weights, optimizer and LMA state), tensor
    by tensor, and the same log apart from its wall-clock columns."""
    got, want = load_checkpoint(path), load_checkpoint(expected)
    for key in ("objective", "optimizer", "step", "params_hash"):
        _tensors_equal(got[key], want[key], f"{path}:{key}")
    _tensors_equal(_without_timing(got["log"]), _without_timing(want["log"]), f"{path}:log")
    for stage, stats in want["stats"].items():
        counts = {k: v for k, v in stats.items() if k.endswith("passes") or k == "meta_steps"}
        assert counts == {k: got["stats"][stage][k] for k in counts}, f"{path}: {stage}"


def read_log(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def run_until_step(
    command: list[str], cwd: Path, stage: int, at_step: int, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a training command; return it, still running, once it has logged step `at_step`
    of `stage` (or once its output ends), with the lines read so far."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        logged = re.search(rf" stage {stage} step (\d+)/", line)
        if logged and int(logged.group(1)) >= at_step:
            break
    return process, lines
