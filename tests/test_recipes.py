"""The reference recipes reproduce their references step for step: scheduled-sampling values at
the boundary iterations, the LMA meta/task schedule and the level set, computed by hand from
the authors' rules (DIG-Beihang/SeeMore run.py, core/trainer.py, core/models/meta.py) and
compared with what the `paper` preset makes seemore do."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest

from seemore.backbones import build_backbone
from seemore.config import Params, validate_params
from seemore.data import DATASETS
from seemore.method.sampling import schedule_iteration, true_frame_probabilities
from seemore.method.settings import ScheduledSamplingConfig
from seemore.method.variants import VARIANTS, build_objective, build_updater
from seemore.recipes import compose_preset

STAGE_ONE_STEPS = 80000  # both scripts' --max_iterations of stage one


def reverse(s1: int, s2: int, alpha: float, itr: int) -> tuple[float, float]:
    """run.py's reserve_schedule_sampling_exp: (r_eta on input steps, eta on prediction steps)."""
    if itr < s1:
        return 0.5, 0.5
    if itr < s2:
        return 1.0 - 0.5 * math.exp(-(itr - s1) / alpha), 0.5 - (0.5 / (s2 - s1)) * (itr - s1)
    return 1.0, 0.0


@pytest.fixture(scope="module")
def paper():
    return validate_params(compose_preset("paper"))


def test_reverse_sampling_at_the_boundary_iterations_by_hand() -> None:
    # Moving MNIST stage one: 35,000 / 70,000 / alpha 2,500.
    config = ScheduledSamplingConfig(
        r_sampling_step_1=35000, r_sampling_step_2=70000, r_exp_alpha=2500.0
    )
    assert true_frame_probabilities(config, 1) == (0.5, 0.5)
    assert true_frame_probabilities(config, 34999) == (0.5, 0.5)
    assert true_frame_probabilities(config, 35000) == (0.5, 0.5)  # exp(0) and no decay yet
    input_p, prediction_p = true_frame_probabilities(config, 37500)  # one time constant in
    assert input_p == pytest.approx(1 - 0.5 / math.e, abs=1e-15)
    assert prediction_p == pytest.approx(0.5 - 0.5 * 2500 / 35000, abs=1e-15)
    input_p, prediction_p = true_frame_probabilities(config, 69999)
    assert prediction_p == pytest.approx(0.5 / 35000, abs=1e-15)
    assert input_p == pytest.approx(1 - 0.5 * math.exp(-34999 / 2500), abs=1e-15)
    assert true_frame_probabilities(config, 70000) == (1.0, 0.0)


def test_stage_two_sampling_restarts_or_continues() -> None:
    # Stage two's first run step is 80,000 (0-based; stage one took 0..79,999).
    restart = ScheduledSamplingConfig(
        counter="restart", r_sampling_step_1=5000, r_sampling_step_2=10000, r_exp_alpha=2500.0
    )
    carry_on = restart.model_copy(update={"counter": "continue"})
    assert schedule_iteration(restart, 80000, 80000) == 1  # the authors' itr restarts at 1
    assert schedule_iteration(carry_on, 80000, 80000) == 80001
    assert true_frame_probabilities(restart, 1) == (0.5, 0.5)  # half teacher-forced
    assert true_frame_probabilities(carry_on, 80001) == (1.0, 0.0)  # free-running already
    # Stage one counts from 1 whatever the counter says.
    assert schedule_iteration(restart, 0, 0) == schedule_iteration(carry_on, 0, 0) == 1


