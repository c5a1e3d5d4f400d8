"""The real Snakefile, profiles, .gitignore/.dvcignore and a dvc.yaml written by `seemore
dvc-yaml` on a tiny params file in a temp copy, down to the report; which jobs each kind of
params edit re-runs, asserted for both tools."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from seemore import pipeline

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATASET = "moving_mnist"
RUN = f"results/{DATASET}/convlstm/baseline/seed0"
VARIANTS = ["baseline", "bdn", "lma", "seemore"]


def tiny_params(embedded: dict[str, Any]) -> dict[str, Any]:
    params = embedded
    params["experiment"].update(
        datasets=[DATASET], backbones=["convlstm"], variants=list(VARIANTS), seeds=[0]
    )
    params["data"][DATASET].update(image_size=16, test_clips=4, val_clips=4)
    for name in ("predrnn_v2", "convlstm"):
        params["models"][DATASET][name].update(num_hidden=[4], patch_size=4)
    training = params["training"][DATASET]
    training.update(batch_size=2)
    training["stage1"]["steps"] = 3
    training["stage2"]["steps"] = 3
    params["method"]["lma"].update(cycle=3, meta_steps=1)
    params["evaluation"].update(batch_size=4, lpips=False, samples=2)
    return params


def write_params(work: Path, params: dict[str, Any]) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
    if ok:
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def make_workspace(tmp_path: Path, params: dict[str, Any], name: str = "work") -> Path:
    """A copy of the repository's workflow files, params.yaml and the dvc.yaml it gives."""
    work = tmp_path / name
    pipeline.copy_workflow(REPO, work)
    write_params(work, params)
    run([str(BIN / "seemore"), "dvc-yaml"], work)
    return work


def git_dvc_init(work: Path, remote: Path | None = None) -> None:
    dvc = str(BIN / "dvc")
    run(["git", "init", "-q"], work)
    run([dvc, "init", "-q"], work)
    run([dvc, "config", "core.analytics", "false"], work)
    if remote is not None:
        run([dvc, "remote", "add", "-d", "local", str(remote)], work)


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def snakemake_jobs(work: Path, *extra: str) -> list[str]:
    """Rule names of the jobs a dry run would execute."""
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet", "rules", *extra], work)
    jobs: list[str] = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break  # the job-stats table is printed twice
            jobs.extend([parts[0]] * int(parts[1]))
    return sorted(jobs)


def dvc_stale(work: Path) -> list[str]:
    """Stage names `dvc status` reports as changed, with the matrix item dropped."""
    stale = json.loads(run([str(BIN / "dvc"), "status", "--json"], work).stdout)
    return sorted(name.split("@")[0] for name in stale if name != "report")


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


# The edits whose re-run sets both tools must agree on, and the jobs each one re-runs
# (rule/stage kind -> the variants or objectives it re-runs), after a complete run.
EDITS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "training.stage2": (
        f"training.{DATASET}.stage2.lr",
        {"train_stage2": VARIANTS, "evaluate": VARIANTS},
    ),
    "method.lma": (
        "method.lma.meta_lr",
        {"train_stage2": ["lma", "seemore"], "evaluate": ["lma", "seemore"]},
    ),
    "method.bdn": (
        "method.bdn.state_weight",
        {
            "train_stage1": ["bidirectional"],
            "train_stage2": ["bdn", "seemore"],
            "evaluate": ["bdn", "seemore"],
        },
    ),
    "model": (
        f"models.{DATASET}.convlstm.filter_size",
        {
            "train_stage1": ["bidirectional", "plain"],
            "train_stage2": VARIANTS,
            "evaluate": VARIANTS,
        },
    ),
    "evaluation": ("evaluation.samples", {"evaluate": VARIANTS}),
}
EDITED_VALUES = {
    "training.stage2": 5.0e-4,
    "method.lma": 2.0e-6,
    "method.bdn": 0.5,
    "model": 5,
    "evaluation": 1,
}


def edited(params: dict[str, Any], kind: str) -> dict[str, Any]:
    key, _ = EDITS[kind]
    changed = copy.deepcopy(params)
    *parents, leaf = key.split(".")
    section = changed
    for part in parents:
        section = section[part]
    section[leaf] = EDITED_VALUES[kind]
    return changed


