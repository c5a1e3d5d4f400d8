"""The `seemore` command line: what Snakemake rules and DVC stages call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
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
