"""params.yaml is refused before any work starts, with the key, the value and the expectation."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from seemore.cli import main
from seemore.config import ConfigError, load_params, validate_params
from seemore.recipes import compose, compose_preset, preset_text, recipe_names


def TRAIN(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["training"]["moving_mnist"]


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        validate_params(raw, "p.yaml")
    return str(error.value)


def test_presets_are_valid() -> None:
    for name in ("embedded", "paper"):
        params = validate_params(compose_preset(name))
        assert params.experiment.preset == name


def test_embedded_is_the_default() -> None:
    assert (Path(__file__).parent.parent / "params.yaml").read_text() == preset_text("embedded")


def test_paper_preset_is_the_authors_recipe() -> None:
    params = validate_params(compose_preset("paper"))
    assert params.experiment.backbones == ["predrnn_v2"]
    assert params.experiment.datasets == ["moving_mnist", "kth"]
    assert params.experiment.variants == ["baseline", "bdn", "lma", "seemore"]
    mnist, kth = params.data["moving_mnist"], params.data["kth"]
    assert (mnist.source, mnist.protocol, mnist.image_size) == ("local", "predrnn", 64)
    assert kth.protocol == "predrnn"
    assert (kth.image_size, kth.input_frames, kth.output_frames, kth.output_frames_test) == (
        128,
        10,
        10,
        20,
    )
    # (batch, decouple_beta, stage-one s1/s2/alpha, stage-two s1/s2/alpha) per the scripts.
    expected = {
        "moving_mnist": (8, 0.1, (35000, 70000, 2500.0), (5000, 10000, 2500.0)),
        "kth": (4, 0.01, (5000, 50000, 2000.0), (5000, 10000, 2000.0)),
    }
    for dataset, (batch, beta, stage1, stage2) in expected.items():
        training = params.training[dataset]
        model = params.models[dataset]["predrnn_v2"]
        assert training.recipe == "seemore_authors"
        assert (model.patch_size, model.num_hidden, model.filter_size) == (4, [128] * 4, 5)
        assert (model.decouple_beta, model.adapter_level, model.layer_norm) == (beta, "own", False)
        assert (training.batch_size, training.reverse_input, training.grad_clip) == (
            batch,
            True,
            None,
        )
        for stage, constants in ((training.stage1, stage1), (training.stage2, stage2)):
            sampling = stage.scheduled_sampling
            assert sampling.mode == "reverse"
            assert (sampling.r_sampling_step_1, sampling.r_sampling_step_2) == constants[:2]
            assert sampling.r_exp_alpha == constants[2]
            assert stage.lr == 1e-4
        assert (training.stage1.steps, training.stage1.eval_every) == (80000, 2500)
        assert (training.stage2.steps, training.stage2.eval_every) == (10000, 200)
        assert training.stage2.scheduled_sampling.counter == "restart"
        assert training.stage2.moments == "fresh"
    lma = params.method.lma
    assert (lma.cycle, lma.meta_steps, lma.cycle_unit, lma.moments) == (
        200,
        50,
        "iteration",
        "separate",
    )
    assert (lma.a_max, lma.order_lambda, lma.order_weight, lma.meta_lr) == (2e-4, 2.0, 10.0, 1e-7)
    assert params.evaluation.checkpoint == "best"


def test_recipes_are_data_and_compose_into_presets() -> None:
    assert {"seemore_authors", "seemore_cpu"} <= set(recipe_names())
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope'; expected one of \["):
        compose({"recipes": {"kth": "nope"}}, "p.yaml")
    with pytest.raises(ConfigError, match=r"recipes\.taxibj = 'seemore_authors', but that recipe"):
        compose({"recipes": {"taxibj": "seemore_authors"}}, "p.yaml")
    with pytest.raises(ConfigError, match=r"needs 1e-07 but the preset sets 1\.0"):
        compose({"recipes": {"kth": "seemore_authors"}, "method": {"lma": {"meta_lr": 1.0}}}, "p")
    with pytest.raises(ConfigError, match="takes `training` and `models` from them"):
        compose({"recipes": {"kth": "seemore_authors"}, "training": {}}, "p.yaml")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.update(extra_section={}), "unknown key 'extra_section'"),
        (
            lambda r: r["training"]["kth"].update(learning_rate=1.0),
            "unknown key 'training.kth.learning_rate'",
        ),
        (lambda r: r["training"]["kth"].update(batch_size="8"), "training.kth.batch_size = '8'"),
        (lambda r: TRAIN(r)["stage1"].update(steps=0), "training.moving_mnist.stage1.steps = 0"),
        (lambda r: TRAIN(r)["stage2"].update(lr=-1.0), "training.moving_mnist.stage2.lr = -1.0"),
        (lambda r: r["data"]["moving_mnist"].update(image_size=-64), "image_size = -64"),
        (lambda r: r["experiment"].update(datasets=["mnist"]), "experiment.datasets names 'mnist'"),
        (lambda r: r["experiment"].update(backbones=["resnet"]), "names 'resnet'"),
        (lambda r: r["experiment"].update(variants=["magic"]), "names 'magic'"),
        (lambda r: r["experiment"].update(seeds=[0, 0]), "lists a seed twice"),
        (lambda r: r["experiment"].update(device="tpu"), "experiment.device = 'tpu'"),
        (lambda r: r["data"]["moving_mnist"].update(output_frames=15), "10 + 15 is longer than"),
        (
            lambda r: r["models"]["taxibj"]["predrnn_v2"].update(patch_size=3),
            "models.taxibj.predrnn_v2",
        ),
        (lambda r: r["data"].pop("moving_mnist"), "data.moving_mnist is missing"),
        (lambda r: r["data"].update(cifar={}), "data.cifar: unknown name"),
        (
            lambda r: TRAIN(r)["stage2"]["scheduled_sampling"].update(mode="sometimes"),
            "training.moving_mnist.stage2.scheduled_sampling.mode = 'sometimes'",
        ),
        (lambda r: TRAIN(r).pop("stage2"), "missing key 'training.moving_mnist.stage2'"),
        (lambda r: r["training"].pop("kth"), "lists 'kth' but training.kth is missing"),
        (lambda r: r["models"].pop("kth"), "lists 'kth' but models.kth is missing"),
        (
            lambda r: r["models"]["human36m"].pop("tau"),
            "lists 'tau' but models.human36m.tau is missing",
        ),
        (lambda r: r["training"].update(cifar=TRAIN(r)), "training.cifar: unknown dataset"),
        (lambda r: r["models"].update(tau={}), "models.tau: unknown dataset"),
        (lambda r: r["models"]["kth"].update(resnet={}), "models.kth.resnet: unknown name"),
        # Non-finite floats would train to NaN weights and only fail at evaluation.
        (lambda r: TRAIN(r)["stage1"].update(lr=math.inf), "training.moving_mnist.stage1.lr = inf"),
        (lambda r: r["method"]["bdn"].update(frame_weight=-math.inf), "bdn.frame_weight = -inf"),
        (lambda r: r["method"]["lma"].update(a_max=math.nan), "method.lma.a_max = nan"),
        (
            lambda r: r["models"]["kth"]["tau"].update(mlp_ratio=-math.inf),
            "models.kth.tau.mlp_ratio = -inf: expected a finite number",
        ),
        (
            lambda r: TRAIN(r)["stage2"].update(lr_schedule={"kind": "onecycle"}),
            "training.moving_mnist.stage2.lr_schedule.kind = 'onecycle': LMA learns",
        ),
        (
            lambda r: TRAIN(r)["stage1"].update(lr_schedule={"kind": "cosine"}),
            "set steps_per_epoch",
        ),
        # Sizes that cannot fit in memory or on disk, refused before any work starts.
        (
            lambda r: r["data"]["kth"].update(image_size=32768),
            "training.kth.batch_size = 8 with data.kth.image_size = 32768: one batch of clips "
            "alone is 960 GiB, above the 8 GiB any run can hold",
        ),
        (
            lambda r: r["data"]["kth"].update(train_clips=10**9),
            "data.kth.train_clips = 1000000000: the split would store 27.9 TiB",
        ),
        # A stage that cannot finish, whether written as an integer or as 1e12.
        (
            lambda r: TRAIN(r)["stage1"].update(steps=10**12),
            "training.moving_mnist.stage1.steps = 1000000000000: Input should be less than or "
            "equal to 10000000",
        ),
        (
            lambda r: TRAIN(r)["stage1"].update(steps=1e12),
            "training.moving_mnist.stage1.steps = 1000000000000.0: Input should be a valid integer",
        ),
    ],
)
def test_bad_values_are_refused_with_key_and_value(
    embedded_raw: dict[str, Any], edit: Any, expected: str
) -> None:
    edit(embedded_raw)
    message = refused(embedded_raw)
    assert message.startswith("p.yaml: ")
    assert expected in message


def test_patch_size_message_names_the_sizes(embedded_raw: dict[str, Any]) -> None:
    embedded_raw["models"]["moving_mnist"]["predrnn_v2"]["patch_size"] = 5
    message = refused(embedded_raw)
    assert "models.moving_mnist.predrnn_v2 with data.moving_mnist" in message
    assert "5" in message and "32" in message


def test_lma_settings_that_cannot_work_are_refused(embedded_raw: dict[str, Any]) -> None:
    embedded_raw["training"]["kth"]["stage2"]["lr"] = 1.0
    assert "training.kth.stage2.lr = 1.0 is above method.lma.a_max" in refused(embedded_raw)
    embedded_raw["training"]["kth"]["stage2"]["lr"] = 1e-4
    embedded_raw["method"]["lma"].update(cycle=5, meta_steps=5)
    assert "method.lma.meta_steps = 5 must be below method.lma.cycle = 5" in refused(embedded_raw)
    embedded_raw["experiment"]["variants"] = ["baseline", "bdn"]
    validate_params(embedded_raw)  # no LMA variant: its settings do not matter


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiment: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_params(broken)
    with pytest.raises(ConfigError, match="cannot read params file"):
        load_params(tmp_path / "absent.yaml")


def test_exponent_floats_are_floats(tmp_path: Path, embedded_raw: dict[str, Any]) -> None:
    text = yaml.safe_dump(embedded_raw).replace("0.001", "1e-3")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).training["moving_mnist"].stage1.lr == 1e-3


def test_use_preset_switches_and_keeps_hand_edits(tmp_path: Path) -> None:
    target = tmp_path / "params.yaml"
    target.write_text("# my edits\n")
    assert main(["--params", str(target), "use-preset", "paper"]) == 0
    assert load_params(target).experiment.preset == "paper"
    assert (tmp_path / "params.yaml.bak").read_text() == "# my edits\n"
    # An unknown preset is refused by the parser (it lists the presets), params.yaml untouched.
    with pytest.raises(SystemExit) as refused:
        main(["--params", str(target), "use-preset", "nonsense"])
    assert refused.value.code == 2
    assert load_params(target).experiment.preset == "paper"
    # A file that is some preset's expansion is replaced without a backup.
    (tmp_path / "params.yaml.bak").unlink()
    assert main(["--params", str(target), "use-preset", "embedded"]) == 0
    assert target.read_text() == preset_text("embedded")
    assert not (tmp_path / "params.yaml.bak").exists()


def test_each_dataset_has_its_own_training_and_model_sections(embedded_raw: dict[str, Any]) -> None:
    embedded_raw["training"]["kth"]["batch_size"] = 4
    embedded_raw["models"]["kth"]["predrnn_v2"]["decouple_beta"] = 0.01
    params = validate_params(embedded_raw)
    assert params.training["kth"].batch_size == 4
    assert params.training["moving_mnist"].batch_size == 8
    assert params.models["kth"]["predrnn_v2"].decouple_beta == 0.01
    assert params.models["moving_mnist"]["predrnn_v2"].decouple_beta == 0.1


def test_files_with_a_key_given_twice_or_non_finite_values_are_refused(tmp_path: Path) -> None:
    text = preset_text("embedded")
    path = tmp_path / "params.yaml"
    path.write_text("training:\n  kth:\n    batch_size: 8\n    batch_size: 4\n")
    with pytest.raises(ConfigError) as error:
        load_params(path)
    assert str(error.value) == (
        f"{path}: not valid YAML (line 4, column 5): key 'batch_size' is given twice in one "
        "mapping; keep one"
    )
    path.write_text(text.replace("lr: 0.001\n", "lr: .inf\n", 1))
    with pytest.raises(ConfigError, match=r"training\.moving_mnist\.stage1\.lr = inf: expected a"):
        load_params(path)
    path.write_text(text.replace("frame_weight: 1.0", "frame_weight: .nan", 1))
    with pytest.raises(ConfigError, match=r"method\.bdn\.frame_weight = nan: expected a finite"):
        load_params(path)


def test_the_method_does_not_import_the_params_schema() -> None:
    # config.py uses the variant registry; the method must not import config back (no cycle).
    code = "import sys, seemore.method.variants; assert 'seemore.config' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
