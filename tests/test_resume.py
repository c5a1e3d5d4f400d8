"""Runs that survive (issue 11): a stage killed anywhere (kill -9, SIGTERM, a crash) and run
again continues from its partial checkpoint and ends bit-identical, tensor by tensor, to a run
that was never interrupted; partial checkpoints of other params are never continued."""

from __future__ import annotations

import contextlib
import copy
import random
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_train import (
    assert_same_stage,
    read_log,
    run_until_step,
    tiny_raw,
    write_params,
)

from seemore import cli, pipeline
from seemore.checkpoint import RESUME_ROOT, load_checkpoint, resume_dir
from seemore.config import load_params

REPO = Path(__file__).resolve().parent.parent
STEPS = 8
VARIANTS = ("baseline", "seemore")


def _raw() -> dict[str, Any]:
    from seemore.recipes import compose_preset

    raw = tiny_raw(compose_preset("embedded"), steps=(STEPS, STEPS))
    raw["experiment"].update(checkpoint_every=2, log_every=1)
    return raw


def _train_args(variant: str, stage: int) -> list[str]:
    return [
        "train",
        "--stage",
        str(stage),
        "--dataset",
        "moving_mnist",
        "--backbone",
        "convlstm",
        "--variant",
        variant,
        "--seed",
        "0",
        "--threads",
        "1",
        "--quiet",
    ]


def _seemore(workspace: Path, args: list[str]) -> None:
    with contextlib.chdir(workspace):
        assert cli.main(args) == 0


def _seemore_crashes(workspace: Path, args: list[str]) -> None:
    with contextlib.chdir(workspace):
        assert cli.main(args) != 0


def _run(variant: str) -> pipeline.Run:
    return pipeline.Run("moving_mnist", "convlstm", variant, 0)


