"""20 random kill -9 over a whole `snakemake --cores 2 all` run (issue 11; benchmarks/resume.md).

Two temp copies of the repository's workflow (its real Snakefile, profiles and .gitignore, as
tests/test_pipeline.py builds them) run a tiny params file: one to the end without
interruption (the reference, whose timeline also gives the kill moments), one killed 20 times.
The kill moments are seeded random times of the reference run, each mapped to what was
running then (a training job's step, a time into another job, or snakemake's own start-up);
the killed run is watched and, once it reaches the next point, snakemake and every job
process are stopped and killed with SIGKILL at once. A point that goes by unreached (its job
finished first in this run) is skipped; when none are left, more are drawn from the work
still left. Then `snakemake --cores 2 all` again (`snakemake --unlock` first when the killed
snakemake left its lock behind, as the next run would ask), until all kills have happened and
a run finishes. Finally every output of the two workspaces is compared: checkpoints and
models tensor by tensor, JSON and CSV field by field, the rest byte by byte; every
difference is listed with its field.

    nice -n 10 .venv/bin/python benchmarks/kill_pipeline.py [--kills 20] [--seed 11]

Writes benchmarks/kill_pipeline.json; Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seemore import pipeline
from seemore.checkpoint import (
    PARTIAL_CHECKPOINT,
    RESUME_ROOT,
    CheckpointError,
    load_checkpoint,
)
from seemore.progress import PROGRESS_FILE

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = Path(__file__).with_suffix(".json")
DATASET, BACKBONE = "moving_mnist", "convlstm"
VARIANTS = ["baseline", "bdn", "lma", "seemore"]
STEPS = (96, 96)
POLL_S = 0.1
# Fields that hold wall-clock measurements or the date, the only ones that may differ between
# the runs; model_sha256 (metrics.json) is the hash of model.pt, whose stats hold seconds.
WALL_CLOCK = {
    "seconds",
    "seconds_per_step",
    "steps_per_s",
    "eta_s",
    "wall_time_s",
    "train_seconds_per_step",
    "inference_seconds_per_clip",
    "date",
    "model_sha256",
}
# In the rendered report: durations ("0.0783 s") and timestamps, masked before comparing.
REPORT_WALL_CLOCK = re.compile(r"\b\d[\d.e+-]* s\b|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+\d:Z]*")
OUTPUT_ROOTS = ("data/prepared", "results", "reports")


def tiny_params() -> dict[str, Any]:
    from seemore.recipes import compose_preset

    params = compose_preset("embedded")
    params["experiment"].update(
        datasets=[DATASET],
        backbones=[BACKBONE],
        variants=VARIANTS,
        seeds=[0],
        device="cpu",
        checkpoint_every=8,
        log_every=1,
    )
    for section in ("data", "models", "training"):
        params[section] = {DATASET: params[section][DATASET]}
    params["data"][DATASET].update(image_size=16, test_clips=8, val_clips=4)
    params["models"][DATASET][BACKBONE].update(num_hidden=[8, 8], patch_size=2)
    training = params["training"][DATASET]
    training.update(batch_size=4)
    training["stage1"]["steps"], training["stage2"]["steps"] = STEPS
    training["stage2"]["eval_every"] = 12
    params["method"]["lma"].update(cycle=4, meta_steps=1)
    params["evaluation"].update(batch_size=4, lpips=False, samples=2)
    return params


def make_workspace(root: Path, name: str, params: dict[str, Any]) -> Path:
    work = root / name
    pipeline.copy_workflow(REPO, work)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


# --- processes -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2])


def tree(root: int) -> set[int]:
    """`root`, its descendants and the members of its process group."""
    parents: dict[int, int] = {}
    members = {root}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            parents[int(entry)] = info[0]
            if info[1] == root:
                members.add(int(entry))
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid for pid in members if pid in parents or pid == root}


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def job_name(argv: list[str]) -> str | None:
    """The pipeline job a `seemore` process runs, e.g. `train_stage2 lma`."""
    for index, word in enumerate(argv):
        if word.endswith("/seemore") or word in ("seemore", "seemore.cli"):
            args = argv[index + 1 :]
            break
    else:
        return None
    if not args:
        return None
    options = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    if args[0] == "train":
        which = options.get("--objective") or options.get("--variant")
        return f"train_stage{options.get('--stage')} {which}"
    if args[0] == "evaluate":
        return f"evaluate {options.get('--variant')}"
    if args[0] in ("prepare", "report", "check"):
        return args[0]
    return None


def running_jobs(root: int) -> dict[str, int]:
    """Job name -> pid of each `seemore` process under `root` (not the shell around it)."""
    jobs: dict[str, int] = {}
    for pid in tree(root):
        name = job_name(cmdline(pid))
        if name is not None:
            jobs[name] = pid
    return jobs


def kill_all(root: int) -> list[int]:
    """Freeze the whole tree (so nothing new starts), then SIGKILL every process in it."""
    stopped: set[int] = set()
    for _ in range(3):  # children born while stopping are caught by the next pass
        for pid in tree(root) - stopped:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.add(pid)
            except ProcessLookupError:
                pass
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(stopped)


# --- progress --------------------------------------------------------------------------------


def files_named(root: Path, name: str) -> list[Path]:
    """Files called `name` below `root`, read while jobs create and remove directories."""
    return [Path(d) / name for d, _, files in os.walk(root) if name in files]


def training_progress(work: Path) -> dict[str, dict[str, Any]]:
    """Job name -> its live progress.json (run, step, pid) of every unfinished stage."""
    found = {}
    for path in files_named(work / RESUME_ROOT, PROGRESS_FILE):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced or removed meanwhile
            continue
        # The run label is the stage's directory: .../stage1/<objective>/seed0 (stage one)
        # or .../<variant>/seed0.
        found[f"train_stage{status['stage']} {Path(status['run']).parent.name}"] = status
    return found


def partial_steps(work: Path) -> dict[str, int]:
    """Job name -> steps done in its partial checkpoint (unfinished stages only)."""
    found = {}
    for path in files_named(work / RESUME_ROOT, PARTIAL_CHECKPOINT):
        try:
            partial = load_checkpoint(path)
        except (OSError, CheckpointError):  # removed meanwhile (the stage completed)
            continue
        # resume/<stage dir>/stage<k>.pt/<params hash>/checkpoint.pt; the stage dir ends in
        # <objective or variant>/seed0.
        which = path.parents[3].name
        found[f"train_stage{partial['stage']} {which}"] = int(partial["done"])
    return found


@dataclass
class Timeline:
    """When each job ran in one snakemake run (seconds since its start), and training steps."""

    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    steps: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    total_s: float = 0.0


def watch(process: subprocess.Popen[bytes], work: Path, timeline: Timeline) -> None:
    """Follow an uninterrupted run to its end, recording its timeline."""
    start = time.monotonic()
    while process.poll() is None:
        now = time.monotonic() - start
        live = running_jobs(process.pid)
        for name in live:
            timeline.started.setdefault(name, now)
        for name in list(timeline.started):
            if name not in live and name not in timeline.ended:
                timeline.ended[name] = now
        for name, status in training_progress(work).items():
            if status["pid"] == live.get(name):
                seen = timeline.steps.setdefault(name, [])
                if not seen or seen[-1][1] != status["step"]:
                    seen.append((now, status["step"]))
        time.sleep(POLL_S)
    timeline.total_s = time.monotonic() - start
    for name in timeline.started:
        timeline.ended.setdefault(name, timeline.total_s)


@dataclass
class Target:
    """Where a kill should land: `job` at `step` (training), `offset` s into `job`, or
    `offset` s into snakemake's start-up (`at_s`: the moment of the reference run drawn)."""

    at_s: float
    kind: str  # step | into | startup
    job: str = ""
    step: int = 0
    offset: float = 0.0