def expected_rule_counts(kind: str, with_report: bool) -> list[str]:
    _, reruns = EDITS[kind]
    jobs = [rule for rule, names in reruns.items() for _ in names]
    return sorted(jobs + (["report", "all"] if with_report else []))


def test_stage_one_is_trained_once_per_objective(embedded_raw: dict) -> None:
    raw = embedded_raw
    runs = list(pipeline.runs(raw))
    stage_ones = pipeline.stage_ones(raw)
    e = raw["experiment"]
    assert len(runs) == len(e["datasets"]) * len(e["backbones"]) * 4
    # baseline/lma share the plain stage one, bdn/seemore the bidirectional one.
    assert len(stage_ones) == len(runs) // 2
    by_variant = {run.variant: run.stage_one for run in runs[:4]}
    assert by_variant["baseline"] == by_variant["lma"] != by_variant["bdn"]
    assert by_variant["bdn"] == by_variant["seemore"]
    assert by_variant["bdn"].checkpoint == Path(
        f"results/{runs[0].dataset}/{runs[0].backbone}/stage1/bidirectional/seed0/stage1.pt"
    )


def test_each_job_reads_only_the_method_settings_it_uses(embedded_raw: dict) -> None:
    raw = embedded_raw
    for run_ in list(pipeline.runs(raw))[:4]:
        one = pipeline.stage_one_keys(raw, run_.stage_one)
        two = pipeline.stage_two_keys(raw, run_)
        bidirectional = run_.variant in ("bdn", "seemore")
        assert ("method.bdn" in one) == bidirectional
        assert ("method.bdn" in two) == bidirectional
        assert ("method.lma" in two) == (run_.variant in ("lma", "seemore"))
        assert "method.lma" not in one
        assert f"training.{run_.dataset}.stage2" in two
        assert f"training.{run_.dataset}.stage2" not in one
    # The recorded hashes follow the same keys: an LMA edit moves only LMA runs' hash.
    lma_edit = copy.deepcopy(raw)
    lma_edit["method"]["lma"]["meta_lr"] = 3e-6
    changed = {
        r.variant
        for r in list(pipeline.runs(raw))[:4]
        if pipeline.stage_hash(raw, r, 2) != pipeline.stage_hash(lma_edit, r, 2)
    }
    assert changed == {"lma", "seemore"}


def test_committed_dvc_yaml_is_the_one_params_give() -> None:
    raw = pipeline.load_plan(REPO / "params.yaml")
    assert (REPO / "dvc.yaml").read_text() == pipeline.render_dvc_yaml(raw)


def test_dvc_run_refuses_a_stale_dvc_yaml_and_a_running_snakemake(
    tmp_path: Path, embedded_raw: dict
) -> None:
    params = tiny_params(embedded_raw)
    work = make_workspace(tmp_path, params)
    seemore = str(BIN / "seemore")
    under_dvc = {"DVC_STAGE": "prepare-moving_mnist"}
    run([seemore, "check"], work, env=under_dvc)
    params["experiment"]["variants"] = ["baseline"]
    write_params(work, params)
    stale = run([seemore, "check"], work, env=under_dvc, ok=False)
    assert stale.returncode == 2
    assert "dvc.yaml is not the one params.yaml gives" in stale.stderr
    assert "run `seemore dvc-yaml`" in stale.stderr
    run([seemore, "check"], work)  # outside DVC it plans nothing from dvc.yaml

    run([seemore, "dvc-yaml"], work)
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("")
    busy = run([seemore, "check"], work, env=under_dvc, ok=False)
    assert busy.returncode == 1  # a runtime condition, not bad input
    assert "snakemake is running in this workspace" in busy.stderr


