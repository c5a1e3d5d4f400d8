"""The `seemore` command line: what Snakemake rules and DVC stages call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from seemore.cli import main


def test_info_prints_parameters_and_flops_at_the_reference(capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["info", "--backbone", "predrnn_v2", "--dataset", "moving_mnist", "--reference"]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 23_855_104  # the authors' PredRNN-V2 at the paper config
    assert info["flops_per_clip"] == 233_178_136_576


def test_info_uses_the_active_params(
    tmp_path: Path, embedded_raw: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(embedded_raw))
    assert main(["--params", str(params), "info", "--backbone", "tau", "--dataset", "kth"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["geometry"]["height"] == 32 and info["kind"] == "clip-wise"
    assert info["configuration"] == str(params)


def test_errors_name_the_problem_and_exit_2(
    tmp_path: Path, embedded_raw: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    embedded_raw["training"]["moving_mnist"]["batch_size"] = 0
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(embedded_raw))
    assert main(["--params", str(params), "check"]) == 2
    assert "training.moving_mnist.batch_size = 0" in capsys.readouterr().err

    args = ["train", "--stage", "1", "--dataset", "moving_mnist", "--backbone", "convlstm"]
    embedded_raw["training"]["moving_mnist"]["batch_size"] = 8
    params.write_text(yaml.safe_dump(embedded_raw))
    assert main(["--params", str(params), *args, "--variant", "baseline", "--seed", "0"]) == 2
    assert "not in the experiment matrix" in capsys.readouterr().err


def test_missing_licensed_files_give_one_clear_message(
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    section = embedded_raw["data"]["human36m"]
    section.update(source="local", root=str(tmp_path / "h36m"))
    del section["train_clips"], section["test_clips"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(embedded_raw))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(params), "prepare", "--dataset", "human36m"]) == 2
    message = capsys.readouterr().err
    assert "h36m" in message and "S9" in message
    assert not (tmp_path / "data" / "prepared" / "human36m" / "meta.json").exists()


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


COMMANDS = [
    "prepare",
    "train",
    "evaluate",
    "report",
    "info",
    "use-preset",
    "plan",
    "check",
    "status",
    "fetch-weights",
    "dvc-yaml",
]


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in COMMANDS])
def test_help_lists_every_registered_name_with_its_description(
    argv: list[str], capsys: pytest.CaptureFixture
) -> None:
    from seemore.backbones import BACKBONES
    from seemore.data import DATASETS
    from seemore.method.variants import VARIANTS

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for registry in (DATASETS, BACKBONES, VARIANTS):
        for name in registry:
            description = registry.get(name).description
            assert description and "\n" not in description
            assert any(line.split() == [name, *description.split()] for line in lines), name
    for dataset in DATASETS:
        benchmark = DATASETS.get(dataset)
        for protocol in benchmark.protocols:
            reference = benchmark.protocols.get(protocol).reference
            label = f"{dataset}/{protocol}"
            assert any(
                line.split()[:1] == [label] and line.endswith(reference) for line in lines
            ), label
    for preset in ("embedded", "paper"):
        assert any(line.split()[:1] == [preset] and len(line.split()) > 3 for line in lines)
    assert "--params FILE" in "\n".join(lines) and "--debug" in "\n".join(lines)


def test_name_options_accept_only_registered_names(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--dataset", "mnist"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dataset: invalid choice: 'mnist'" in err and "moving_mnist" in err


def test_global_options_before_or_after_the_command(
    tmp_path: Path, embedded_raw: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    params = _write(tmp_path, embedded_raw)
    assert main(["--params", str(params), "check"]) == 0
    assert main(["check", "--params", str(params)]) == 0
    assert main(["--debug", "check", "--params", str(params)]) == 0
    assert capsys.readouterr().out.count(f"{params}: valid; 32 runs") == 3
    # After the command it wins over the default, not over nothing: a missing file is named.
    assert main(["check", "--params", str(tmp_path / "none.yaml"), "--debug"]) == 2
    assert "none.yaml: cannot read params file" in capsys.readouterr().err


def test_info_lists_the_levels_lma_gives_rates_to(capsys: pytest.CaptureFixture) -> None:
    args = ["info", "--backbone", "predrnn_v2", "--dataset", "moving_mnist", "--reference"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    levels = info["levels"]
    # The authors' four ST-LSTM layers, then the head level; every parameter in one level.
    assert len(levels) == 5
    assert sum(level["parameters"] for level in levels) == info["parameters"] == 23_855_104


def _fail_training(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def train_stage(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr("seemore.train.train_stage", train_stage)


TRAIN = [
    "train",
    "--stage",
    "1",
    "--dataset",
    "moving_mnist",
    "--backbone",
    "predrnn_v2",
    "--variant",
    "baseline",
    "--seed",
    "0",
]


def _simulated_errors() -> list[tuple[BaseException, str, int]]:
    import errno
    import pickle
    import urllib.error

    return [
        (MemoryError(), "out of memory (MemoryError); lower training.batch_size", 1),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "out of GPU memory: CUDA out of memory. Tried to allocate 2.00 GiB; lower",
            1,
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "results/x/stage1.pt"),
            "no space left on device writing results/x/stage1.pt; free space",
            1,
        ),
        (
            urllib.error.URLError(OSError(-3, "Temporary failure in name resolution")),
            "cannot reach the download source ([Errno -3] Temporary failure in name "
            "resolution); this step needs network access",
            1,
        ),
        (TimeoutError("The read operation timed out"), "timed out (The read operation", 1),
        (
            pickle.UnpicklingError("Weights only load failed.\nRe-running may help"),
            "a checkpoint could not be read (Weights only load failed. Re-running may help)",
            2,
        ),
        (
            RuntimeError(
                "PytorchStreamReader failed reading zip archive: failed finding central directory"
            ),
            "a checkpoint could not be read (PytorchStreamReader failed",
            2,
        ),
        (EOFError("Ran out of input"), "a checkpoint could not be read (Ran out of input)", 2),
        (PermissionError(13, "Permission denied", "results"), "results: Permission denied", 1),
        (ZeroDivisionError("division by zero"), "unexpected ZeroDivisionError: division", 1),
        (KeyboardInterrupt(), "interrupted", 130),
    ]


@pytest.mark.parametrize(("error", "message", "status"), _simulated_errors())
def test_every_error_is_one_line_and_debug_adds_the_traceback(
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    message: str,
    status: int,
) -> None:
    params = _write(tmp_path, embedded_raw)
    _fail_training(monkeypatch, error)
    assert main([*TRAIN, "--params", str(params)]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"seemore train: error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err

    assert main([*TRAIN, "--params", str(params), "--debug"]) == status
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith(f"seemore train: error: {message}")


def test_a_truncated_checkpoint_is_one_line(
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = _write(tmp_path, embedded_raw)
    monkeypatch.chdir(tmp_path)
    stage1 = Path("results/moving_mnist/predrnn_v2/stage1/plain/seed0/stage1.pt")
    stage1.parent.mkdir(parents=True)
    torch.save({"format": 1, "objective": {"w": torch.zeros(1000)}}, stage1)
    whole = stage1.read_bytes()
    stage1.write_bytes(whole[: len(whole) // 2])
    args = [arg if arg != "1" else "2" for arg in TRAIN]
    assert main([*args, "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seemore train: error: ") and err.count("\n") == 1
    assert "checkpoint" in err and "truncated" in err and "re-run the stage" in err
    assert "stage1.pt" in err


def test_no_space_left_while_preparing_leaves_no_valid_looking_split(
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    import numpy as np

    embedded_raw["data"]["taxibj"].update(train_clips=8, test_clips=4)
    params = _write(tmp_path, embedded_raw)
    monkeypatch.chdir(tmp_path)

    def full_disk(file: Any, array: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    assert main(["prepare", "--dataset", "taxibj", "--params", str(params)]) == 1
    assert capsys.readouterr().err == (
        "seemore prepare: error: no space left on device; free space (seemore plan estimates "
        "what the run needs) and re-run\n"
    )
    prepared = tmp_path / "data" / "prepared" / "taxibj"
    assert not list(prepared.glob("*.npy")) and not (prepared / "meta.json").exists()


def test_the_paper_preset_offline_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.error
    import urllib.request

    from seemore.recipes import preset_text

    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    paper = tmp_path / "params.yaml"
    paper.write_text(preset_text("paper"))
    assert main(["prepare", "--dataset", "kth", "--params", str(paper)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("seemore prepare: error: ") and err.count("\n") == 1
    assert "Temporary failure in name resolution" in err


def test_an_unknown_option_is_named_with_its_commands_usage(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--bogus", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: seemore plan ")
    assert err.splitlines()[-1] == "seemore plan: error: unrecognized arguments: --bogus 1"


def test_info_refuses_a_named_params_file_that_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the reference configuration
    args = ["info", "--backbone", "tau", "--dataset", "kth"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["configuration"].startswith("reference")
    assert main([*args, "--params", "nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "seemore info: error: nope.yaml: cannot read params file: No such file or directory\n"
    )


def test_preset_descriptions_are_whole_first_sentences() -> None:
    from seemore.cli import preset_descriptions
    from seemore.config import preset_path

    for name, description in preset_descriptions():
        comment = " ".join(
            line.removeprefix("#").strip()
            for line in preset_path(name).read_text().splitlines()
            if line.startswith("#")
        )
        assert description.endswith(".") and comment.startswith(description), name
    assert dict(preset_descriptions())["paper"].endswith("the four ablation variants.")


def test_a_closed_pipe_ends_quietly(
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`seemore check | head -0`: the reader is gone; exit 0, no error line."""
    import os
    import sys

    params = _write(tmp_path, embedded_raw)
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert main(["check", "--params", str(params)]) == 0
    assert capsys.readouterr().err == ""
