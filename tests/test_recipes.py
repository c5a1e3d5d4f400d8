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


# --- OpenSTL's recipe (seemore/recipes/openstl.yaml, preset `openstl`) ----------------------
# chengtan9907/OpenSTL c74deb5 configs/mmnist/<Method>.py: each method's lr; parser defaults
# epoch 200, batch 16, sched onecycle, final_div_factor 1e4; MovingMNIST's training length 1e4
# clips per epoch, its training loader drop_last=True.
OPENSTL_MMNIST_LR = {
    "convlstm": 5e-4,
    "e3d_lstm": 1e-4,
    "mau": 1e-3,
    "mim": 5e-4,
    "phydnet": 1e-3,
    "predrnn": 5e-4,
    "predrnn_pp": 1e-4,
    "predrnn_v2": 5e-4,
    "simvp": 1e-3,
    "tau": 1e-3,
}
OPENSTL_MMNIST_STEPS = 200 * (10000 // 16)  # 200 epochs x 625 full batches = 125,000


@pytest.fixture(scope="module")
def openstl_raw() -> dict:
    return compose_preset("openstl")


def test_openstl_preset_expands_and_validates(openstl_raw: dict) -> None:
    from seemore.backbones import BACKBONES

    params = validate_params(openstl_raw)
    assert params.experiment.preset == "openstl"
    assert sorted(params.experiment.backbones) == sorted(BACKBONES.names())  # the whole zoo
    assert params.experiment.variants == ["baseline", "seemore"]
    assert params.experiment.seeds == [0]
    assert params.data["moving_mnist"].protocol == "openstl"
    training = params.training["moving_mnist"]
    assert training.recipe == "openstl"
    assert OPENSTL_MMNIST_STEPS == 125000
    for backbone in params.experiment.backbones:
        job = training.for_backbone(backbone)
        assert job.batch_size == 16 and not job.reverse_input and job.grad_clip is None
        assert job.stage1.steps == OPENSTL_MMNIST_STEPS, backbone
        assert job.stage1.lr_schedule.kind == "onecycle"
        assert job.stage1.lr_schedule.final_div_factor == 1e4
        # Stage two: the SeeMore authors' (constant 1e-4, LMA's), sampling continued.
        assert (job.stage2.steps, job.stage2.lr, job.stage2.moments) == (10000, 1e-4, "fresh")
        assert job.stage2.lr_schedule.kind == "constant"
        assert job.stage2.scheduled_sampling.counter == "continue"
    v2 = training.for_backbone("predrnn_v2").stage1.scheduled_sampling
    assert (v2.mode, v2.r_sampling_step_1, v2.r_sampling_step_2, v2.r_exp_alpha) == (
        "reverse",
        25000,
        50000,
        5000.0,
    )
    linear = training.for_backbone("convlstm").stage1.scheduled_sampling
    # OpenSTL: eta starts at 1.0 and falls by 2e-5 per iteration, 0 from 50,000 on.
    assert (linear.mode, linear.sampling_stop_iter) == ("linear", 50000)
    assert true_frame_probabilities(linear, 25000) == (1.0, pytest.approx(1 - 25000 * 2e-5))
    assert true_frame_probabilities(linear, 50000) == (1.0, 0.0)


def test_epochs_become_steps_per_backbone_batch() -> None:
    from seemore.config import ConfigError
    from seemore.recipes import epochs_to_steps

    training = {
        "batch_size": 16,
        "stage1": {"epochs": 200, "lr_schedule": {"kind": "cosine"}},
        "stage2": {"steps": 7},
        "backbones": {"tau": {"batch_size": 12}, "mau": {"stage1": {"epochs": 3}}, "mim": {}},
    }
    epochs_to_steps(training, 1000, "here")
    # 1000 // 16 = 62 full batches per epoch (the last 8 clips dropped).
    assert training["stage1"] == {
        "steps": 200 * 62,
        "lr_schedule": {"kind": "cosine", "steps_per_epoch": 62},
    }
    assert training["stage2"] == {"steps": 7}
    # A backbone with its own batch gets its own steps: 1000 // 12 = 83 per epoch.
    assert training["backbones"]["tau"]["stage1"] == {
        "steps": 200 * 83,
        "lr_schedule": {"steps_per_epoch": 83},
    }
    assert training["backbones"]["mau"]["stage1"] == {
        "steps": 3 * 62,
        "lr_schedule": {"steps_per_epoch": 62},
    }
    assert training["backbones"]["mim"] == {}
    with pytest.raises(ConfigError, match="here: a stage gives `epochs`: set train_set_size"):
        epochs_to_steps({"batch_size": 4, "stage1": {"epochs": 1}}, None, "here")


def test_per_backbone_lr_lands_in_that_jobs_training_config(openstl_raw: dict) -> None:
    from seemore.cli import _train_job

    params = validate_params(openstl_raw)
    for backbone, lr in OPENSTL_MMNIST_LR.items():
        job = _train_job(params, "moving_mnist", backbone, "seemore", "seemore", 0, "h")
        assert job.training.stage1.lr == lr, backbone
        assert job.training.backbones == {}  # resolved: no overrides left to apply


def _annealing_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_openstl_onecycle_lr_at_the_boundary_steps_by_hand(openstl_raw: dict) -> None:
    import torch

    from seemore.schedules import build_schedule

    stage = validate_params(openstl_raw).training["moving_mnist"].for_backbone("predrnn").stage1
    total, peak = stage.steps, stage.lr  # 125,000 updates, max_lr 5e-4
    # OneCycleLR's rule (anneal cos, pct_start 0.3, div_factor 25): up from peak/25 over
    # steps 0..0.3 T - 1, then down to peak/25/final_div_factor at step T - 1.
    start, end = peak / 25, peak / 25 / 1e4
    up_end = 0.3 * total - 1
    expected = {
        0: start,
        18750: _annealing_cos(start, peak, 18750 / up_end),
        37499: peak,
        81249: (peak + end) / 2,  # halfway down: (81249 - 37499) / (124999 - 37499) = 0.5
        124999: end,
    }
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    schedule = build_schedule(optimizer, stage.lr_schedule, stage.lr, total)
    seen = {}
    for update in range(total):  # the lr the update numbered `update` (from 0) takes
        if update in expected:
            seen[update] = optimizer.param_groups[0]["lr"]
        schedule.after_update()
    assert seen == pytest.approx(expected, rel=1e-9, abs=0)


def test_one_backbones_override_changes_only_its_jobs_hashes(openstl_raw: dict) -> None:
    import copy

    from seemore import pipeline

    def hashes(raw: dict) -> dict[tuple[str, int], str]:
        params = validate_params(raw)
        return {
            (run.name, stage): pipeline.stage_hash(params, run, stage)
            for run in pipeline.runs(params)
            for stage in (1, 2)
        }

    before = hashes(openstl_raw)
    every_run = list(pipeline.runs(validate_params(openstl_raw)))
    # The edits are Moving MNIST's: no other dataset's job may move either.
    runs = [run for run in every_run if run.dataset == "moving_mnist"]
    assert len(runs) < len(every_run)
    backbone_of = {run.name: run.backbone for run in every_run}

    stage1_edit = copy.deepcopy(openstl_raw)
    stage1_edit["training"]["moving_mnist"]["backbones"]["mim"]["stage1"]["lr"] = 2e-3
    changed = {key for key, value in hashes(stage1_edit).items() if before[key] != value}
    mim_runs = [run for run in runs if run.backbone == "mim"]
    assert changed == {(run.name, stage) for run in mim_runs for stage in (1, 2)}

    stage2_edit = copy.deepcopy(openstl_raw)
    override = stage2_edit["training"]["moving_mnist"]["backbones"]["predrnn_v2"]
    override["stage2"]["scheduled_sampling"]["r_exp_alpha"] = 2500.0
    changed = {key for key, value in hashes(stage2_edit).items() if before[key] != value}
    assert changed == {(run.name, 2) for run in runs if run.backbone == "predrnn_v2"}

    # A new override for one backbone: only its jobs move, every other hash stays.
    added = copy.deepcopy(openstl_raw)
    added["training"]["moving_mnist"]["backbones"]["simvp"] = {"grad_clip": 1.0}
    changed = {key for key, value in hashes(added).items() if before[key] != value}
    assert {backbone_of[name] for name, _ in changed} == {"simvp"}
    assert len(changed) == 2 * sum(run.backbone == "simvp" for run in runs)

    # DVC lists, per job, the dataset's keys and that backbone's override alone.
    mim = next(run for run in runs if run.backbone == "mim")
    raw_keys = pipeline.stage_one_keys(openstl_raw, mim.stage_one)
    assert "training.moving_mnist.backbones.mim.stage1" in raw_keys
    assert not any(".backbones." in key and ".mim." not in key for key in raw_keys)
    assert "training.moving_mnist.backbones" not in raw_keys
    v2 = next(run for run in runs if (run.backbone, run.variant) == ("predrnn_v2", "seemore"))
    assert pipeline.stage_two_keys(openstl_raw, v2)[-3:] == [
        "training.moving_mnist.stage2",
        "training.moving_mnist.backbones.predrnn_v2.stage2",
        "method.lma",
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"nonsense": {"stage1": {"lr": 1e-3}}},
            r"training\.moving_mnist\.backbones\.nonsense: unknown backbone; expected one of",
        ),
        (
            {"tau": {"stage1": {"lr": -1.0}}},
            r"training\.moving_mnist\.backbones\.tau\.stage1\.lr = -1\.0: Input should be greater",
        ),
        (
            {"tau": {"stage1": {"lrr": 1e-3}}},
            r"unknown key 'training\.moving_mnist\.backbones\.tau\.stage1\.lrr'",
        ),
        (
            {"tau": {"recipe": "mine"}},
            r"training\.moving_mnist\.backbones\.tau\.recipe: not overridable per backbone",
        ),
        (
            # LMA learns stage two's rates from the stage-two lr, clamped to a_max = 2e-4.
            {"tau": {"stage2": {"lr": 5e-4}}},
            r"training\.moving_mnist \(with backbones\.tau\)\.stage2\.lr = 0\.0005 is above",
        ),
    ],
)
def test_bad_backbone_overrides_are_refused_by_name(
    openstl_raw: dict, edit: dict, message: str
) -> None:
    import copy

    from seemore.config import ConfigError

    raw = copy.deepcopy(openstl_raw)
    raw["training"]["moving_mnist"]["backbones"].update(edit)
    with pytest.raises(ConfigError, match=message):
        validate_params(raw, "params.yaml")


