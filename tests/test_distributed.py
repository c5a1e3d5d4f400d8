"""Data-parallel training on the CPU (gloo, 2 processes under torchrun) matches the
single-process run with the same global batch: BDN's two networks in stage one, and in stage
two LMA's per-level rates, Adam moments and weights. A data-parallel stage killed with -9 (the
launcher and both ranks) and run again continues from its partial checkpoint and ends
bit-identical to the uninterrupted data-parallel run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from fixtures_train import assert_same_stage, read_log, run_until_step

from seemore import distributed
from seemore.checkpoint import RESUME_ROOT, load_checkpoint

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
    training["stage2"]["steps"] = 6
    # Meta steps and task steps both happen in stage two.
    params["method"]["lma"].update(cycle=2, meta_steps=1)
    # A partial checkpoint every 2 steps, a log line every step (the kill test waits for it).
    params["experiment"].update(checkpoint_every=2, log_every=1)
    return params


def _command(args: tuple[str, ...], ranks: int) -> list[str]:
    argv = ["train", *args, "--dataset", "moving_mnist", "--backbone", "convlstm", "--seed", "0"]
    return distributed.torchrun_command(ranks, argv) if ranks > 1 else [str(BIN / "seemore"), *argv]


ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def seemore(work: Path, *args: str, ranks: int = 1) -> str:
    command = _command(args, ranks)
    result = subprocess.run(command, cwd=work, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _process_tree(root: int) -> set[int]:
    """`root` and its descendants (torchrun starts each rank in a session of its own)."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = {root}
    while grown := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= grown
    return found


def kill_9_after_step(work: Path, stage: int, at_step: int, *args: str) -> None:
    """Run a 2-rank stage; once a rank has logged `at_step`, kill -9 the launcher and ranks."""
    process, output = run_until_step(_command(args, 2), work, stage, at_step, ENV)
    for pid in _process_tree(process.pid):
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(output)


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Workspaces with both stages trained in one process and, uninterrupted, on 2 ranks."""
    from seemore.recipes import compose_preset

    single = tmp_path_factory.mktemp("single")
    parallel = tmp_path_factory.mktemp("parallel")
    (single / "params.yaml").write_text(yaml.safe_dump(tiny(compose_preset("embedded"))))
    seemore_prepare = [str(BIN / "seemore"), "prepare", "--dataset", "moving_mnist"]
    subprocess.run(seemore_prepare, cwd=single, check=True, capture_output=True)
    shutil.copytree(single, parallel, dirs_exist_ok=True)
    for work, ranks in ((single, 1), (parallel, 2)):
        seemore(work, "--stage", "1", "--objective", "bidirectional", ranks=ranks)
        seemore(work, "--stage", "2", "--variant", "seemore", ranks=ranks)
    return {"single": single, "parallel": parallel}


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process_with_the_same_global_batch(
    trained: dict[str, Path],
) -> None:
    single, parallel = trained["single"], trained["parallel"]
    stage_one = assert_close(single / STAGE_ONE, parallel / STAGE_ONE)
    # Both networks of BDN trained (the backward one is not a copy of the forward one).
    assert any(key.startswith("networks.g.") for key in stage_one["objective"])

    stage_two = assert_close(single / RUN / "stage2.pt", parallel / RUN / "stage2.pt")
    rates = stage_two["optimizer"]["rates"]
    assert not torch.allclose(rates, torch.full_like(rates, rates[0]))  # the rates moved


@pytest.mark.slow
def test_a_killed_data_parallel_stage_resumes_bit_identical(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Stage two (BDN's two networks, LMA's rates and moments, Adam) on 2 ranks, killed with
    -9 after step 3 (a periodic checkpoint exists), run again on 2 ranks."""
    parallel = trained["parallel"]
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(parallel / "params.yaml", work / "params.yaml")
    shutil.copytree(parallel / "data", work / "data")
    (work / STAGE_ONE).parent.mkdir(parents=True)
    shutil.copy(parallel / STAGE_ONE, work / STAGE_ONE)
    args = ("--stage", "2", "--variant", "seemore")
    kill_9_after_step(work, 2, 3, *args)
    assert not (work / RUN / "stage2.pt").exists()
    # The ranks may pass the step-4 checkpoint before the kill lands on a loaded machine:
    # the resume must continue from exactly the partial checkpoint the kill left.
    (partial,) = (work / RESUME_ROOT).rglob("checkpoint.pt")
    done = load_checkpoint(partial)["done"]
    assert done in (2, 4), done
    output = seemore(work, *args, ranks=2)
    assert f"continuing stage 2 from step {done} " in output, output
    assert_same_stage(work / RUN / "stage2.pt", parallel / RUN / "stage2.pt")
    for name in ("model.pt", "model_best.pt"):
        got = torch.load(work / RUN / name, weights_only=True)["state_dict"]
        want = torch.load(parallel / RUN / name, weights_only=True)["state_dict"]
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want), name
    assert read_log(work / RUN / "train_log.csv") == read_log(parallel / RUN / "train_log.csv")
    assert not (work / RESUME_ROOT).exists()
    # And so it still matches the single-process run with the same global batch.
    assert_close(trained["single"] / RUN / "stage2.pt", work / RUN / "stage2.pt")


def test_the_batch_must_divide_over_the_ranks(monkeypatch) -> None:
    monkeypatch.setenv(distributed.WORLD_SIZE_ENV, "1")
    objective = torch.nn.Module()
    assert distributed.shard(objective, 3) is objective  # one process: unchanged
    command = distributed.torchrun_command(2, ["train", "--stage", "1"])
    assert "--nproc-per-node=2" in command
    assert command[-4:] == ["seemore.cli", "train", "--stage", "1"]
    # The job's CPUs (SLURM's cpus_per_task = its --threads) are shared by its ranks.
    shared = distributed.torchrun_command(2, ["train", "--threads", "4", "--seed", "0"])
    assert shared[-5:] == ["train", "--threads", "2", "--seed", "0"]
    assert distributed.torchrun_command(4, ["train", "--threads", "2"])[-1] == "1"
