"""`seemore plan`: job counts, passes as the training loop takes them, FLOPs, hours and disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from backbone_cases import CASES, GEOMETRY
from torch.utils.flop_counter import FlopCounterMode

from seemore.backbones import BACKBONES, BackboneKind, ClipGeometry, profile
from seemore.backbones.profile import (
    FIT_FROM_FRAMES,
    _conv_backward_flops,
    build_on_meta,
    count_flops,
    polynomial_in_frames,
    zero_clip,
)
from seemore.cli import main
from seemore.config import validate_params
from seemore.data import DATASETS
from seemore.method.settings import MethodConfig
from seemore.method.variants import VARIANTS, build_objective
from seemore.plan import (
    BYTES_PER_PARAMETER,
    REFERENCE_GPUS,
    Assumptions,
    build_plan,
    pass_cost,
    planned_data_bytes,
    rule_jobs,
    validation_scorings,
)
from seemore.recipes import compose_preset
from seemore.train import load_checkpoint


def tiny(raw: dict[str, Any], variants: list[str], **training: Any) -> dict[str, Any]:
    raw["experiment"].update(datasets=["moving_mnist"], backbones=["convlstm"], variants=variants)
    raw["data"]["moving_mnist"].update(image_size=16, test_clips=4)
    raw["models"]["moving_mnist"]["convlstm"].update(num_hidden=[4], patch_size=4)
    section = raw["training"]["moving_mnist"]
    section.update(batch_size=2, **training)
    section["stage1"]["steps"] = 3
    section["stage2"]["steps"] = 5
    raw["method"]["lma"].update(cycle=3, meta_steps=1)
    return raw


def test_jobs_per_rule_of_the_embedded_default(embedded_raw: dict[str, Any]) -> None:
    # 4 datasets x 2 backbones x 4 variants x 1 seed; stage one once per objective.
    assert rule_jobs(validate_params(embedded_raw)) == {
        "prepare": 4,
        "train_stage1": 16,
        "train_stage2": 32,
        "evaluate": 32,
        "report": 1,
    }


@pytest.mark.parametrize(("cycle_unit", "meta_steps"), [("update", 4), ("iteration", 2)])
def test_passes_are_those_the_training_loop_takes(
    tmp_path: Path,
    embedded_raw: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    cycle_unit: str,
    meta_steps: int,
) -> None:
    """Train a tiny seemore run with reverse_input and compare the loop's own pass counters
    with the plan: 3 iterations x 2 updates in stage one; stage two 5 x 2 = 10 updates. LMA
    cycle 3 with 1 meta step: counted per update, updates 0, 3, 6, 9 are meta steps; counted
    per iteration (from 1), iteration 3's two updates are. One validation scoring in stage
    two (no eval_every: after its last iteration), none in stage one."""
    raw = tiny(embedded_raw, ["seemore"], reverse_input=True)
    raw["method"]["lma"]["cycle_unit"] = cycle_unit
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "--dataset", "moving_mnist", "--params", str(params_file)]) == 0
    run = ["--dataset", "moving_mnist", "--backbone", "convlstm", "--variant", "seemore"]
    for stage, extra in (("1", []), ("2", [])):
        args = ["train", "--stage", stage, *run, "--seed", "0", "--quiet", *extra]
        assert main([*args, "--params", str(params_file)]) == 0
    directory = Path("results/moving_mnist/convlstm/seemore/seed0")
    stats = load_checkpoint(directory / "stage2.pt")["stats"]

    plan = build_plan(validate_params(raw), Assumptions())
    (run_plan,) = plan.runs
    assert (run_plan.stage1.passes, run_plan.stage2.passes) == (6, 10 + meta_steps)
    assert run_plan.stage2.meta_steps == stats["stage2"]["meta_steps"] == meta_steps
    assert stats["stage1"]["forward_passes"] == stats["stage1"]["backward_passes"] == 6
    assert stats["stage2"]["forward_passes"] == 10 + meta_steps
    log = (directory / "train_log.csv").read_text().splitlines()
    column = log[0].split(",").index("val_mse")
    scored = [row for row in log[1:] if row.split(",")[column]]
    assert len(scored) == run_plan.stage1.scorings + run_plan.stage2.scorings == 1


def _geometry(raw: dict[str, Any], dataset: str) -> Any:
    params = validate_params(raw)
    return params, DATASETS.get(dataset).geometry(params.data[dataset])


@pytest.mark.parametrize(("backbone", "dataset"), [("predrnn_v2", "kth"), ("tau", "taxibj")])
def test_pass_flops(embedded_raw: dict[str, Any], backbone: str, dataset: str) -> None:
    params, geometry = _geometry(embedded_raw, dataset)
    config, method = params.models[dataset][backbone], params.method
    plain = pass_cost(backbone, config, geometry, VARIANTS.get("baseline"), method, 4)
    forward = count_flops(build_on_meta(BACKBONES.get(backbone), config, geometry), 4)
    # Backward costs twice the forward's FLOPs where a layer needs its input's gradient too,
    # once where it does not (the first layer): a pass lies in (2, 3] forwards.
    assert 2 * forward < plain.flops <= 3 * forward
    # Linear in the batch size.
    assert pass_cost(backbone, config, geometry, VARIANTS.get("baseline"), method, 8).flops == (
        2 * plain.flops
    )
    bidirectional = pass_cost(backbone, config, geometry, VARIANTS.get("bdn"), method, 4)
    assert bidirectional.trained_parameters == 2 * plain.trained_parameters
    if BACKBONES.get(backbone).kind.value == "step-wise":
        # Two identical networks; distillation is elementwise, which FLOPs do not count.
        assert bidirectional.flops == 2 * plain.flops
    else:
        # Clip-wise BDN also runs g on f's prediction (backtracking) and back through both.
        assert bidirectional.flops > 2 * plain.flops + forward


def test_checkpoint_disk_and_hours(embedded_raw: dict[str, Any]) -> None:
    raw = tiny(embedded_raw, ["baseline", "bdn"])
    plan = build_plan(validate_params(raw), Assumptions())
    parameters = plan.runs[0].parameters
    # baseline: stage1.pt + stage2.pt of one network (weights + two Adam moments) + model.pt;
    # bdn: the same for two networks, model.pt still one.
    per_parameter = (3 + 3 + 1) + (6 + 6 + 1)
    assert plan.checkpoint_bytes == per_parameter * parameters * BYTES_PER_PARAMETER

    a100 = Assumptions(gpu=REFERENCE_GPUS["a100-sxm"], gpu_utilisation=0.05)
    slower = build_plan(validate_params(raw), a100)
    assert slower.gpu_hours == pytest.approx(plan.gpu_hours * 2 * 989 / 312)
    flops = plan.training_flops
    assert plan.gpu_hours == pytest.approx(flops / (989e12 * 0.10) / 3600)


@pytest.mark.parametrize("dataset", ["moving_mnist", "kth", "taxibj"])
def test_planned_data_bytes_match_what_prepare_writes(
    tmp_path: Path, embedded_raw: dict[str, Any], dataset: str
) -> None:
    section = embedded_raw["data"][dataset]
    section.update(image_size=32, test_clips=4)
    if "train_clips" in section:
        section["train_clips"] = 8
    params = validate_params(embedded_raw)
    benchmark = DATASETS.get(dataset)
    planned = benchmark.planned_bytes(params.data[dataset])
    benchmark.prepare(params.data[dataset], tmp_path / "raw", tmp_path / "prepared")
    arrays = sum(p.stat().st_size for p in (tmp_path / "prepared").glob("*.npy"))
    headers = 128 * len(list((tmp_path / "prepared").glob("*.npy")))
    assert planned == arrays - headers


def test_real_data_that_only_the_files_size_are_unknown() -> None:
    paper = compose_preset("paper")
    # The authors' protocol reads their npz files: only the files tell their size.
    assert planned_data_bytes(validate_params(paper))["moving_mnist"] is None
    paper["data"]["moving_mnist"]["protocol"] = "openstl"
    data_bytes = planned_data_bytes(validate_params(paper))
    assert data_bytes["kth"] is None
    # OpenSTL's protocol: the fixed test set, 10000 clips of 20 frames of 64x64; 1000
    # generated validation clips at the training horizon (10 -> 10); MNIST's 60000 digits.
    frame = 64 * 64
    expected = 10000 * 20 * frame + 1000 * 20 * frame + 60000 * 28 * 28
    assert data_bytes["moving_mnist"] == expected


def test_plan_command_prints_jobs_costs_and_assumptions(
    tmp_path: Path, embedded_raw: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny(embedded_raw, ["baseline", "lma"])))
    assert main(["plan", "--params", str(params_file), "--gpu-utilisation", "0.2"]) == 0
    out = capsys.readouterr().out
    for text in (
        "jobs per rule",
        "train_stage1",
        "NVIDIA H100 SXM at 20%",
        "core-hours",
        "checkpoints",
        "assumptions",
        "moving_mnist/convlstm/lma/seed0",
        "is an assumption, not a measurement",
    ):
        assert text in out
    assert out.splitlines()[0] == f"seemore plan: {params_file} (preset embedded)"
    with pytest.raises(SystemExit):
        main(["plan", "--params", str(params_file), "--gpu-utilisation", "2"])
    assert "expected a fraction in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("groups", [1, 8])
def test_a_convolution_pass_is_three_forwards_counted_by_hand(groups: int) -> None:
    """Forward 2·B·C_out·(C_in/groups)·H·W·k² FLOPs; backward the same for the input's
    gradient and again for the weights' (torch alone over-counts grouped weight gradients)."""
    from torch import nn

    from seemore.backbones.profile import flop_counter

    channels, batch, size, kernel = 8, 2, 16, 3
    conv = nn.Conv2d(channels, channels, kernel, padding=1, groups=groups, bias=False)
    clip = torch.zeros(batch, channels, size, size, requires_grad=True)
    with flop_counter() as counter:
        conv(clip).sum().backward()
    forward = 2 * batch * channels * (channels // groups) * size * size * kernel**2
    assert counter.get_total_flops() == 3 * forward


def test_validation_scorings_by_hand() -> None:
    # Stage two: after iterations 4, 8 and the last, 10; after 4 and 8 when 8 is the last;
    # never asked: once, after the last. Stage one: only every eval_every iterations.
    assert validation_scorings(2, 10, 4) == 3
    assert validation_scorings(2, 8, 4) == 2
    assert validation_scorings(2, 8, None) == 1
    assert validation_scorings(1, 10, 4) == 2
    assert validation_scorings(1, 8, None) == 0


@pytest.mark.parametrize(
    ("count", "frames", "expected_calls"),
    [
        (lambda n: 7 + 3 * n, 30, [2, 3, 4]),  # affine: fitted at 2, 3, confirmed at 4
        (lambda n: 5 + n + 4 * n * n, 30, [2, 3, 4, 5]),  # quadratic: one more point
        (lambda n: 2**n, 30, [2, 3, 4, 5, 30]),  # no polynomial: counted at 30 itself
        (lambda n: 7 + 3 * n, FIT_FROM_FRAMES - 1, [FIT_FROM_FRAMES - 1]),  # short: counted
    ],
)
def test_polynomial_in_frames_is_exact_or_counts(
    count: Any, frames: int, expected_calls: list[int]
) -> None:
    calls: list[int] = []

    def recorded(n: int) -> int:
        calls.append(n)
        return count(n)

    assert polynomial_in_frames(recorded, frames) == count(frames)
    assert calls == expected_calls


def _torch_count(run: Any) -> int:
    """FLOPs of `run()` by torch's own FlopCounterMode (the counter plan used before), with
    the same grouped-convolution fix."""
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops}
    )
    with counter:
        run()
    return int(counter.get_total_flops())