def _stage_output(workspace: Path, variant: str, stage: int) -> Path:
    run = _run(variant)
    return workspace / (run.stage_one.checkpoint if stage == 1 else run.directory / "stage2.pt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with prepared data and both variants trained without interruption."""
    workspace = tmp_path_factory.mktemp("reference")
    write_params(_raw(), workspace / "params.yaml")
    _seemore(workspace, ["prepare", "--dataset", "moving_mnist"])
    for variant in VARIANTS:
        for stage in (1, 2):
            _seemore(workspace, _train_args(variant, stage))
    return workspace


@pytest.fixture
def workspace(reference: Path, tmp_path: Path) -> Path:
    """A fresh workspace with the same params and prepared data, nothing trained."""
    shutil.copy(reference / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(reference / "data", tmp_path / "data")
    return tmp_path


def _assert_same_run(workspace: Path, reference: Path, variant: str) -> None:
    for stage in (1, 2):
        assert_same_stage(
            _stage_output(workspace, variant, stage), _stage_output(reference, variant, stage)
        )
    run_dir = _run(variant).directory
    got = load_checkpoint(workspace / run_dir / "model.pt")["state_dict"]
    want = load_checkpoint(reference / run_dir / "model.pt")["state_dict"]
    assert got.keys() == want.keys()
    assert all(got[k].equal(want[k]) for k in want)
    assert read_log(workspace / run_dir / "train_log.csv") == read_log(
        reference / run_dir / "train_log.csv"
    )
    assert not (workspace / RESUME_ROOT).exists(), "partial checkpoints left after completion"


def _assert_status_shows_stopped(
    workspace: Path, variant: str, stage: int, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    _seemore(workspace, ["status"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "stage", "state", "step", "loss", "eta", "updated"]
    row = next(line.split() for line in lines if f"/{variant}/" in line)
    assert row[1:3] == [str(stage), "stopped"] and row[3].endswith(f"/{STEPS}"), lines
    float(row[4])  # the last logged loss


def _interrupt(workspace: Path, variant: str, stage: int, at_step: int, sig: int) -> str:
    """Run the stage in a subprocess and send `sig` once it has logged step `at_step`."""
    command = [sys.executable, "-m", "seemore.cli", *_train_args(variant, stage)]
    process, lines = run_until_step(command, workspace, stage, at_step)
    process.send_signal(sig)
    assert process.stdout is not None
    output = "".join(lines) + process.stdout.read()
    assert process.wait(timeout=120) == -sig, output
    return output


@pytest.mark.parametrize(("variant", "killed_stage"), [("baseline", 1), ("seemore", 2)])
def test_kill_9_at_random_steps_resumes_bit_identical(
    variant: str,
    killed_stage: int,
    workspace: Path,
    reference: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two kill -9 at random steps of one stage (subprocesses: each costs a torch import; the
    in-process crash test below covers every stage of both variants)."""
    rng = random.Random(variant)
    for stage in (1, 2):
        if stage == killed_stage:
            # After step 3 is logged, step 2's checkpoint exists: the second run resumes.
            first = rng.randrange(3, STEPS - 2)
            _interrupt(workspace, variant, stage, first, signal.SIGKILL)
            _assert_status_shows_stopped(workspace, variant, stage, capsys)
            # A second kill, after the resumed run has moved on.
            second = rng.randrange(first + 1, STEPS - 1)
            output = _interrupt(workspace, variant, stage, second, signal.SIGKILL)
            assert "continuing stage" in output, output
        _seemore(workspace, _train_args(variant, stage))
    _assert_same_run(workspace, reference, variant)


def test_sigterm_checkpoints_at_once_and_resumes_bit_identical(
    workspace: Path, reference: Path
) -> None:
    params = load_params(workspace / "params.yaml")
    for stage, at in ((1, 3), (2, 5)):  # odd steps: between periodic checkpoints
        output = _interrupt(workspace, "seemore", stage, at, signal.SIGTERM)
        done = int(re.search(r"checkpointed at step (\d+)", output).group(1))
        assert done >= at
        output_path = _stage_output(workspace, "seemore", stage).relative_to(workspace)
        run = _run("seemore")
        partial = load_checkpoint(
            workspace
            / resume_dir(output_path, pipeline.stage_hash(params, run, stage))
            / "checkpoint.pt"
        )
        assert (
            partial["done"] == done
            and len([row for row in partial["log"] if row["stage"] == stage]) == done
        )
        _seemore(workspace, _train_args("seemore", stage))
    _assert_same_run(workspace, reference, "seemore")


class Crash(Exception):
    """The job dies: the CLI reports it as an error and exits non-zero."""


@contextlib.contextmanager
def _crash_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> Iterator[None]:
    """The process dies (an exception escapes) while drawing batch `batches + 1`."""
    from seemore.producer import BatchProducer

    original = BatchProducer.next
    drawn = [0]

    def next_or_crash(self: BatchProducer) -> Any:
        drawn[0] += 1
        if drawn[0] > batches:
            raise Crash("simulated crash")
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(BatchProducer, "next", next_or_crash)
        yield


@pytest.mark.parametrize("variant", VARIANTS)
def test_crashes_at_random_steps_resume_bit_identical(
    variant: str, workspace: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(f"crash-{variant}")
    for stage in (1, 2):
        for _ in range(3):
            # At most 3 batches per attempt: 3 attempts end before the last step.
            with _crash_after(monkeypatch, rng.randrange(1, 4)):
                _seemore_crashes(workspace, _train_args(variant, stage))
        _seemore(workspace, _train_args(variant, stage))
    _assert_same_run(workspace, reference, variant)


def test_partial_checkpoints_of_other_params_are_not_continued(
    workspace: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    raw = _raw()
    changed = copy.deepcopy(raw)
    changed["training"]["moving_mnist"]["stage1"]["lr"] = 5e-4
    write_params(changed, workspace / "params.yaml")
    with _crash_after(monkeypatch, 5):
        _seemore_crashes(workspace, _train_args("baseline", 1))
    write_params(raw, workspace / "params.yaml")
    capsys.readouterr()
    _seemore(workspace, _train_args("baseline", 1))
    assert "not continuing the partial checkpoint(s) of other params" in capsys.readouterr().out
    assert_same_stage(
        _stage_output(workspace, "baseline", 1), _stage_output(reference, "baseline", 1)
    )
    assert not (workspace / RESUME_ROOT).exists()


def test_a_partial_checkpoint_claiming_other_params_is_refused(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = load_params(workspace / "params.yaml")
    with _crash_after(monkeypatch, 5):
        _seemore_crashes(workspace, _train_args("baseline", 1))
    output = _stage_output(workspace, "baseline", 1).relative_to(workspace)
    here = workspace / resume_dir(output, pipeline.stage_hash(params, _run("baseline"), 1))
    # Someone copies another run's partial checkpoint into this run's place.
    (here / "checkpoint.pt").rename(here / "other.pt")
    import torch

    forged = torch.load(here / "other.pt", weights_only=True)
    forged["params_hash"] = "0123456789abcdef"
    torch.save(forged, here / "checkpoint.pt")
    capsys.readouterr()
    _seemore_crashes(workspace, _train_args("baseline", 1))
    error = capsys.readouterr().err
    assert "checkpoint.pt: partial checkpoint of params hash 0123456789abcdef" in error
    assert "refused" in error


def test_a_stage_resumed_with_other_settings_records_each_stretch(
    workspace: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A partial checkpoint written on a GPU in bf16 with CUDA graphs (its recorded settings
    say so), continued on this CPU in fp32 eagerly: the resume says what changed, and the
    stage's stats name each stretch's precision and compile mode from its first step."""
    import torch

    params = load_params(workspace / "params.yaml")
    with _crash_after(monkeypatch, 5):
        _seemore_crashes(workspace, _train_args("baseline", 1))
    output = _stage_output(workspace, "baseline", 1).relative_to(workspace)
    partial_path = (
        workspace / resume_dir(output, pipeline.stage_hash(params, _run("baseline"), 1))
    ) / "checkpoint.pt"
    partial = torch.load(partial_path, weights_only=True)
    assert partial["done"] == 4
    assert partial["settings"] == [{"from_step": 0, "precision": "fp32", "compile": "eager"}]
    partial["settings"] = [
        {"from_step": 0, "precision": "bf16-autocast", "compile": "reduce-overhead"}
    ]
    torch.save(partial, partial_path)
    capsys.readouterr()
    _seemore(workspace, _train_args("baseline", 1))
    assert (
        "continuing with precision fp32, compile eager where the partial checkpoint ran "
        "precision bf16-autocast, compile reduce-overhead: float rounding differs"
    ) in capsys.readouterr().out
    stats = load_checkpoint(workspace / output)["stats"]["stage1"]
    assert stats["precision"] == "bf16-autocast from step 0; fp32 from step 4"
    assert stats["compile"] == "reduce-overhead from step 0; eager from step 4"
    # Only the record differs: this run computed in fp32 throughout, as the reference did.
    assert load_checkpoint(reference / output)["stats"]["stage1"]["precision"] == "fp32"
    assert_same_stage(workspace / output, reference / output)
