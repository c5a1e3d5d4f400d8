"""GPU slots with a stand-in device count on the CPU: at most jobs_per_gpu jobs per device at
once, each pinned through CUDA_VISIBLE_DEVICES, slots freed even by kill -9, and nothing at
all on a machine without GPUs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from seemore import devices

# A job: claim, note (device, start, end) while holding the slot, exit.
JOB = """
import os, sys, time
from seemore import devices
devices.claim(int(sys.argv[1]), int(sys.argv[2]), "test job")
start = time.monotonic()
time.sleep(float(sys.argv[3]))
print(os.environ.get("CUDA_VISIBLE_DEVICES", "-"), start, time.monotonic(), flush=True)
"""


def stand_in(tmp_path: Path, count: int) -> dict[str, str]:
    return {
        **os.environ,
        devices.GPU_COUNT_ENV: str(count),
        devices.SLOT_DIR_ENV: str(tmp_path / "slots"),
    }


def run_jobs(env: dict[str, str], jobs: int, gpus: int, per_gpu: int) -> list[tuple]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(gpus), str(per_gpu), "0.6"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(jobs)
    ]
    parsed = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        fields = out.split()
        parsed.append((fields[0], float(fields[-2]), float(fields[-1])))
    return parsed


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = best = 0
    for _, step in events:
        level += step
        best = max(best, level)
    return best


def test_one_job_per_gpu_each_pinned_to_its_own_device(tmp_path: Path) -> None:
    jobs = run_jobs(stand_in(tmp_path, 2), jobs=4, gpus=1, per_gpu=1)
    assert sorted({visible for visible, _, _ in jobs}) == ["0", "1"]
    for device in ("0", "1"):
        held = [(start, end) for visible, start, end in jobs if visible == device]
        assert max_overlap(held) == 1, held


def test_jobs_per_gpu_slots_and_multi_gpu_runs(tmp_path: Path) -> None:
    jobs = run_jobs(stand_in(tmp_path, 1), jobs=3, gpus=1, per_gpu=2)
    assert {visible for visible, _, _ in jobs} == {"0"}
    assert max_overlap([(start, end) for _, start, end in jobs]) == 2
    # A two-GPU run holds one slot on each of two distinct devices.
    runs = run_jobs(stand_in(tmp_path / "two", 2), jobs=2, gpus=2, per_gpu=1)
    assert {visible for visible, _, _ in runs} == {"0,1"}
    assert max_overlap([(start, end) for _, start, end in runs]) == 1


def test_a_killed_job_frees_its_slot(tmp_path: Path) -> None:
    env = stand_in(tmp_path, 1)
    holder = subprocess.Popen(
        [sys.executable, "-c", JOB, "1", "1", "60"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert "CUDA_VISIBLE_DEVICES=0" in holder.stderr.readline()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    [(visible, _, _)] = run_jobs(env, jobs=1, gpus=1, per_gpu=1)
    assert visible == "0"
    assert time.monotonic() - started < 30  # no wait for a dead job's slot


def test_a_cpu_only_machine_claims_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(devices.GPU_COUNT_ENV, "0")
    monkeypatch.setenv(devices.SLOT_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    params = {"experiment": {"device": "auto", "jobs_per_gpu": 1, "gpus_per_run": 2}}
    assert devices.rule_gpus(params, training=True) == 0
    assert devices.slot_count(params) == 0
    assert devices.claim_for_job(params, training=True, label="t") == []
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv(devices.GPU_COUNT_ENV, "3")
    assert devices.rule_gpus(params, training=True) == 2
    assert devices.rule_gpus(params, training=False) == 1
    assert devices.slot_count(params) == 3
    params["experiment"]["device"] = "cpu"
    assert devices.slot_count(params) == 0


def test_visible_devices_follow_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.delenv(devices.GPU_COUNT_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert devices.visible_devices() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,4")
    assert devices.visible_devices() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_devices() == []
