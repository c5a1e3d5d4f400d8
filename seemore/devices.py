"""GPU jobs on a box with several GPUs (DESIGN.md §8): at most `experiment.jobs_per_gpu` jobs
per GPU at once, each pinned to its own device(s) through CUDA_VISIBLE_DEVICES.

Snakemake can count GPU slots (`--resources gpu=N`; `make run` passes the count) but cannot
tell a job which device to use. So a GPU job claims its devices here, at its start and before
torch initialises CUDA: one lock file per (device, slot), held with `flock` for the life of
the process. The kernel drops the lock when the process ends, even by kill -9, so a crashed
job never leaks a slot; a job that finds every slot taken waits for one. On a machine without
GPUs (or with `experiment.device: cpu`) nothing is claimed and nothing changes.

Torch-free: the Snakefile sizes its rules' `gpu` resources from `rule_gpus`.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

# A stand-in device count (tests, or to use fewer GPUs than the box has): overrides detection.
GPU_COUNT_ENV = "SEEMORE_GPU_COUNT"
# Where the slot locks live; one directory per machine and user by default, so two
# workspaces on one box share its GPUs correctly.
SLOT_DIR_ENV = "SEEMORE_GPU_SLOT_DIR"
POLL_SECONDS = 2.0

# The locks this process holds: open files, kept open until the process exits.
_held: list[IO[str]] = []


def visible_devices() -> list[str]:
    """The GPUs jobs may use: a stand-in count, else CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    stand_in = os.environ.get(GPU_COUNT_ENV)
    if stand_in is not None:
        return [str(index) for index in range(int(stand_in))]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        devices = [name.strip() for name in listed.split(",") if name.strip()]
        # CUDA ignores every device from the first invalid entry on (e.g. "-1").
        valid = []
        for name in devices:
            if name.startswith("-"):
                break
            valid.append(name)
        return valid
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line)]


def _experiment(params: Any) -> Mapping[str, Any]:
    section = params["experiment"] if isinstance(params, Mapping) else params.experiment
    return section if isinstance(section, Mapping) else section.model_dump()


def uses_gpus(params: Any) -> bool:
    return _experiment(params).get("device", "auto") != "cpu" and bool(visible_devices())


def rule_gpus(params: Any, training: bool, cluster: bool = False) -> int:
    """GPUs one job holds: `experiment.gpus_per_run` for training, 1 for evaluation, 0 when
    jobs run on the CPU. Under a cluster executor (`cluster`) jobs run on other machines: the
    GPUs they request follow `experiment.device` alone, not the submitting host's devices."""
    on_cpu = _experiment(params).get("device", "auto") == "cpu"
    if on_cpu or not (cluster or uses_gpus(params)):
        return 0
    return int(_experiment(params).get("gpus_per_run", 1)) if training else 1


def slot_count(params: Any) -> int:
    """How many GPU slots the box offers (Snakemake's `--resources gpu=`)."""
    if not uses_gpus(params):
        return 0
    return len(visible_devices()) * int(_experiment(params).get("jobs_per_gpu", 1))


def slot_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"seemore-gpu-slots-{os.getuid()}"
    return Path(os.environ.get(SLOT_DIR_ENV, default))


def _try_claim(devices: list[str], count: int, jobs_per_gpu: int) -> list[tuple[str, IO[str]]]:
    """Lock one free slot on each of `count` distinct devices, or none at all."""
    directory = slot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    held: list[tuple[str, IO[str]]] = []
    for device in devices:
        for slot in range(jobs_per_gpu):
            handle = open(directory / f"gpu{device}-slot{slot}.lock", "a+")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            held.append((device, handle))
            break
        if len(held) == count:
            return held
    for _, handle in held:
        handle.close()
    return []


def claim(count: int, jobs_per_gpu: int, label: str) -> list[str]:
    """Wait for a slot on `count` distinct GPUs, pin this process to them (sets
    CUDA_VISIBLE_DEVICES) and hold them until it exits. Returns the claimed devices; an empty
    list when there is no GPU to claim (CPU-only machine)."""
    devices = visible_devices()
    if count == 0 or not devices:
        return []
    if count > len(devices):
        raise ValueError(
            f"experiment.gpus_per_run = {count} but only {len(devices)} GPU(s) are visible"
        )
    waited = False
    while not (held := _try_claim(devices, count, jobs_per_gpu)):
        if not waited:
            print(f"seemore: {label}: waiting for a free GPU slot", file=sys.stderr, flush=True)
            waited = True
        time.sleep(POLL_SECONDS)
    for _, handle in held:
        # Who holds the slot, for a person looking at the lock files.
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {label}\n")
        handle.flush()
    _held.extend(handle for _, handle in held)
    claimed = [device for device, _ in held]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
    print(
        f"seemore: {label}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}",
        file=sys.stderr,
        flush=True,
    )
    return claimed


def claim_for_job(params: Any, training: bool, label: str) -> list[str]:
    """Claim the GPUs one `seemore train`/`evaluate` job needs under `params`."""
    return claim(
        rule_gpus(params, training), int(_experiment(params).get("jobs_per_gpu", 1)), label
    )


def main() -> None:
    """`python -m seemore.devices PARAMS`: the GPU slot count, for `--resources gpu=`."""
    from seemore.pipeline import load_plan

    print(slot_count(load_plan(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")))


if __name__ == "__main__":
    main()
