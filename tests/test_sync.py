"""No host-device synchronisation inside an update (issue 13): on the CPU a sync shows as a
read of a tensor's value into Python (`item`, `__float__`, `__int__`, `__bool__`, `tolist`);
counted here during whole steps of the plain and BDN updaters and of LMA's meta and task
steps (shared and separate moments, plain and BDN objectives) with device masks, and the log
reads every step's scalars with one read at its boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch
from tiny_backbones import TinyConfig, TinyStepWise, geometry, moving_square_clips

from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import Objective, PlainObjective
from seemore.method.settings import BDNConfig, LMAConfig, ScheduledSamplingConfig
from seemore.method.updater import AdamUpdater, Updater
from seemore.producer import MaskStream
from seemore.progress import ProgressLog

READS = ("item", "__float__", "__int__", "__bool__", "tolist")


@contextmanager
def counting_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    reads: list[str] = []
    with monkeypatch.context() as patch:
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(self: torch.Tensor, *a: object, _o=original, _n=name, **k: object):
                reads.append(_n)
                return _o(self, *a, **k)

            patch.setattr(torch.Tensor, name, counted)
        yield reads


def plain() -> Objective:
    torch.manual_seed(0)
    return PlainObjective(TinyStepWise(TinyConfig(), geometry()))


def bidirectional() -> Objective:
    torch.manual_seed(0)
    make = lambda: TinyStepWise(TinyConfig(), geometry())  # noqa: E731
    return BidirectionalObjective(make(), make(), BDNConfig())


def run_logged_steps(
    updater: Updater, steps: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[dict]:
    """`steps` updates with device masks, logged; asserts they read nothing and that the log
    boundary reads everything with one `tolist`."""
    shape = geometry()
    masks = MaskStream(
        ScheduledSamplingConfig(), 2, shape.input_frames, shape.total_frames, torch.device("cpu"), 7
    )
    clip = moving_square_clips(2, shape)
    log = ProgressLog("run", 1, steps, tmp_path / "log.csv", tmp_path / "progress.json", [])
    log.start(0)
    with counting_reads(monkeypatch) as reads:
        for step in range(steps):
            log.record({"stage": 1, "step": step}, updater.step(clip, masks(step + 1)))
        assert reads == [], reads
        rows = log.flush(steps)
    assert reads == ["tolist"]  # the log boundary: one read of all the steps' scalars
    assert [row["step"] for row in rows] == list(range(steps))
    assert all(isinstance(row["loss"], float) for row in rows)
    return rows


@pytest.mark.parametrize("make_objective", [plain, bidirectional])
@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_updates_never_read_the_device(
    make_objective, grad_clip: float | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    updater = AdamUpdater(make_objective(), 1e-3, nullcontext, grad_clip)
    run_logged_steps(updater, 5, monkeypatch, tmp_path)


@pytest.mark.parametrize("make_objective", [plain, bidirectional])
@pytest.mark.parametrize("moments", ["shared", "separate"])
def test_lma_meta_and_task_steps_never_read_the_device(
    make_objective, moments: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Cycle of 3: meta, meta, task, then meta, meta again; clipped as the presets do.
    config = LMAConfig(cycle=3, meta_steps=2, a_max=2e-3, moments=moments)
    updater = LMAUpdater(make_objective(), 1e-3, config, nullcontext, 1.0)
    rates_before = updater.rates.detach().clone()
    rows = run_logged_steps(updater, 5, monkeypatch, tmp_path)
    assert [row["meta_step"] for row in rows] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert updater.passes.extra["meta_steps"] == 4
    # The logged values are the ones the steps computed, read at the boundary.
    lookahead = [row["lookahead_loss"] for row in rows]
    assert all(value > 0 for i, value in enumerate(lookahead) if i != 2)
    assert lookahead[2] != lookahead[2]  # NaN: a task step has no lookahead
    last_rates = [rows[-1][f"rate/{name}"] for name in updater.level_names]
    assert last_rates == updater.rates.detach().tolist()
    assert last_rates != rates_before.tolist()  # the meta steps moved the rates
    penalty = updater.ordering_penalty(updater.rates.detach())
    assert rows[-1]["order_penalty"] == pytest.approx(float(penalty))