def test_snakemake_refuses_to_run_beside_dvc(tmp_path: Path, embedded_raw: dict) -> None:
    work = make_workspace(tmp_path, tiny_params(embedded_raw))
    rwlock = work / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True)
    # A stage DVC is running right now: this test's own (live) pid.
    info = {"pid": os.getpid(), "cmd": "dvc repro"}
    rwlock.write_text(json.dumps({"write": {str(work / "results"): info}, "read": {}}))
    result = run([str(BIN / "snakemake"), "-n", "--cores", "1", "all"], work, ok=False)
    assert result.returncode != 0
    assert "dvc is running in this workspace" in result.stdout + result.stderr
    info["pid"] = 2**22 + 12345  # a pid no process has: a crashed dvc's leftover
    rwlock.write_text(json.dumps({"write": {str(work / "results"): info}, "read": {}}))
    assert "train_stage1" in snakemake_jobs(work, "all")


def test_snakemake_and_dvc_declare_the_same_outputs(tmp_path: Path, embedded_raw: dict) -> None:
    params = tiny_params(embedded_raw)
    params["experiment"]["seeds"] = [0, 1]
    work = make_workspace(tmp_path, params)
    git_dvc_init(work)
    from_dvc = dvc_outputs(work)
    from_snakemake = snakemake_outputs(work)
    # The raw download cache is a DVC output (persistent) but not a Snakemake one.
    assert from_dvc - from_snakemake == {f"data/raw/{DATASET}"}
    assert from_snakemake <= from_dvc
    assert f"{RUN.replace('seed0', 'seed1')}/metrics.json" in from_dvc
    stage_ones = {out for out in from_dvc if out.endswith("stage1.pt")}
    assert stage_ones == {
        f"results/{DATASET}/convlstm/stage1/{objective}/seed{seed}/stage1.pt"
        for objective in ("plain", "bidirectional")
        for seed in (0, 1)
    }


@pytest.mark.slow
def test_snakemake_runs_to_the_report_and_reruns_only_what_each_edit_reads(
    tmp_path: Path, embedded_raw: dict
) -> None:
    params = tiny_params(embedded_raw)
    work = make_workspace(tmp_path, params)
    planned = snakemake_jobs(work, "all")
    assert planned.count("train_stage1") == 2  # one per objective, not one per variant
    assert planned.count("train_stage2") == 4
    run([str(BIN / "snakemake"), "--cores", "2", "all"], work)
    html = (work / "reports" / "ablation.html").read_text()
    assert "convlstm" in html
    metrics = json.loads((work / RUN / "metrics.json").read_text())
    assert metrics["data"]["stand_in"] is True
    # Rules no longer hide progress: the job log holds the training log lines.
    assert (work / f"results/{DATASET}/convlstm/stage1/plain/seed0/stage1.log").stat().st_size
    assert snakemake_jobs(work, "all") == []

    for kind in EDITS:
        write_params(work, edited(params, kind))
        assert snakemake_jobs(work, "all") == expected_rule_counts(kind, True), kind
    write_params(work, params)
    assert snakemake_jobs(work, "all") == []


