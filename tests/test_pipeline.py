"""The real Snakefile and dvc.yaml on a tiny params file in a temp copy, down to the report."""

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
import yaml

from seemore import pipeline

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUN = "results/moving_mnist/convlstm/baseline/seed0"


def tiny_params(embedded: dict[str, Any]) -> dict[str, Any]:
    params = embedded
    params["experiment"].update(
        datasets=["moving_mnist"],
        backbones=["predrnn_v2", "convlstm"],
        variants=["baseline", "seemore"],
        seeds=[0],
    )
    params["data"]["moving_mnist"].update(image_size=16, test_clips=4)
    for name in ("predrnn_v2", "convlstm"):
        params["models"]["moving_mnist"][name].update(num_hidden=[4], patch_size=4)
    training = params["training"]["moving_mnist"]
    training.update(batch_size=2)
    training["stage1"]["steps"] = 3
    training["stage2"]["steps"] = 2
    params["evaluation"].update(batch_size=4, lpips=False, samples=2)
    return params


def make_workspace(tmp_path: Path, params: dict[str, Any]) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / "workflow", work / "workflow")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def snakemake_jobs(work: Path) -> list[str]:
    """Rule names of the jobs a dry run would execute."""
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet", "rules", "all"], work)
    jobs: list[str] = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break  # the job-stats table is printed twice
            jobs.extend([parts[0]] * int(parts[1]))
    return sorted(jobs)


def dvc_outputs(work: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(work)) as repo:
        return {
            str(Path(out.fs_path).relative_to(work))
            for stage in repo.index.stages
            for out in stage.outs
        }


def snakemake_outputs(work: Path) -> set[str]:
    out = run([str(BIN / "snakemake"), "--cores", "1", "--summary", "all"], work)
    lines = out.stdout.splitlines()
    files = {line.split("\t")[0] for line in lines[1:] if line.strip()}
    return {f for f in files if not f.endswith(".log") and not f.startswith("logs/")}


def test_dvc_params_mirror_the_pipeline_keys() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    as_dvc = {"dataset": "${item.dataset}", "backbone": "${item.backbone}"}
    expected = {
        "prepare": pipeline.PREPARE_KEYS,
        "train_stage1": pipeline.STAGE_KEYS[1],
        "train_stage2": pipeline.STAGE_KEYS[2],
        "evaluate": pipeline.EVALUATE_KEYS,
    }
    for stage, keys in expected.items():
        assert stages[stage]["params"] == [key.format(**as_dvc) for key in keys], stage


def test_snakemake_and_dvc_declare_the_same_outputs(tmp_path: Path, embedded_raw: dict) -> None:
    params = tiny_params(embedded_raw)
    params["experiment"]["seeds"] = [0, 1]
    work = make_workspace(tmp_path, params)
    run(["git", "init", "-q"], work)
    run([str(BIN / "dvc"), "init", "-q"], work)
    from_dvc = dvc_outputs(work)
    from_snakemake = snakemake_outputs(work)
    # The raw download cache is a DVC output (persistent) but not a Snakemake one.
    assert from_dvc - from_snakemake == {"data/raw/moving_mnist"}
    assert from_snakemake <= from_dvc
    assert "results/moving_mnist/convlstm/baseline/seed1/metrics.json" in from_dvc


@pytest.mark.slow
def test_snakemake_runs_to_the_report_and_reruns_only_what_changed(
    tmp_path: Path, embedded_raw: dict
) -> None:
    params = tiny_params(embedded_raw)
    work = make_workspace(tmp_path, params)
    run([str(BIN / "snakemake"), "--cores", "2", "all"], work)
    html = (work / "reports" / "ablation.html").read_text()
    assert "predrnn_v2" in html and "convlstm" in html
    metrics = json.loads(
        (work / "results/moving_mnist/predrnn_v2/baseline/seed0/metrics.json").read_text()
    )
    assert metrics["data"]["stand_in"] is True
    assert metrics["metrics"]["mse"] > 0
    assert snakemake_jobs(work) == []

    params["training"]["moving_mnist"]["stage2"]["steps"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert snakemake_jobs(work) == sorted(["all", "report"] + ["train_stage2", "evaluate"] * 4)
    params["models"]["moving_mnist"]["convlstm"]["filter_size"] = 5
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    # ConvLSTM's two runs re-train from stage one; PredRNN-V2's still owe the stage-two edit.
    assert snakemake_jobs(work) == sorted(
        ["all", "report"] + ["train_stage1"] * 2 + ["train_stage2", "evaluate"] * 4
    )


@pytest.mark.slow
def test_dvc_repro_runs_to_the_report_pushes_and_reruns_only_what_changed(
    tmp_path: Path, embedded_raw: dict
) -> None:
    params = tiny_params(embedded_raw)
    params["experiment"].update(backbones=["convlstm"], variants=["baseline"])
    work = make_workspace(tmp_path, params)
    run(["git", "init", "-q"], work)
    dvc = str(BIN / "dvc")
    run([dvc, "init", "-q"], work)
    run([dvc, "config", "core.analytics", "false"], work)
    run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], work)
    run([dvc, "repro"], work)
    assert (work / "reports" / "ablation.html").is_file()
    shown = run([dvc, "metrics", "show"], work).stdout
    assert "metrics.mse" in shown
    run([dvc, "push"], work)
    assert any((tmp_path / "remote").rglob("*")), "dvc push stored nothing"
    assert "up to date" in run([dvc, "status"], work).stdout

    # Another clone gets data and checkpoints back from the remote, without re-running.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run([*git, "add", "-A"], work)
    run([*git, "commit", "-qm", "run"], work)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    run([dvc, "pull"], clone)
    for name in ("data/prepared/moving_mnist/test.npy", f"{RUN}/model.pt", f"{RUN}/stage1.pt"):
        assert (clone / name).read_bytes() == (work / name).read_bytes(), name
    assert "up to date" in run([dvc, "status"], clone).stdout

    params["training"]["moving_mnist"]["stage2"]["steps"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    stale = set(json.loads(run([dvc, "status", "--json"], work).stdout))
    assert stale == {"train_stage2@moving_mnist-convlstm-baseline-0"}
    rerun = run([dvc, "repro"], work).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", rerun))
    assert ran == {
        "train_stage2@moving_mnist-convlstm-baseline-0",
        "evaluate@moving_mnist-convlstm-baseline-0",
        "report",
    }
