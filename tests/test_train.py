"""The training loop: determinism on CPU, checkpoint contents, stage chaining, inference model."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from seemore import pipeline
from seemore.backbones import BACKBONES
from seemore.checkpoint import resume_dir
from seemore.config import validate_params
from seemore.data import DATASETS
from seemore.method.variants import VARIANTS
from seemore.progress import TrainingDiverged
from seemore.train import (
    TrainJob,
    load_checkpoint,
    load_inference_model,
    resolve_device,
    train_stage,
)


@pytest.fixture(autouse=True)
def in_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Partial checkpoints go to ./resume, as in a real workspace."""
    monkeypatch.chdir(tmp_path)


def tiny(embedded_raw: dict[str, Any], steps: int = 2, **stage2: Any) -> Any:
    raw = embedded_raw
    raw["data"]["moving_mnist"].update(image_size=16, test_clips=4)
    raw["models"]["moving_mnist"]["convlstm"].update(num_hidden=[4], patch_size=4)
    training = raw["training"]["moving_mnist"]
    training.update(batch_size=2)
    training["stage1"]["steps"] = 3
    training["stage2"].update(steps=steps, **stage2)
    return validate_params(raw)


def job(params: Any, seed: int = 0, stage: int = 1) -> TrainJob:
    run = pipeline.Run("moving_mnist", "convlstm", "baseline", seed)
    return TrainJob(
        benchmark=DATASETS.get("moving_mnist"),
        data=params.data["moving_mnist"],
        backbone_name="convlstm",
        backbone=params.models["moving_mnist"]["convlstm"],
        variant_name="baseline",
        variant=VARIANTS.get("baseline"),
        training=params.training["moving_mnist"],
        method=params.method,
        seed=seed,
        params_hash=pipeline.stage_hash(params, run, stage),
        device=torch.device("cpu"),
    )


@pytest.fixture
def prepared(tmp_path_factory: pytest.TempPathFactory, embedded_raw: dict[str, Any]) -> Path:
    params = tiny(embedded_raw)
    out = tmp_path_factory.mktemp("prepared")
    DATASETS.get("moving_mnist").prepare(params.data["moving_mnist"], out / "raw", out)
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["objective"]