def _windows(timeline: Timeline, work: Path | None, startup: bool) -> list[tuple[float, float]]:
    """Spans of the reference run to draw kill moments from: snakemake's start-up before the
    first job and each job's run, or with `work` only what the killed run has left (its
    unfinished jobs, a training job's from the step its partial checkpoint holds)."""
    done = {} if work is None else partial_steps(work)
    first = min(t for name, t in timeline.started.items() if name != "check")
    windows = [(0.0, first)] if startup else []
    for name, start in timeline.started.items():
        if name == "check" or (work is not None and outputs_done(work, name)):
            continue
        logged = [t for t, step in timeline.steps.get(name, []) if step <= done.get(name, 0)]
        windows.append((max([start, *logged]), timeline.ended[name]))
    return windows


def _uniform(windows: list[tuple[float, float]], rng: random.Random) -> float:
    pick = rng.uniform(0, sum(end - start for start, end in windows))
    for start, end in windows:
        if pick <= end - start:
            return start + pick
        pick -= end - start
    return windows[-1][1]


def _target_at(at: float, timeline: Timeline, work: Path | None, rng: random.Random) -> Target:
    """The point of the pipeline the reference had reached at `at`: a training job's step, a
    time into another job (one of those running then, at random) or the start-up."""
    jobs = {name: t for name, t in timeline.started.items() if name != "check"}
    if at < min(jobs.values()):
        return Target(at, "startup", offset=at)
    live = sorted(
        name
        for name, start in jobs.items()
        if start <= at <= timeline.ended[name] and (work is None or not outputs_done(work, name))
    )
    name = rng.choice(live)
    logged = [step for t, step in timeline.steps.get(name, []) if t <= at]
    if name.startswith("train") and logged:
        return Target(at, "step", name, step=logged[-1])
    return Target(at, "into", name, offset=at - jobs[name])