@pytest.mark.slow
def test_dvc_repro_clones_up_to_date_and_reruns_only_what_each_edit_reads(
    tmp_path: Path, embedded_raw: dict
) -> None:
    params = tiny_params(embedded_raw)
    work = make_workspace(tmp_path, params)
    dvc = str(BIN / "dvc")
    git_dvc_init(work, tmp_path / "remote")
    first = run([dvc, "repro"], work).stdout
    ran = re.findall(r"Running stage '([^'@]+)", first)
    assert sorted(name for name in ran if name.startswith("train_stage1")) == [
        f"train_stage1-{DATASET}-convlstm-bidirectional",
        f"train_stage1-{DATASET}-convlstm-plain",
    ]
    assert (work / "reports" / "ablation.html").is_file()
    assert "metrics.mse" in run([dvc, "metrics", "show"], work).stdout
    run([dvc, "push"], work)
    run([*GIT, "add", "-A"], work)
    run([*GIT, "commit", "-qm", "run"], work)
    # The repository's .gitignore keeps results/ out of git: what DVC does not cache is lost.
    tracked = run(["git", "ls-files"], work).stdout.split()
    assert not [name for name in tracked if name.startswith(("results/", "data/", "reports/"))]

    # A fresh clone pulls everything back and has nothing to do.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    run([dvc, "pull"], clone)
    for name in (f"data/prepared/{DATASET}/test.npy", f"{RUN}/model.pt", f"{RUN}/metrics.json"):
        assert (clone / name).read_bytes() == (work / name).read_bytes(), name
    assert dvc_stale(clone) == []
    assert "Running stage" not in run([dvc, "repro"], clone).stdout

    for kind, (_, reruns) in EDITS.items():
        write_params(work, edited(params, kind))
        # `dvc status` names the stages whose own params changed; their downstream stages
        # (evaluate after training, the report) follow when they re-run (asserted below).
        direct = [rule for rule in reruns if rule != "evaluate"] or ["evaluate"]
        expected = sorted(
            f"{rule}-{DATASET}-convlstm-{name}" for rule in direct for name in reruns[rule]
        )
        assert dvc_stale(work) == expected, kind
    write_params(work, params)
    assert dvc_stale(work) == []

    # Re-run for one edit: exactly its jobs run.
    write_params(work, edited(params, "method.lma"))
    ran = set(re.findall(r"Running stage '([^'@]+)", run([dvc, "repro"], work).stdout))
    assert ran == {
        f"{rule}-{DATASET}-convlstm-{variant}"
        for rule in ("train_stage2", "evaluate")
        for variant in ("lma", "seemore")
    } | {"report"}

    # Experiments list every one's metrics.
    run([*GIT, "add", "-A"], work)
    run([*GIT, "commit", "-qm", "lma edit"], work)
    run([dvc, "exp", "run", "-S", "experiment.preset=experiment"], work)
    shown = json.loads(run([dvc, "exp", "show", "--json"], work).stdout)
    entries = []
    for commit in shown:
        entries.append(commit)
        for experiment in commit.get("experiments") or []:
            entries.extend(experiment.get("revs") or [])
    metrics = [(entry.get("data") or {}).get("metrics") or {} for entry in entries]
    assert len(metrics) >= 3  # workspace, the commit, the experiment
    for found in metrics:
        assert "data" in found.get(f"{RUN}/metrics.json", {}), found


class Resources(dict):
    """Snakemake's job resources as the plugin reads them (`.get` and attributes)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def dry_run_jobs(work: Path, *options: str) -> list[dict[str, Any]]:
    """Each job of a dry run: its rule, whether it runs locally, inputs, threads, resources."""
    out = run([str(BIN / "snakemake"), "-n", "--cores", "8", *options, "all"], work).stdout
    jobs: list[dict[str, Any]] = []
    for line in out.splitlines():
        header = re.match(r"^(local)?rule (\w+):$", line)
        if header:
            jobs.append({"rule": header[2], "local": bool(header[1]), "threads": 1, "input": []})
        elif jobs and line.strip().startswith("input:"):
            jobs[-1]["input"] = line.split(":", 1)[1].strip().split(", ")
        elif jobs and line.strip().startswith("threads:"):
            jobs[-1]["threads"] = int(line.split(":")[1])
        elif jobs and line.strip().startswith("resources:"):
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            jobs[-1]["resources"] = Resources(
                (key.strip(), int(value) if value.isdigit() else value) for key, value in pairs
            )
    return jobs


def local_rules(work: Path) -> set[str]:
    """The rules Snakemake runs on the submitting host, as its API parses the Snakefile (a
    dry run does not print them)."""
    code = (
        "from pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import OutputSettings, ResourceSettings\n"
        "with SnakemakeApi(OutputSettings()) as api:\n"
        "    w = api.workflow(resource_settings=ResourceSettings(), snakefile=Path('Snakefile'))\n"
        "    print(' '.join(sorted(w._workflow._localrules)))\n"
    )
    return set(run([sys.executable, "-c", code], work).stdout.split())


@pytest.mark.parametrize(
    ("experiment", "train_gpus", "evaluate_gpus"),
    [({}, 1, 1), ({"gpus_per_run": 2}, 2, 1), ({"device": "cpu"}, 0, 0)],
    ids=["default", "gpus_per_run_2", "cpu"],
)
def test_slurm_profile_jobs_pass_the_plugins_own_checks(
    tmp_path: Path,
    embedded_raw: dict,
    experiment: dict[str, Any],
    train_gpus: int,
    evaluate_gpus: int,
) -> None:
    """The GPUs a cluster job requests follow params.yaml, not the submitting host (which has
    none here); CPUs follow the job's threads."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
    from snakemake_interface_common.exceptions import WorkflowError

    params = tiny_params(embedded_raw)
    params["experiment"].update(experiment)
    work = make_workspace(tmp_path, params)
    jobs = dry_run_jobs(work, "--profile", "workflow/profiles/slurm")
    assert local_rules(work) == {"report", "all"}
    submit = {
        "run_uuid": "u",
        "slurm_logfile": "log",
        "comment_str": "c",
        "account": "",
        "partition": "",
        "workdir": str(work),
    }
    remote = [job for job in jobs if job["rule"] not in ("report", "all")]
    assert {job["rule"] for job in remote} == {
        "prepare",
        "train_stage1",
        "train_stage2",
        "evaluate",
    }
    expected_gpus = {
        "prepare": 0,
        "train_stage1": train_gpus,
        "train_stage2": train_gpus,
        "evaluate": evaluate_gpus,
    }
    for job in remote:
        fake = SimpleNamespace(resources=job["resources"], threads=job["threads"])
        validate_slurm_extra(fake)
        command = get_submit_command(fake, submit)
        # The CPUs SLURM grants are the threads the job's `seemore --threads` uses.
        assert f"--cpus-per-task={job['threads']}" in command
        assert job["threads"] == 4
        gpus = expected_gpus[job["rule"]]
        assert set_gres_string(fake).strip() == (f"--gpus={gpus}" if gpus else ""), job["rule"]
    # What the profile used to do is what the plugin refuses.
    old = SimpleNamespace(resources=Resources(slurm_extra="'--gres=gpu:1'"), threads=1)
    with pytest.raises(WorkflowError):
        validate_slurm_extra(old)