def test_cpu_training_is_deterministic_per_seed(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    params = tiny(embedded_raw)
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = weights(train_stage(job(params, seed), 1, prepared, tmp_path / name))
    for key in runs["a"]:
        assert torch.equal(runs["a"][key], runs["b"][key]), key
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_checkpoint_carries_what_resuming_needs(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    params = tiny(embedded_raw)
    checkpoint = load_checkpoint(train_stage(job(params, 3), 1, prepared, tmp_path))
    assert checkpoint["step"] == 3 and checkpoint["seed"] == 3
    assert checkpoint["params_hash"] == job(params, 3).params_hash
    assert checkpoint["optimizer"]["adam"]["state"], "optimizer moments missing"
    assert [row["step"] for row in checkpoint["log"]] == [0, 1, 2]


def test_stage_two_starts_from_stage_one_and_refuses_stale_checkpoints(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    params = tiny(embedded_raw, lr=1e-12)
    stage1_job = job(params)
    train_stage(stage1_job, 1, prepared, tmp_path)
    train_stage(job(params, stage=2), 2, prepared, tmp_path, stage1_hash=stage1_job.params_hash)
    before = weights(tmp_path / "stage1.pt")
    after = weights(tmp_path / "stage2.pt")
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=1e-9, rtol=0)
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 3 + 2 and log[0].startswith("stage,step,loss")
    assert [line.split(",")[1] for line in log[1:]] == ["0", "1", "2", "3", "4"]

    with pytest.raises(ValueError, match="re-run stage one"):
        train_stage(job(params, stage=2), 2, prepared, tmp_path, stage1_hash="something-else")


def test_inference_model_loads_into_the_plain_backbone(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    params = tiny(embedded_raw)
    train_stage(job(params), 1, prepared, tmp_path)
    train_stage(job(params, stage=2), 2, prepared, tmp_path)
    network, saved = load_inference_model(tmp_path / "model.pt")
    assert type(network) is BACKBONES.get("convlstm")
    assert saved["stats"]["stage1"]["steps"] == 3 and saved["stats"]["stage2"]["steps"] == 2
    clip = torch.rand(1, 20, 1, 16, 16)
    assert network(clip).frames.shape == (1, 19, 1, 16, 16)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_stage_two_updaters_continue_stage_one_moments(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    from seemore.method.lma import LMAUpdater
    from seemore.method.objective import PlainObjective
    from seemore.method.updater import AdamUpdater

    params = tiny(embedded_raw)
    stage1 = load_checkpoint(train_stage(job(params), 1, prepared, tmp_path))
    moments = stage1["optimizer"]["adam"]["state"]
    geometry = DATASETS.get("moving_mnist").geometry(params.data["moving_mnist"])
    config = params.models["moving_mnist"]["convlstm"]
    objective = PlainObjective(BACKBONES.get("convlstm")(config, geometry))
    objective.load_state_dict(stage1["objective"])
    names = [name for name, _ in objective.named_parameters()]

    adam = AdamUpdater(objective, 5e-4, contextlib.nullcontext, None)
    adam.resume_moments(stage1["optimizer"])
    assert adam.optimizer.param_groups[0]["lr"] == 5e-4
    resumed = adam.optimizer.state_dict()["state"]
    for index in moments:
        assert torch.equal(resumed[index]["exp_avg"], moments[index]["exp_avg"])

    lma = LMAUpdater(objective, 5e-4, params.method.lma, contextlib.nullcontext, None)
    lma.resume_moments(stage1["optimizer"])
    assert lma.adam_steps == 3
    for index, state in moments.items():
        assert torch.equal(lma.exp_avg[names[index]], state["exp_avg"])
        assert torch.equal(lma.exp_avg_sq[names[index]], state["exp_avg_sq"])


def with_stage1(job_: TrainJob, **changes: Any) -> TrainJob:
    training = job_.training
    stage1 = training.stage1.model_copy(update=changes)
    return dataclasses.replace(job_, training=training.model_copy(update={"stage1": stage1}))


def test_a_non_finite_loss_stops_at_once_naming_run_step_and_term(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    # lr 1e30: the first Adam step leaves finite but huge weights; step 1's loss is inf.
    diverging = dataclasses.replace(
        with_stage1(job(tiny(embedded_raw)), lr=1e30, steps=50), checkpoint_every=1, log_every=4
    )
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as raised:
        train_stage(diverging, 1, prepared, out, progress=False)
    message = str(raised.value)
    assert message.startswith(f"{out}: training diverged at stage 1 step 1: loss term ")
    assert "'loss_forward' = inf" in message or "'loss_forward' = nan" in message
    # Found at the first log boundary (4 steps), not at the end of the 50 steps; the last
    # checkpoint written is the one before the bad step, and nothing looks finished.
    partial = resume_dir(out / "stage1.pt", diverging.params_hash) / "checkpoint.pt"
    assert f"the last good checkpoint is kept: {partial}" in message
    assert load_checkpoint(partial)["done"] == 1
    assert not (out / "stage1.pt").exists()


def test_non_finite_weights_are_never_checkpointed(
    prepared: Path, tmp_path: Path, embedded_raw: dict[str, Any]
) -> None:
    diverging = dataclasses.replace(
        with_stage1(job(tiny(embedded_raw)), lr=float("inf")), checkpoint_every=1
    )
    with pytest.raises(TrainingDiverged, match=r"stage 1 step 0: parameters became non-finite"):
        train_stage(diverging, 1, prepared, tmp_path / "run", progress=False)
    assert not list(Path("resume").rglob("checkpoint.pt"))


def test_the_log_grows_every_log_every_steps(
    prepared: Path,
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from seemore.producer import BatchProducer

    params = tiny(embedded_raw, steps=6)
    train_stage(job(params), 1, prepared, tmp_path)
    capsys.readouterr()
    stage2 = dataclasses.replace(job(params, stage=2), log_every=2)
    drawn = [0]
    original = BatchProducer.next

    def crash_at_fifth_batch(self: BatchProducer) -> Any:
        drawn[0] += 1
        if drawn[0] == 5:
            raise KeyboardInterrupt  # the job dies during stage two's step 4
        return original(self)

    monkeypatch.setattr(BatchProducer, "next", crash_at_fifth_batch)
    with pytest.raises(KeyboardInterrupt):
        train_stage(stage2, 2, prepared, tmp_path, progress=False)
    # Stage one's 3 rows, then stage two's rows up to the last boundary (step 4 of 6).
    with open(tmp_path / "train_log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["stage"], row["step"]) for row in rows] == [
        ("1", "0"),
        ("1", "1"),
        ("1", "2"),
        ("2", "3"),
        ("2", "4"),
        ("2", "5"),
        ("2", "6"),
    ]
    timed = [row["step"] for row in rows if row["steps_per_s"]]
    assert timed == ["2", "4", "6"] and all(float(row["eta_s"]) >= 0 for row in rows[-1:])
    lines = [line for line in capsys.readouterr().out.splitlines() if " stage 2 step " in line]
    assert [line.split(" stage 2 step ")[1].split()[0] for line in lines] == ["2/6", "4/6"]
    assert "steps/s, ETA" in lines[-1] and "loss=" in lines[-1]
    status = json.loads(
        (resume_dir(tmp_path / "stage2.pt", stage2.params_hash) / "progress.json").read_text()
    )
    assert status["stage"] == 2 and status["step"] == 4 and status["steps"] == 6
    assert status["loss"] == pytest.approx(float(rows[-1]["loss"]))
