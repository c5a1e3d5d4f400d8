"""No host-device synchronisation inside an update (issue 13): on the CPU a sync shows as a
read of a tensor's value into Python (`item`, `__float__`, `__int__`, `__bool__`, `tolist`);
counted here during whole steps of the plain and BDN updaters with device masks, and the log
reads every step's scalars with one read at its boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch
from tiny_backbones import TinyConfig, TinyStepWise, geometry, moving_square_clips

from seemore.method.bdn import BidirectionalObjective
from seemore.method.objective import Objective, PlainObjective
from seemore.method.settings import BDNConfig, ScheduledSamplingConfig
from seemore.method.updater import AdamUpdater
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


@pytest.mark.parametrize("make_objective", [plain, bidirectional])
@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_updates_never_read_the_device(
    make_objective, grad_clip: float | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objective = make_objective()
    updater = AdamUpdater(objective, 1e-3, nullcontext, grad_clip)
    shape = geometry()
    masks = MaskStream(
        ScheduledSamplingConfig(), 2, shape.input_frames, shape.total_frames, torch.device("cpu"), 7
    )
    clip = moving_square_clips(2, shape)
    log = ProgressLog("run", 1, 5, tmp_path / "log.csv", tmp_path / "progress.json", [])
    log.start(0)
    with counting_reads(monkeypatch) as reads:
        for step in range(5):
            log.record({"stage": 1, "step": step}, updater.step(clip, masks(step + 1)))
        assert reads == [], reads
        rows = log.flush(5)
    assert reads == ["tolist"]  # the log boundary: one read of all 5 steps' scalars
    assert [row["step"] for row in rows] == [0, 1, 2, 3, 4]
    assert all(isinstance(row["loss"], float) for row in rows)
