"""`experiment.compile` (issue 13): the compiled training step gives the eager step's losses
and weights within float rounding, for the plain and BDN updaters and LMA's meta and task
steps (whose lookahead goes through the same compiled objective by `functional_call`).

Compiling is slow on a CPU (tens of seconds per graph), so one module-scoped run per objective
kind compiles each graph once: a plain objective (its step, then LMA's meta and task steps
with its lookahead) and a BDN objective. Both runs use the loop's CPU settings
(deterministic algorithms, fp32).

Tolerance: compiled kernels fuse and reorder fp32 sums, so single losses agree to about 1e-7
relative; a few Adam steps of lr 1e-3 carry that into the weights, where a direction
m/sqrt(v) of a near-zero gradient can move by its full size. Losses must agree within
rtol 1e-5 and weights within atol 1e-5 (a hundredth of one step of lr 1e-3).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import pytest
import torch
from tiny_backbones import TinyConfig, TinyStepWise, geometry, moving_square_clips

from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import Objective, PlainObjective
from seemore.method.settings import BDNConfig, LMAConfig
from seemore.method.updater import AdamUpdater, Updater
from seemore.train import compile_mode_for

STEPS = 3
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def loop_settings() -> Iterator[None]:
    """As train_stage runs on the CPU: deterministic algorithms."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch._dynamo.reset()


# The smallest recurrent case (one cell, 2 + 2 frames): compile time grows with the unrolled
# graph.
SHAPE = geometry(input_frames=2, output_frames=2)


def network() -> TinyStepWise:
    return TinyStepWise(TinyConfig(layers=1), SHAPE)


def plain() -> Objective:
    torch.manual_seed(0)
    return PlainObjective(network())


def bidirectional() -> Objective:
    torch.manual_seed(0)
    return BidirectionalObjective(network(), network(), BDNConfig())


def lma(objective: Objective) -> Updater:
    # Cycle of 2 (meta, task), rates clipped as the presets do.
    config = LMAConfig(cycle=2, meta_steps=1, a_max=2e-3)
    return LMAUpdater(objective, 1e-3, config, nullcontext, 1.0)


def run(
    objective: Objective, make_updater: Callable[[Objective], Updater], compiled: bool
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """STEPS steps from the same start; each step's logged scalars and the final weights."""
    updater = make_updater(objective)
    if compiled:
        updater.compile("default")
    clip = moving_square_clips(2, SHAPE)
    mask = torch.full((2, clip.shape[1] - 2), 0.5)
    logs = []
    for _ in range(STEPS):
        logs.append({k: float(v) for k, v in updater.step(clip, mask).items()})
    return logs, {n: p.detach().clone() for n, p in objective.named_parameters()}


def adam(objective: Objective) -> Updater:
    return AdamUpdater(objective, 1e-3, nullcontext, None)


@pytest.fixture(scope="module")
def plain_start() -> Objective:
    return plain()


@pytest.fixture(scope="module")
def plain_runs(plain_start: Objective) -> dict[str, tuple]:
    # Every run from a copy of one start; the compiled runs share torch.compile's caches
    # (same code, shapes and guards), so the plain objective's graphs compile once.
    return {
        f"{name}-{mode}": run(copy.deepcopy(plain_start), make, mode == "compiled")
        for name, make in (("adam", adam), ("lma", lma))
        for mode in ("eager", "compiled")
    }


def assert_close_runs(eager: tuple, compiled: tuple, start: Objective) -> None:
    (eager_logs, eager_weights), (compiled_logs, compiled_weights) = eager, compiled
    start_weights = dict(start.named_parameters())
    for step, (expected, actual) in enumerate(zip(eager_logs, compiled_logs, strict=True)):
        assert expected.keys() == actual.keys()
        for key, value in expected.items():
            if value != value:  # NaN: LMA's task step has no lookahead loss
                assert actual[key] != actual[key], (step, key)
            else:
                assert actual[key] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-9), (step, key)
    for name, expected in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], expected, rtol=0, atol=WEIGHT_ATOL)
        assert not torch.equal(expected, start_weights[name]), name  # the steps moved it


def test_compiled_adam_step_matches_eager(plain_runs, plain_start: Objective) -> None:
    assert_close_runs(plain_runs["adam-eager"], plain_runs["adam-compiled"], plain_start)


def test_compiled_lma_meta_and_task_steps_match_eager(plain_runs, plain_start: Objective) -> None:
    eager, compiled = plain_runs["lma-eager"], plain_runs["lma-compiled"]
    assert [row["meta_step"] for row in eager[0]] == [1.0, 0.0, 1.0]
    assert_close_runs(eager, compiled, plain_start)
    # The meta steps moved the rates by the compiled lookahead's hypergradient.
    rates = [key for key in eager[0][-1] if key.startswith("rate/")]
    assert rates and all(compiled[0][-1][k] != 1e-3 for k in rates)


def test_compiled_bdn_step_matches_eager() -> None:
    start = bidirectional()
    eager = run(copy.deepcopy(start), adam, False)
    compiled = run(copy.deepcopy(start), adam, True)
    assert {"distill_frame", "distill_state", "loss_backward"} <= eager[0][0].keys()
    assert_close_runs(eager, compiled, start)


@pytest.mark.parametrize(
    ("setting", "device", "mode"),
    [
        ("auto", "cpu", None),
        (False, "cpu", None),
        (True, "cpu", "default"),
        ("auto", "cuda", "reduce-overhead"),
        (False, "cuda", None),
        (True, "cuda", "reduce-overhead"),
    ],
)
def test_compile_switch(setting: bool | str, device: str, mode: str | None) -> None:
    assert compile_mode_for(setting, torch.device(device)) == mode