# configs/<dataset>/<Method>.py (SimVP: simvp/SimVP_gSTA.py): each method's lr; the model
# zoo's epochs; training set sizes: KTH 5,200 (docs/en/install.md), Human3.6M 73,404
# (meta/human/train.txt), TaxiBJ 20,461 (dataset.npz X_train, issue #39); batch 16.
OPENSTL_LR = {
    "moving_mnist": OPENSTL_MMNIST_LR,
    "kth": dict.fromkeys(OPENSTL_MMNIST_LR, 1e-3) | {"e3d_lstm": 5e-4, "mau": 5e-4, "mim": 1e-4},
    "human36m": dict.fromkeys(OPENSTL_MMNIST_LR, 1e-4) | {"simvp": 1e-3, "tau": 1e-3},
    "taxibj": dict.fromkeys(OPENSTL_MMNIST_LR, 5e-4)
    | {"e3d_lstm": 5e-3, "mau": 1e-3, "mim": 1e-2, "predrnn": 1e-4, "predrnn_pp": 1e-4},
}
OPENSTL_STEPS = {  # epochs x full batches of 16
    "moving_mnist": (200 * 625, 625),  # 10000 // 16 = 625
    "kth": (100 * 325, 325),  # 5200 // 16 = 325
    "human36m": (50 * 4587, 4587),  # 73404 // 16 = 4587 (12 clips dropped)
    "taxibj": (50 * 1278, 1278),  # 20461 // 16 = 1278 (13 clips dropped)
}