# With fitting from 6 frames on (plan fits from FIT_FROM_FRAMES, where it is cheaper), 8
# frames are fitted from clips of 2 to 5, and prediction steps 3 to 6 (after 3 input frames)
# are steps the fit never saw.
LONG = ClipGeometry(GEOMETRY.channels, GEOMETRY.height, GEOMETRY.width, 3, 5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_counts_equal_torch_counts_on_the_whole_clip(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every backbone, tiny: the inference forward and the plain and bidirectional training
    passes as plan counts them (short clips fitted, shapes cached) equal torch's
    FlopCounterMode on the whole clip, exactly."""
    monkeypatch.setattr(profile, "FIT_FROM_FRAMES", 6)
    backbone, config = CASES[case].backbone, CASES[case].config
    network = build_on_meta(BACKBONES.get(backbone), config, LONG)
    clip = zero_clip(LONG, 1, next(network.parameters()))
    network.eval()
    with torch.no_grad():
        expected_forward = _torch_count(lambda: network(clip, None))
    assert count_flops(network) == expected_forward

    method = MethodConfig()
    step_wise = BACKBONES.get(backbone).kind is BackboneKind.STEP_WISE
    mask = torch.ones(2, LONG.total_frames - 2, device="meta") if step_wise else None
    for variant in ("baseline", "bdn"):
        fast = pass_cost(backbone, config, LONG, VARIANTS.get(variant), method, 2).flops
        objective = build_objective(
            VARIANTS.get(variant),
            lambda: build_on_meta(BACKBONES.get(backbone), config, LONG),
            method,
        )
        objective.train()
        batch = zero_clip(LONG, 2, next(objective.parameters()))
        assert fast == _torch_count(lambda o=objective, b=batch: o(b, mask).loss.backward())
    if step_wise:
        assert (
            fast == 2 * pass_cost(backbone, config, LONG, VARIANTS.get("baseline"), method, 2).flops
        )