@pytest.mark.parametrize(
    ("dataset", "stage_one", "stage_two"),
    [
        # mnist_script/train_stage_{1,2}.sh and kth_script/train_stage_{1,2}.sh
        ("moving_mnist", (35000, 70000, 2500.0), (5000, 10000, 2500.0)),
        ("kth", (5000, 50000, 2000.0), (5000, 10000, 2000.0)),
    ],
)
def test_paper_preset_samples_as_the_authors(
    paper: Params, dataset: str, stage_one: tuple, stage_two: tuple
) -> None:
    training = paper.training[dataset]
    for config, constants, stage_start in (
        (training.stage1.scheduled_sampling, stage_one, 0),
        (training.stage2.scheduled_sampling, stage_two, STAGE_ONE_STEPS),
    ):
        s1, s2, _ = constants
        # A few hundred consecutive iterations at the start and around each boundary.
        iterations = {
            i for centre in (1, s1, s2) for i in range(max(1, centre - 150), centre + 150)
        }
        for itr in sorted(iterations):
            run_step = stage_start + itr - 1  # the loop's 0-based step over the whole run
            ours = true_frame_probabilities(
                config, schedule_iteration(config, run_step, stage_start)
            )
            assert ours == pytest.approx(reverse(*constants, itr), abs=1e-15), (config, itr)


def authors_meta_flags(iterations: int, cycle: int = 200, meta: int = 50) -> list[bool]:
    """core/trainer.py's toggle: update_lr_flag is True at itr <= 1 and flips whenever
    itr % 200 == 0 or (itr - 50) % 200 == 0; True means a meta (rate) update."""
    flags, flag = [], True
    for itr in range(1, iterations + 1):
        if itr <= 1:
            flag = True
        elif itr % cycle == 0 or (itr - meta) % cycle == 0:
            flag = not flag
        flags.append(flag)
    return flags


def authors_level(key: str) -> str:
    """meta.py's rate of a parameter `rnn.<...>`: conv_last / adapter, else the layer index."""
    parts = key.split(".")
    return parts[1] if parts[1] in ("conv_last", "adapter") else parts[2]


@pytest.mark.parametrize("dataset", ["moving_mnist", "kth"])
def test_paper_preset_meta_schedule_and_levels_are_the_authors(paper: Params, dataset: str) -> None:
    params = paper
    training, method = params.training[dataset], params.method
    # The level set depends on the layer count and adapter_level, not the widths: narrow
    # layers keep the test small.
    config = params.models[dataset]["predrnn_v2"].model_copy(update={"num_hidden": [4] * 4})
    geometry = DATASETS.get(dataset).geometry(params.data[dataset])
    seemore = VARIANTS.get("seemore")
    objective = build_objective(
        seemore, lambda: build_backbone("predrnn_v2", config, geometry), method
    )
    updater = build_updater(seemore, 2, objective, training, method, nullcontext)

    # Meta/task: 450 iterations, two updates each (reverse_input), both of the iteration's kind.
    expected = [flag for flag in authors_meta_flags(450) for _ in range(2)]
    simulated = []
    for update in range(len(expected)):
        updater.steps = update
        simulated.append(updater.is_meta_step())
    assert simulated == expected
    # Iterations 1..199 hold 49 meta iterations (1..49): the first cycle is one short.
    assert sum(authors_meta_flags(199)) == 49

    # Levels: six rates per network; the chain 0 < 1 < 2 < 3 < conv_last, adapter outside.
    ours_to_authors = {"layer0": "0", "layer1": "1", "layer2": "2", "layer3": "3"}
    ours_to_authors |= {"head": "conv_last", "adapter": "adapter"}
    roles = {"f": "rnn", "g": "rnn_rev"}
    for level_name, parameters in zip(updater.level_names, updater.level_parameters, strict=True):
        role, level = level_name.split(".")
        for name in parameters:
            key = f"{roles[role]}." + name.removeprefix(f"networks.{role}.")
            assert authors_level(key) == ours_to_authors[level], key
    assert [updater.level_names[i] for i in updater.level_chains[0]] == [
        "f.layer0",
        "f.layer1",
        "f.layer2",
        "f.layer3",
        "f.head",
    ]
    assert len(updater.level_names) == 12
    # Rates start at lr_alpha, clamp at 0.0002, meta Adam at lr_beta; moments fresh, separate.
    assert updater.rates.tolist() == [1e-4] * 12
    assert method.lma.a_max == 2e-4
    assert updater.rate_optimizer.param_groups[0]["lr"] == 1e-7
    assert (updater.separate, updater.resume) == (True, False)