def planned_targets(timeline: Timeline, kills: int, rng: random.Random) -> list[Target]:
    """`kills` seeded random moments over the whole reference run, in time order."""
    windows = _windows(timeline, None, startup=True)
    moments = sorted(_uniform(windows, rng) for _ in range(kills))
    return [_target_at(at, timeline, None, rng) for at in moments]


def left_target(timeline: Timeline, work: Path, rng: random.Random) -> Target | None:
    """A seeded random moment within the work the killed run has left (when the planned
    points have all gone by)."""
    windows = _windows(timeline, work, startup=False)
    if sum(end - start for start, end in windows) <= 0:
        return None
    return _target_at(_uniform(windows, rng), timeline, work, rng)


@dataclass
class Kill:
    target: dict[str, Any]
    attempt: int
    after_s: float
    skipped: int  # planned points that went by unreached in this run (their job finished)
    running: dict[str, Any]  # job -> its last logged step (training) or seconds into it
    partial_after: dict[str, int]
    processes_killed: int


def _incomplete(work: Path, output: Path) -> bool:
    """Whether snakemake marked `output` incomplete (its job started and did not finish)."""
    records = work / ".snakemake" / "incomplete"
    names = (str(output.relative_to(work)), str(output))
    return any((records / urlsafe_b64encode(n.encode()).decode()).exists() for n in names)


def outputs_done(work: Path, job: str) -> bool:
    """Whether `job` completed: the output it writes last exists and is not incomplete."""
    kind, _, which = job.partition(" ")
    base = work / "results" / DATASET / BACKBONE
    last = {
        "prepare": work / "data/prepared" / DATASET / "meta.json",
        "train_stage1": base / "stage1" / which / "seed0" / "stage1.pt",
        "train_stage2": base / which / "seed0" / "stage2.pt",
        "evaluate": base / which / "seed0" / "samples.npz",
        "report": work / "reports" / "ablation.json",
    }.get(kind)
    if last is None:
        return False
    output = last.parent if kind == "prepare" else last
    return last.is_file() and not _incomplete(work, output)


def attempt_until(
    process: subprocess.Popen[bytes],
    work: Path,
    plan: list[Target],
    next_target: Callable[[], Target | None],
    attempt: int,
) -> Kill | None:
    """Watch one snakemake run; kill it at the first point of `plan` it reaches (None when
    it ended first). Points whose job finishes before reaching them are dropped; once `plan`
    is empty, `next_target` draws more."""
    start = time.monotonic()
    seen_at: dict[str, float] = {}
    skipped = 0

    def pop() -> Target | None:
        return plan.pop(0) if plan else next_target()

    target = pop()
    while process.poll() is None and target is not None:
        now = time.monotonic() - start
        live = running_jobs(process.pid)
        for name in live:
            seen_at.setdefault(name, now)
        progress = training_progress(work)
        if target.kind == "startup":
            reached = now >= target.offset
        elif target.kind == "step":
            status = progress.get(target.job)
            live_status = status is not None and status["pid"] == live.get(target.job)
            reached = live_status and status["step"] >= target.step
        else:
            reached = target.job in live and now - seen_at[target.job] >= target.offset
        gone_by = target.kind == "startup" and bool(live)
        if not reached and (gone_by or (target.job not in live and outputs_done(work, target.job))):
            # Its point went by (the job finished first in this run): the next one.
            skipped += 1
            target = pop()
            continue
        if reached:
            running: dict[str, Any] = {}
            for name, pid in live.items():
                status = progress.get(name)
                if status is not None and status["pid"] == pid:
                    running[name] = f"step {status['step']}/{status['steps']}"
                else:
                    running[name] = f"{now - seen_at[name]:.1f} s in"
            count = len(kill_all(process.pid))
            process.wait()
            return Kill(
                asdict(target),
                attempt,
                round(now, 2),
                skipped,
                running,
                partial_steps(work),
                count,
            )
        time.sleep(POLL_S)
    process.wait()
    return None