@pytest.mark.parametrize(
    ("source", "lpips", "fetches"),
    [("download", True, True), ("embedded", True, False), ("download", False, False)],
)
def test_lpips_weights_are_fetched_before_evaluation_only_where_data_is_downloaded(
    tmp_path: Path, embedded_raw: dict, source: str, lpips: bool, fetches: bool
) -> None:
    """A workflow that downloads its data fetches LPIPS's weights in a step of its own before
    every evaluation, on the submitting host; the embedded default (no network) has none."""
    params = tiny_params(embedded_raw)
    params["data"][DATASET]["source"] = source
    params["evaluation"]["lpips"] = lpips
    work = make_workspace(tmp_path, params)
    record = str(pipeline.LPIPS_WEIGHTS_RECORD)
    jobs = snakemake_jobs(work, "all")
    assert jobs.count("fetch_weights") == int(fetches)
    evaluate = [job for job in dry_run_jobs(work) if job["rule"] == "evaluate"]
    assert len(evaluate) == len(VARIANTS)
    assert all((record in job["input"]) == fetches for job in evaluate)
    assert ("fetch_weights" in local_rules(work)) == fetches

    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert ("fetch_weights" in stages) == fetches
    if fetches:
        assert stages["fetch_weights"]["cmd"] == f"seemore fetch-weights --allow-offline > {record}"
        assert stages["fetch_weights"]["always_changed"] is True
        assert stages["fetch_weights"]["outs"] == [record]
        git_dvc_init(work)
        assert record in dvc_outputs(work) and record in snakemake_outputs(work)
    for name, stage in stages.items():
        if name.startswith("evaluate-"):
            assert (record in stage["deps"]) == fetches, name


def test_local_gpu_jobs_declare_their_gpus(tmp_path: Path, embedded_raw: dict) -> None:
    work = make_workspace(tmp_path, tiny_params(embedded_raw))
    gpu_of = {}
    for count, expected in (("0", 0), ("2", 1)):
        env = {"SEEMORE_GPU_COUNT": count}
        out = run([str(BIN / "snakemake"), "-n", "--cores", "8", "all"], work, env=env).stdout
        gpu_of[count] = set(re.findall(r"gpu=(\d+)", out))
        assert gpu_of[count] == {str(expected)}, out
    slots = run([sys.executable, "-m", "seemore.devices"], work, env={"SEEMORE_GPU_COUNT": "3"})
    assert slots.stdout.strip() == "3"
