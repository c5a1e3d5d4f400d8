"""The real Makefile's recipes, run by `make` in a copy of the repository whose .venv/bin holds
recording stand-ins for snakemake, seemore, ruff and pytest: every tool receives a command
line its own argument parser accepts, with the targets and options meant (`make run` once
passed `all` as a value of `--resources`, which only running it showed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# What the recipes read from the tree (the rest of the repository is not needed).
COPIED = ("Makefile", "pyproject.toml", "requirements.lock", "params.yaml", "dvc.yaml")
RECORDING = """#!{python}
import json, os, sys
with open(os.environ["MAKE_RECORD"], "a") as record:
    tool = os.environ.get("RECORD_AS") or os.path.basename(sys.argv[0])
    record.write(json.dumps([tool, *sys.argv[1:]]) + "\\n")
"""
# The venv's python: pip and pytest are recorded (pytest exits $PYTEST_EXIT); anything else
# (`python -m seemore.devices`) runs for real.
PYTHON = """#!/bin/sh
case "$1 $2" in
  "-m pip"|"-m pytest")
    RECORD_AS=python {record} "$@"
    exit "${{PYTEST_EXIT:-0}}" ;;
esac
exec {python} "$@"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    work.mkdir()
    for name in COPIED:
        shutil.copy2(REPO / name, work / name)
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    recorder = bin_dir / "record"
    recorder.write_text(RECORDING.format(python=sys.executable))
    for tool in ("snakemake", "seemore", "ruff", "dvc"):
        shutil.copy(recorder, bin_dir / tool)
    (bin_dir / "python").write_text(
        PYTHON.format(record=f'"{bin_dir / "record"}"', python=sys.executable)
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    # Set up already (the stamp is newer than pyproject.toml and requirements.lock).
    (work / ".venv" / ".installed-stamp").touch()
    return work


def make(tree: Path, *args: str, ok: bool = True, **env: str) -> tuple[list[list[str]], str]:
    """Run `make` in `tree`; the command lines the stand-ins received, and make's output."""
    record = tree / "record.jsonl"
    record.unlink(missing_ok=True)
    full_env = {**os.environ, "MAKE_RECORD": str(record), **env}
    full_env.pop("MAKEFLAGS", None)
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=tree,
        env=full_env,
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, output
    calls = (
        [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    )
    return calls, output


def snakemake_args(argv: list[str]) -> Any:
    from snakemake.cli import get_argument_parser

    return get_argument_parser().parse_args(argv)


def seemore_args(argv: list[str]) -> Any:
    from seemore.cli import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize("gpus", ["0", "2"])
def test_make_run_passes_the_target_and_the_gpu_slots(tree: Path, gpus: str) -> None:
    calls, _ = make(tree, "run", SEEMORE_GPU_COUNT=gpus)
    (tool, *argv), *more = calls
    assert tool == "snakemake" and not more, calls
    args = snakemake_args(argv)
    assert args.targets == ["all"]
    assert args.cores == 8
    assert args.resources == {"gpu": args.resources["gpu"]} and args.resources["gpu"].value == int(
        gpus
    )
    calls, _ = make(tree, "run", "CORES=3", SEEMORE_GPU_COUNT=gpus)
    assert snakemake_args(calls[0][1:]).cores == 3


def test_every_target_calls_its_tools_with_command_lines_they_accept(tree: Path) -> None:
    phony = re.search(r"^\.PHONY:(.*)$", (tree / "Makefile").read_text(), re.MULTILINE)
    assert phony is not None
    targets = phony[1].split()
    seen: dict[str, list[list[str]]] = {}
    for target in targets:
        if target == "clean":
            continue
        calls, _ = make(tree, target, SEEMORE_GPU_COUNT="1")
        seen[target] = calls
        for tool, *argv in calls:
            if tool == "snakemake":
                assert snakemake_args(argv).targets, (target, argv)
            elif tool == "seemore":
                seemore_args(argv)
            elif tool == "ruff":
                assert argv == ["check", "."], argv
    assert seen["plan"] == [["seemore", "plan"]]
    assert seen["paper"] == [["seemore", "use-preset", "paper"], ["seemore", "dvc-yaml"]]
    assert seen["openstl"] == [["seemore", "use-preset", "openstl"], ["seemore", "dvc-yaml"]]
    assert seen["embedded"] == [["seemore", "use-preset", "embedded"], ["seemore", "dvc-yaml"]]
    assert seen["lint"] == [["ruff", "check", "."]]
    assert seen["test"] == [["ruff", "check", "."], ["python", "-m", "pytest"]]
    assert seen["setup"] == []  # set up already: nothing to do


def test_setup_installs_the_locked_dependencies_once(tree: Path) -> None:
    (tree / ".venv" / ".installed-stamp").unlink()
    calls, _ = make(tree, "setup")
    assert calls == [
        [
            "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            "requirements.lock",
            "-e",
            ".[dev]",
        ]
    ]
    assert (tree / ".venv" / ".installed-stamp").is_file()
    assert make(tree, "setup")[0] == []


def test_make_test_fails_when_pytest_fails_or_collects_nothing(tree: Path) -> None:
    _, output = make(tree, "test", ok=False, PYTEST_EXIT="5")
    assert "pytest collected no tests: failing" in output
    make(tree, "test", ok=False, PYTEST_EXIT="1")
    make(tree, "test", PYTEST_EXIT="0")


def test_dvc_yaml_is_rewritten_after_params_change(tree: Path) -> None:
    def at(name: str, seconds: float) -> None:
        os.utime(tree / name, (seconds, seconds))

    at("pyproject.toml", 500)
    at("requirements.lock", 500)
    at(".venv/.installed-stamp", 1000)
    at("params.yaml", 2000)
    at("dvc.yaml", 3000)
    assert make(tree, "dvc.yaml")[0] == []  # up to date
    at("params.yaml", 4000)  # edited after dvc.yaml was written
    assert make(tree, "dvc.yaml")[0] == [["seemore", "dvc-yaml"]]


def test_make_clean_removes_only_generated_outputs(tree: Path) -> None:
    for name in ("results/x", "reports/ablation.html", ".snakemake/log/a", "data/prepared/m"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("")
    make(tree, "clean")
    assert not any((tree / name).exists() for name in ("results", "reports", ".snakemake"))
    assert (tree / "data/prepared/m").exists()  # data is kept: it can take hours to prepare
    assert (tree / "params.yaml").exists()
