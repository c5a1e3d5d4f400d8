"""`experiment.compile` (issue 13): the compiled training step gives the eager step's losses
and weights within float rounding, for the plain and BDN updaters and LMA's meta and task
steps (whose lookahead goes through the same compiled objective by `functional_call`); and a
compiled run continued from its saved state is bit-identical to one never stopped.

Compiling is slow on a CPU (tens of seconds per graph on this machine), so the test keeps to
three small graphs: the clip-wise tiny backbone (no unrolled time loop) in a plain objective
(its Adam step) and a BDN objective (its Adam step, then LMA's meta and task steps on a copy
of the same start, which reuse that graph and add the lookahead's). The runs use the loop's
CPU settings (deterministic algorithms, fp32). Step-wise backbones compile the same way
(benchmarks/throughput.py compiles and times PredRNN-V2's steps).

Tolerance: compiled kernels fuse and reorder fp32 sums, so single losses agree to about 1e-7
relative; a few Adam steps of lr 1e-3 carry that into the weights, where a direction
m/sqrt(v) of a near-zero gradient can move by its full size. Losses must agree within
rtol 1e-5 and weights within atol 1e-5 (a hundredth of one step of lr 1e-3).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import pytest
import torch
from tiny_backbones import TinyClipWise, TinyConfig, geometry, moving_square_clips

from seemore.method.bdn import BidirectionalObjective
from seemore.method.lma import LMAUpdater
from seemore.method.objective import Objective, PlainObjective
from seemore.method.settings import BDNConfig, LMAConfig
from seemore.method.updater import AdamUpdater, Updater
from seemore.train import compile_mode_for

STEPS = 3
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
SHAPE = geometry(input_frames=2, output_frames=2)

Run = tuple[list[dict[str, float]], dict[str, torch.Tensor]]


@pytest.fixture(scope="module", autouse=True)
def loop_settings() -> Iterator[None]:
    """As train_stage runs on the CPU: deterministic algorithms."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch._dynamo.reset()


def network() -> TinyClipWise:
    return TinyClipWise(TinyConfig(), SHAPE)


def adam(objective: Objective) -> Updater:
    return AdamUpdater(objective, 1e-3, nullcontext, None)


def lma(objective: Objective) -> Updater:
    # Cycle of 2 (meta, task), rates clipped as the presets do.
    config = LMAConfig(cycle=2, meta_steps=1, a_max=2e-3)
    return LMAUpdater(objective, 1e-3, config, nullcontext, 1.0)


def run(
    start: Objective,
    make_updater: Callable[[Objective], Updater],
    compiled: bool,
    steps: int = STEPS,
    state: bytes | None = None,
) -> tuple[Run, bytes]:
    """`steps` steps from a copy of `start`, or from `state` (what an earlier run returned)
    loaded into it as a resumed training stage loads its partial checkpoint; each step's
    logged scalars, the final weights, and the objective's and updater's state saved."""
    objective = copy.deepcopy(start)
    updater = make_updater(objective)
    if state is not None:
        saved = torch.load(io.BytesIO(state), weights_only=True)
        objective.load_state_dict(saved["objective"])
        updater.load_state_dict(saved["updater"])
    if compiled:
        updater.compile("default")
    clip = moving_square_clips(2, SHAPE)
    logs = []
    for _ in range(steps):
        logs.append({k: float(v) for k, v in updater.step(clip, None).items()})
    buffer = io.BytesIO()
    torch.save({"objective": objective.state_dict(), "updater": updater.state_dict()}, buffer)
    weights = {n: p.detach().clone() for n, p in objective.named_parameters()}
    return (logs, weights), buffer.getvalue()


def assert_close_runs(eager: Run, compiled: Run, start: Objective) -> None:
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


@pytest.fixture(scope="module")
def bidirectional_start() -> Objective:
    torch.manual_seed(0)
    return BidirectionalObjective(network(), network(), BDNConfig())


def test_compiled_plain_step_matches_eager() -> None:
    torch.manual_seed(0)
    start = PlainObjective(network())
    assert_close_runs(run(start, adam, False)[0], run(start, adam, True)[0], start)


def test_compiled_bdn_step_matches_eager(bidirectional_start: Objective) -> None:
    eager = run(bidirectional_start, adam, False)[0]
    assert {"distill_frame", "distill_state", "loss_backward"} <= eager[0][0].keys()
    assert_close_runs(eager, run(bidirectional_start, adam, True)[0], bidirectional_start)


def test_compiled_lma_meta_and_task_steps_match_eager(bidirectional_start: Objective) -> None:
    eager = run(bidirectional_start, lma, False)[0]
    compiled = run(bidirectional_start, lma, True)[0]
    assert [row["meta_step"] for row in eager[0]] == [1.0, 0.0, 1.0]
    assert_close_runs(eager, compiled, bidirectional_start)
    # The meta steps moved the rates by the compiled lookahead's hypergradient.
    rates = [key for key in eager[0][-1] if key.startswith("rate/")]
    assert rates and all(compiled[0][-1][k] != 1e-3 for k in rates)


def test_a_compiled_lma_run_continued_from_its_saved_state_is_bit_identical(
    bidirectional_start: Objective,
) -> None:
    """Killed after a meta and a task step, a compiled run loaded from its saved state and
    compiled again (a fresh process compiles anew) ends exactly where one never stopped does:
    the compiled graphs are deterministic and read every state they use (Adam moments and
    steps, LMA's rates, their Adam and the meta/task cycle position) from the saved state."""
    (whole_logs, whole_weights), _ = run(bidirectional_start, lma, True, steps=4)
    (first_logs, _), state = run(bidirectional_start, lma, True, steps=2)
    (rest_logs, rest_weights), _ = run(bidirectional_start, lma, True, steps=2, state=state)
    assert [row["meta_step"] for row in whole_logs] == [1.0, 0.0, 1.0, 0.0]
    # NaN (the task step's lookahead loss) compares equal to itself by identity only: compare
    # the logs as text.
    assert repr(first_logs + rest_logs) == repr(whole_logs)
    for name, expected in whole_weights.items():
        assert torch.equal(rest_weights[name], expected), name


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