@pytest.mark.parametrize("dataset", list(OPENSTL_LR))
def test_openstl_recipe_per_dataset_and_backbone(openstl_raw: dict, dataset: str) -> None:
    from seemore.cli import _train_job

    params = validate_params(openstl_raw)
    assert params.data[dataset].protocol == "openstl"
    steps, per_epoch = OPENSTL_STEPS[dataset]
    for backbone, lr in OPENSTL_LR[dataset].items():
        training = _train_job(params, dataset, backbone, "seemore", "seemore", 0, "h").training
        stage = training.stage1
        assert (training.batch_size, stage.steps, stage.lr) == (16, steps, lr), backbone
        # Human3.6M's TAU.py sets no `sched`: the parser's onecycle.
        onecycle = dataset in ("moving_mnist", "kth") or (dataset, backbone) == ("human36m", "tau")
        assert stage.lr_schedule.kind == ("onecycle" if onecycle else "cosine"), backbone
        if not onecycle:
            assert stage.lr_schedule.steps_per_epoch == per_epoch
            assert stage.lr_schedule.warmup_epochs == (5 if dataset == "taxibj" else 0)
            assert stage.lr_schedule.min_lr == 1e-6
        mode = "reverse" if backbone == "predrnn_v2" else "linear"
        assert stage.scheduled_sampling.mode == mode
        assert (training.stage2.steps, training.stage2.lr) == (10000, 1e-4)
    assert params.models["kth"]["predrnn_v2"].patch_size == 2  # OpenSTL's, not thuml's 4


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_openstl_cosine_lr_at_the_boundary_epochs_by_hand(openstl_raw: dict) -> None:
    import torch

    from seemore.schedules import build_schedule

    stage = validate_params(openstl_raw).training["taxibj"].for_backbone("predrnn").stage1
    per_epoch, peak, warm, low = 1278, 1e-4, 1e-5, 1e-6
    assert (stage.steps, stage.lr) == (50 * per_epoch, peak)

    # Stepped per epoch: warm-up epochs 0..4 linear from 1e-5 toward lr, then cosine from lr
    # (epoch 5) over the 45 remaining epochs toward min_lr (seemore's rule; timm's counts its
    # cosine from epoch 0: docs/recipes.md).
    def at_epoch(e: int) -> float:
        if e < 5:
            return warm + (peak - warm) * e / 5
        return low + (peak - low) * (1 + math.cos(math.pi * (e - 5) / 45)) / 2

    expected = {
        update: at_epoch(update // per_epoch)
        for update in (
            0,
            per_epoch - 1,
            per_epoch,
            4 * per_epoch,
            5 * per_epoch - 1,
            5 * per_epoch,
            27 * per_epoch + 639,
            50 * per_epoch - 1,
        )
    }
    assert expected[5 * per_epoch] == peak and expected[0] == warm
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    schedule = build_schedule(optimizer, stage.lr_schedule, stage.lr, stage.steps)
    seen = {}
    for update in range(stage.steps):
        if update in expected:
            seen[update] = optimizer.param_groups[0]["lr"]
        schedule.after_update()
    assert seen == pytest.approx(expected, rel=1e-9, abs=0)