def snakemake(work: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [str(BIN / "snakemake"), "--cores", "2", "all"],
        cwd=work,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def unlock_if_locked(work: Path) -> bool:
    """A killed snakemake leaves its lock behind, and the next run stops with "Directory
    cannot be locked ... run snakemake --unlock": do as it says."""
    locks = work / pipeline.SNAKEMAKE_LOCKS
    if not (locks.is_dir() and any(locks.iterdir())):
        return False
    subprocess.run([str(BIN / "snakemake"), "--unlock"], cwd=work, check=True, capture_output=True)
    return True


def job_log(work: Path, job: str) -> Path:
    kind, _, which = job.partition(" ")
    base = work / "results" / DATASET / BACKBONE
    if kind == "train_stage1":
        return base / "stage1" / which / "seed0" / "stage1.log"
    return base / which / "seed0" / "stage2.log"


# --- comparison ------------------------------------------------------------------------------


def differences(a: Any, b: Any, where: str) -> list[str]:
    """Paths (file:key.key[i]) where two loaded values differ; tensors compared exactly."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        return [] if same else [where]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return [] if np.array_equal(a, b, equal_nan=True) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{where}.{k}" for k in sorted(set(a) ^ set(b), key=str)]
        for key in a.keys() & b.keys():
            found += differences(a[key], b[key], f"{where}.{key}")
        return found
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return []
    return [] if type(a) is type(b) and a == b else [where]


def load_any(path: Path) -> Any:
    if path.suffix == ".pt":
        return load_checkpoint(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(path.read_text())))
    if path.suffix in (".npz", ".npy"):
        loaded = np.load(path)
        return dict(loaded) if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    return path.read_bytes()


def wall_clock(difference: str) -> bool:
    return any(part in WALL_CLOCK for part in re.split(r"[.\[\]]", difference))


def html_differences(a: Path, b: Path) -> tuple[int, list[str]]:
    """(durations/timestamps that differ, every other differing line) of two reports."""
    text_a, text_b = a.read_text(), b.read_text()
    timing = sum(
        x != y
        for x, y in zip(
            REPORT_WALL_CLOCK.findall(text_a), REPORT_WALL_CLOCK.findall(text_b), strict=False
        )
    )
    lines_a = REPORT_WALL_CLOCK.sub("<time>", text_a).splitlines()
    lines_b = REPORT_WALL_CLOCK.sub("<time>", text_b).splitlines()
    other = [
        line
        for line in difflib.unified_diff(lines_a, lines_b, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return timing, other


def compare(reference: Path, killed: Path) -> dict[str, Any]:
    def files(work: Path) -> set[str]:
        return {
            str(p.relative_to(work))
            for root in OUTPUT_ROOTS
            for p in (work / root).rglob("*")
            if p.is_file() and p.suffix != ".log"
        }

    ref_files, kill_files = files(reference), files(killed)
    report: dict[str, Any] = {
        "files_compared": len(ref_files & kill_files),
        "only_in_reference": sorted(ref_files - kill_files),
        "only_in_killed_run": sorted(kill_files - ref_files),
        "bit_identical_files": [],
        "wall_clock_only": {},
        "differ": {},
        "resume_left": sorted(
            str(p.relative_to(killed)) for p in (killed / RESUME_ROOT).rglob("*") if p.is_file()
        ),
    }
    for name in sorted(ref_files & kill_files):
        if (reference / name).read_bytes() == (killed / name).read_bytes():
            report["bit_identical_files"].append(name)
            continue
        if name.endswith(".html"):
            timing, other = html_differences(reference / name, killed / name)
            key = "differ" if other else "wall_clock_only"
            report[key][name] = other or [f"{timing} durations/timestamps"]
            continue
        found = differences(load_any(reference / name), load_any(killed / name), f"{name}:")
        found = [d.split(":", 1)[1].lstrip(".") for d in found]
        fields = sorted({re.sub(r"\[\d+\]", "[*]", d) for d in found})
        if not found and zipfile.is_zipfile(reference / name):
            report["wall_clock_only"][name] = ["zip member timestamps (same arrays)"]
        elif all(wall_clock(d) for d in found):
            report["wall_clock_only"][name] = fields
        else:
            report["differ"][name] = fields
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, help="keep the workspaces under this directory")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="kill_pipeline-"))
    root.mkdir(parents=True, exist_ok=True)
    params = tiny_params()
    reference = make_workspace(root, "reference", params)
    killed = make_workspace(root, "killed", params)
    logs = root / "logs"
    logs.mkdir()
    started = time.monotonic()

    timeline = Timeline()
    process = snakemake(reference, logs / "reference.log")
    watch(process, reference, timeline)
    if process.returncode != 0:
        sys.exit(f"the reference run failed: see {logs / 'reference.log'}")
    print(f"reference: {timeline.total_s:.1f} s; jobs {timeline.started}", flush=True)

    rng = random.Random(args.seed)
    plan = planned_targets(timeline, args.kills, rng)
    kills: list[Kill] = []
    resumes: list[dict[str, Any]] = []
    unlocks = attempt = 0
    while True:
        attempt += 1
        unlocks += unlock_if_locked(killed)
        before = partial_steps(killed)
        log = logs / f"attempt{attempt:02d}.log"
        process = snakemake(killed, log)
        kill = None
        if len(kills) < args.kills:
            kill = attempt_until(
                process, killed, plan, lambda: left_target(timeline, killed, rng), attempt
            )
        else:
            process.wait()
        # Every training job that ran in this attempt and had a partial checkpoint: did it
        # continue from exactly that step?
        for name, done in before.items():
            text = job_log(killed, name).read_text() if job_log(killed, name).is_file() else ""
            stage = name.split()[0][-1]
            if f"continuing stage {stage} from step {done} " in text:
                resumes.append({"job": name, "from_step": done, "attempt": attempt})
        if kill is not None:
            kills.append(kill)
            print(f"kill {len(kills)}: {kill.running or 'start-up, no job running'}", flush=True)
            continue
        if process.returncode != 0:
            sys.exit(f"attempt {attempt} failed: see {log}")
        break

    # Each resume is counted once (a job log read after several attempts repeats it).
    unique = {(r["job"], r["from_step"]): r for r in resumes}
    # Every partial checkpoint a kill left must have been continued from, by a later run.
    left = {(name, done) for kill in kills for name, done in kill.partial_after.items()}
    result = {
        "command": "nice -n 10 .venv/bin/python benchmarks/kill_pipeline.py "
        f"--kills {args.kills} --seed {args.seed}",
        "params": {
            "steps": STEPS,
            "checkpoint_every": params["experiment"]["checkpoint_every"],
            "variants": VARIANTS,
            "backbone": BACKBONE,
        },
        "reference_wall_s": round(timeline.total_s, 1),
        "reference_jobs_s": {
            name: [round(timeline.started[name], 1), round(timeline.ended[name], 1)]
            for name in timeline.started
        },
        "kills": [asdict(kill) for kill in kills],
        "attempts": attempt,
        "unlocks": unlocks,
        "resumes": sorted(unique.values(), key=lambda r: r["attempt"]),
        "resumes_missing": sorted(left - unique.keys()),
        "comparison": compare(reference, killed),
        "total_wall_s": round(time.monotonic() - started, 1),
        "workspaces": str(root),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    summary = result["comparison"]
    print(
        f"{len(kills)} kills over {attempt} runs ({unlocks} unlocks), "
        f"{len(unique)} resumes ({len(left - unique.keys())} missing); "
        f"{len(summary['bit_identical_files'])} files bit-identical, "
        f"{len(summary['wall_clock_only'])} differ only in wall-clock fields, "
        f"{len(summary['differ'])} differ: {summary['differ']}; wrote {OUT}",
        flush=True,
    )


if __name__ == "__main__":
    main()
