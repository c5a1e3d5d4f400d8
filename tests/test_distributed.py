"""Data-parallel training on the CPU (gloo, 2 processes under torchrun) matches the
single-process run with the same global batch: BDN's two networks in stage one, and in stage
two LMA's per-level rates, Adam moments and weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from seemore import distributed

BIN = Path(sys.executable).parent
RUN = "results/moving_mnist/convlstm/seemore/seed0"
STAGE_ONE = "results/moving_mnist/convlstm/stage1/bidirectional/seed0/stage1.pt"


def tiny(embedded: dict[str, Any]) -> dict[str, Any]:
    params = embedded
    params["experiment"].update(
        datasets=["moving_mnist"], backbones=["convlstm"], variants=["seemore"], device="cpu"
    )
    params["data"]["moving_mnist"].update(image_size=16, test_clips=4, val_clips=4)
    params["models"]["moving_mnist"]["convlstm"].update(num_hidden=[4], patch_size=4)
    training = params["training"]["moving_mnist"]
    training.update(batch_size=4)
    training["stage1"]["steps"] = 3
    training["stage2"]["steps"] = 4
    # Meta steps and task steps both happen in stage two.
    params["method"]["lma"].update(cycle=2, meta_steps=1)
    return params


def seemore(work: Path, *args: str, ranks: int = 1) -> None:
    argv = ["train", *args, "--dataset", "moving_mnist", "--backbone", "convlstm", "--seed", "0"]
    command = (
        distributed.torchrun_command(ranks, argv) if ranks > 1 else [str(BIN / "seemore"), *argv]
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint, by its path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    found: dict[str, torch.Tensor] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(tensors(item, f"{prefix}/{key}"))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.update(tensors(item, f"{prefix}/{index}"))
    return found


def assert_close(single: Path, parallel: Path) -> dict[str, Any]:
    a = torch.load(single, weights_only=False)
    b = torch.load(parallel, weights_only=False)
    ta, tb = (
        tensors({"objective": a["objective"], "optimizer": a["optimizer"]}),
        tensors({"objective": b["objective"], "optimizer": b["optimizer"]}),
    )
    assert ta.keys() == tb.keys()
    for name in ta:
        torch.testing.assert_close(tb[name], ta[name], rtol=1e-4, atol=1e-6, msg=name)
    losses_a = [row["loss"] for row in a["log"]]
    losses_b = [row["loss"] for row in b["log"]]
    torch.testing.assert_close(torch.tensor(losses_b), torch.tensor(losses_a), rtol=1e-4, atol=0)
    return a


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process_with_the_same_global_batch(
    tmp_path: Path, embedded_raw: dict
) -> None:
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    single.mkdir()
    (single / "params.yaml").write_text(yaml.safe_dump(tiny(embedded_raw)))
    subprocess.run(
        [str(BIN / "seemore"), "prepare", "--dataset", "moving_mnist"],
        cwd=single,
        check=True,
        capture_output=True,
    )
    shutil.copytree(single, parallel)

    seemore(single, "--stage", "1", "--objective", "bidirectional")
    seemore(parallel, "--stage", "1", "--objective", "bidirectional", ranks=2)
    stage_one = assert_close(single / STAGE_ONE, parallel / STAGE_ONE)
    # Both networks of BDN trained (the backward one is not a copy of the forward one).
    assert any(key.startswith("networks.g.") for key in stage_one["objective"])

    seemore(single, "--stage", "2", "--variant", "seemore")
    seemore(parallel, "--stage", "2", "--variant", "seemore", ranks=2)
    stage_two = assert_close(single / RUN / "stage2.pt", parallel / RUN / "stage2.pt")
    rates = stage_two["optimizer"]["rates"]
    assert not torch.allclose(rates, torch.full_like(rates, rates[0]))  # the rates moved


def test_the_batch_must_divide_over_the_ranks(monkeypatch) -> None:
    monkeypatch.setenv(distributed.WORLD_SIZE_ENV, "1")
    objective = torch.nn.Module()
    assert distributed.shard(objective, 3) is objective  # one process: unchanged
    command = distributed.torchrun_command(2, ["train", "--stage", "1"])
    assert "--nproc-per-node=2" in command
    assert command[-4:] == ["seemore.cli", "train", "--stage", "1"]
