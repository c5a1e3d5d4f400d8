"""`seemore` command line: the only thing Snakemake rules and DVC stages call."""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import subprocess
import sys
import traceback
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seemore import pipeline
from seemore.config import PRESETS_DIR, ConfigError, Params, load_params, preset_path
from seemore.data.download import DataError
from seemore.registry import Registry

DEFAULT_PARAMS = Path("params.yaml")
# Input a user can fix (params, data, names): exit 2. Anything else failing: exit 1.
INPUT_ERROR, FAILURE, INTERRUPTED = 2, 1, 130


def _registries() -> dict[str, Registry[Any]]:
    from seemore.backbones import BACKBONES
    from seemore.data import DATASETS
    from seemore.method.variants import VARIANTS

    return {"dataset": DATASETS, "backbone": BACKBONES, "variant": VARIANTS}


def _add_name_argument(parser: argparse.ArgumentParser, concept: str) -> None:
    """`--<concept> NAME`, one of the registered names (listed, with descriptions, below)."""
    names = _registries()[concept].names()
    parser.add_argument(
        f"--{concept}",
        required=True,
        choices=names,
        metavar=concept.upper(),
        help=f"one of: {', '.join(names)}",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    for concept in ("dataset", "backbone", "variant"):
        _add_name_argument(parser, concept)
    parser.add_argument("--seed", type=int, required=True)


def _run_from(args: argparse.Namespace, params: Params) -> pipeline.Run:
    run = pipeline.Run(args.dataset, args.backbone, args.variant, args.seed)
    if run not in set(pipeline.runs(params)):
        raise ConfigError(
            f"{args.params}: {run} is not in the experiment matrix "
            f"(experiment.datasets/backbones/variants/seeds)"
        )
    return run


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)


def cmd_prepare(args: argparse.Namespace, params: Params) -> None:
    from seemore.data import DATASETS

    if args.dataset not in params.data:
        raise ConfigError(f"{args.params}: data.{args.dataset} is missing")
    benchmark = DATASETS.get(args.dataset)
    out_dir = pipeline.prepared_dir(args.dataset)
    raw = pipeline.raw_dir(args.dataset)
    raw.mkdir(parents=True, exist_ok=True)
    benchmark.prepare(params.data[args.dataset], raw, out_dir)
    print(f"prepared {args.dataset} into {out_dir}")


def _train_job(
    params: Params,
    dataset: str,
    backbone: str,
    variant: str,
    label: str,
    seed: int,
    params_hash: str,
) -> Any:
    from seemore.data import DATASETS
    from seemore.method.variants import VARIANTS
    from seemore.train import TrainJob, resolve_device

    return TrainJob(
        benchmark=DATASETS.get(dataset),
        data=params.data[dataset],
        backbone_name=backbone,
        backbone=params.models[dataset][backbone],
        variant_name=label,
        variant=VARIANTS.get(variant),
        training=params.training[dataset].for_backbone(backbone),
        method=params.method,
        seed=seed,
        params_hash=params_hash,
        device=resolve_device(params.experiment.device),
        checkpoint_every=params.experiment.checkpoint_every,
        log_every=params.experiment.log_every,
        compile=params.experiment.compile,
    )


def _stage_one_from(args: argparse.Namespace, params: Params) -> pipeline.StageOne:
    # Stage one of a variant is the stage one of its objective.
    objective = args.objective or (args.variant and pipeline.objective_of(args.variant))
    if not objective:
        raise ConfigError("train --stage 1 needs --objective (plain or bidirectional)")
    job = pipeline.StageOne(args.dataset, args.backbone, objective, args.seed)
    if job not in pipeline.stage_ones(params):
        raise ConfigError(
            f"{args.params}: stage one {job} is not in the experiment matrix "
            "(experiment.datasets/backbones/seeds, and a variant of experiment.variants "
            "with that objective)"
        )
    return job


def cmd_train(args: argparse.Namespace, params: Params) -> None:
    from seemore import devices, distributed

    if distributed.world_size() == 1:  # torchrun's ranks share their launcher's GPUs
        claimed = devices.claim_for_job(params, training=True, label=f"train stage {args.stage}")
        if len(claimed) > 1:
            # experiment.gpus_per_run > 1: the same command as one rank per claimed GPU.
            command = distributed.torchrun_command(len(claimed), sys.argv[1:])
            code = subprocess.run(command, check=False).returncode
            if code:
                raise RuntimeError(f"distributed training exited with status {code}")
            return
    _set_threads(args.threads)
    from seemore.train import train_stage

    if args.stage == 1:
        stage_one = _stage_one_from(args, params)
        # The objective is built from the variant that trains it and nothing else.
        variant, label = pipeline.objective_variant(stage_one.objective), stage_one.objective
        out_dir, params_hash = stage_one.directory, pipeline.stage_one_hash(params, stage_one)
    else:
        if args.variant is None:
            raise ConfigError("train --stage 2 needs --variant")
        run = _run_from(args, params)
        stage_one, variant, label = run.stage_one, run.variant, run.variant
        out_dir, params_hash = run.directory, pipeline.stage_two_hash(params, run)
    job = _train_job(params, args.dataset, args.backbone, variant, label, args.seed, params_hash)
    path = train_stage(
        job,
        args.stage,
        pipeline.prepared_dir(args.dataset),
        out_dir,
        stage1_hash=pipeline.stage_one_hash(params, stage_one),
        stage1_path=stage_one.checkpoint,
        progress=not args.quiet,
    )
    print(f"wrote {path}")


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
    from seemore import devices

    # Before torch initialises CUDA: the job's own device.
    devices.claim_for_job(params, training=False, label="evaluate")
    from seemore.data import DATASETS
    from seemore.evaluate import EvaluationJob, RunIdentity, run_evaluation
    from seemore.train import load_inference_model, resolve_device
    from seemore.validation import model_file

    _set_threads(args.threads)
    run = _run_from(args, params)
    model_path = run.directory / model_file(params.evaluation.checkpoint)
    network, saved = load_inference_model(model_path)
    job = EvaluationJob(
        identity=RunIdentity(
            run.dataset, run.backbone, run.variant, run.seed, pipeline.stage_hash(params, run, 2)
        ),
        benchmark=DATASETS.get(run.dataset),
        data=params.data[run.dataset],
        evaluation=params.evaluation,
        prepared_dir=pipeline.prepared_dir(run.dataset),
        model_path=model_path,
        out_dir=run.directory,
        device=resolve_device(params.experiment.device),
        preset=params.experiment.preset,
        recipe=params.training[run.dataset].recipe,
        selected_checkpoint=params.evaluation.checkpoint,
        evaluation_hash=pipeline.keys_hash(params, pipeline.EVALUATE_KEYS, dataset=run.dataset),
    )
    print(f"wrote {run_evaluation(job, network, saved)}")


def cmd_fetch_weights(args: argparse.Namespace) -> None:
    from seemore.metrics import (
        ALEXNET_SHA256_PREFIX,
        ALEXNET_URL,
        FETCH_TIMEOUT_S,
        MetricUnavailable,
        alexnet_weights_path,
        fetch_weights,
    )

    try:
        path = fetch_weights(
            args.url or ALEXNET_URL, alexnet_weights_path(), ALEXNET_SHA256_PREFIX, FETCH_TIMEOUT_S
        )
    except MetricUnavailable as error:
        if not args.allow_offline:
            raise DataError(str(error)) from None
        print(f"seemore fetch-weights: warning: {error}; LPIPS will be unavailable")
        return
    print(f"verified {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from seemore.report import render_report

    render_report(Path(args.results), Path(args.out), Path(args.latency_benchmark))
    print(f"wrote {Path(args.out) / 'ablation.html'}")


def cmd_info(args: argparse.Namespace) -> None:
    from seemore.backbones import BACKBONES
    from seemore.backbones.profile import build_on_meta, count_flops, count_parameters, level_sizes
    from seemore.backbones.reference import reference_config
    from seemore.data import DATASETS

    backbone_class = BACKBONES.get(args.backbone)
    # Without params.yaml here, the reference configuration; a params file named on the
    # command line must exist.
    explicit = args.params != DEFAULT_PARAMS
    use_params = not args.reference and (explicit or args.params.is_file())
    active = load_params(args.params) if use_params else None
    configured = active.models.get(args.dataset, {}) if active is not None else {}
    if active is not None and args.dataset in active.data and args.backbone in configured:
        config = configured[args.backbone]
        geometry = DATASETS.get(args.dataset).geometry(active.data[args.dataset])
        origin = str(args.params)
    else:
        # Not configured in params.yaml (or --reference): the published configuration.
        config, geometry = reference_config(args.backbone, args.dataset)
        origin = f"reference configuration of {args.backbone} on {args.dataset}"
    for problem in config.check_geometry(geometry):
        raise ConfigError(f"{origin}: {problem}")
    network = build_on_meta(backbone_class, config, geometry)
    info = {
        "backbone": args.backbone,
        "dataset": args.dataset,
        "configuration": origin,
        "geometry": vars(geometry),
        "kind": backbone_class.kind.value,
        "parameters": count_parameters(network),
        "flops_per_clip": count_flops(network),
        # LMA learns one rate per level, shallow to deep (per network: BDN trains two).
        "levels": [{"name": name, "parameters": size} for name, size in level_sizes(network)],
    }
    print(json.dumps(info, indent=2))


def cmd_use_preset(args: argparse.Namespace) -> None:
    from seemore.recipes import write_preset

    target: Path = args.params
    backup = write_preset(args.name, target)
    if backup is not None:
        print(f"kept your edited {target} as {backup}")
    print(f"{target} now holds the {args.name!r} preset ({preset_path(args.name)})")


def cmd_dvc_yaml(args: argparse.Namespace) -> None:
    text = pipeline.render_dvc_yaml(pipeline.load_plan(args.params))
    temp = pipeline.DVC_YAML.with_name(f".{pipeline.DVC_YAML.name}.part")
    temp.write_text(text)
    temp.replace(pipeline.DVC_YAML)
    print(f"wrote {pipeline.DVC_YAML}")


def cmd_status(args: argparse.Namespace, params: Params) -> None:
    from seemore.status import format_statuses, run_statuses

    print(format_statuses(run_statuses(params)))


def cmd_check(args: argparse.Namespace, params: Params) -> None:
    count = sum(1 for _ in pipeline.runs(params))
    print(f"{args.params}: valid; {count} runs")


def cmd_plan(args: argparse.Namespace) -> None:
    from seemore.plan import REFERENCE_GPUS, Assumptions, build_plan, format_plan

    if args.preset is None:
        params = load_params(args.params)
        source = f"{args.params} (preset {params.experiment.preset})"
    else:
        from seemore.config import validate_params
        from seemore.recipes import compose_preset

        path = preset_path(args.preset).relative_to(PRESETS_DIR.parent.parent)
        source = f"preset {args.preset} ({path})"
        params = validate_params(compose_preset(args.preset), source)

    assumptions = Assumptions(
        gpu=REFERENCE_GPUS[args.gpu],
        gpu_utilisation=args.gpu_utilisation,
        cpu_flops_per_core=args.cpu_gflops * 1e9,
    )
    plan = build_plan(params, assumptions)
    print(format_plan(plan, source))


# --- parser -------------------------------------------------------------------------------


def preset_descriptions() -> list[tuple[str, str]]:
    """Each preset's name and the first sentence of its leading comment."""
    entries = []
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.removeprefix("#").strip())
        text = " ".join(comment)
        end = text.find(". ")
        entries.append((path.stem, text if end < 0 else text[: end + 1]))
    return entries


def protocol_descriptions() -> list[tuple[str, str]]:
    """`dataset/protocol` and the reference each protocol reproduces."""
    from seemore.data import DATASETS

    entries = []
    for dataset in DATASETS:
        benchmark = DATASETS.get(dataset)
        for name in benchmark.protocols:
            protocol = benchmark.protocols.get(name)
            marks = [
                mark
                for mark, on in (
                    ("default", name == benchmark.default_protocol),
                    ("not comparable", not protocol.comparable),
                )
                if on
            ]
            label = f"{dataset}/{name}" + (f" ({', '.join(marks)})" if marks else "")
            entries.append((label, protocol.reference))
    return entries


def recipe_descriptions() -> list[tuple[str, str]]:
    from seemore.recipes import load_recipe, recipe_names

    return [(name, str(load_recipe(name)["title"])) for name in recipe_names()]


def catalogue() -> str:
    """Every registered name with its one-line description, for the help texts."""
    sections = [
        (f"{concept}s (--{concept})", [(n, registry.get(n).description) for n in registry])
        for concept, registry in _registries().items()
    ]
    sections.insert(1, ("protocols (data.<dataset>.protocol)", protocol_descriptions()))
    sections.append(("recipes (training.<dataset>.recipe)", recipe_descriptions()))
    sections.append(("presets (seemore use-preset NAME)", preset_descriptions()))
    lines = []
    for title, entries in sections:
        width = max(len(name) for name, _ in entries)
        lines.append(f"{title}:")
        lines.extend(f"  {name:<{width}}  {description}" for name, description in entries)
    return "\n".join(lines)


def _positive_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a fraction in (0, 1]")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: expected a positive number")
    return value


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """--params and --debug, accepted before the command (`defaults`: the top-level parser
    sets their defaults) and after it (SUPPRESS: absent there, the top-level value stands)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--params",
        type=Path,
        default=DEFAULT_PARAMS if defaults else argparse.SUPPRESS,
        metavar="FILE",
        help=f"the params file (default: {DEFAULT_PARAMS})",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="on an error, also print its traceback",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    from seemore.plan import DEFAULT_CPU_FLOPS_PER_CORE, DEFAULT_GPU_UTILISATION, REFERENCE_GPUS

    epilog = catalogue()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="seemore",
        description=(
            "seemore: train video-prediction backbones with and without SeeMore (BDN + LMA) on "
            "the standard benchmarks and report the ablation. params.yaml is the experiment; "
            "`seemore plan` shows what it costs before it runs."
        ),
        epilog=epilog,
        formatter_class=formatter,
        parents=[_global_options(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    after = [_global_options(defaults=False)]

    def command(
        name: str, handler: Callable[..., None], reads_params: bool, summary: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=epilog,
            formatter_class=formatter,
            parents=after,
        )
        sub.set_defaults(handler=handler, reads_params=reads_params, command_parser=sub)
        return sub

    prepare = command("prepare", cmd_prepare, True, "obtain and preprocess one dataset")
    _add_name_argument(prepare, "dataset")

    train = command(
        "train", cmd_train, True, "train stage one of an objective, or stage two of one run"
    )
    _add_name_argument(train, "dataset")
    _add_name_argument(train, "backbone")
    train.add_argument("--seed", type=int, required=True)
    train.add_argument("--stage", type=int, choices=(1, 2), required=True)
    train.add_argument(
        "--objective",
        choices=pipeline.OBJECTIVES,
        help="stage one: the objective it trains (or give --variant: its objective)",
    )
    train.add_argument(
        "--variant", choices=_registries()["variant"].names(), help="stage two: the variant"
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument(
        "--quiet", action="store_true", help="no progress bar (log lines are still printed)"
    )

    evaluate = command(
        "evaluate", cmd_evaluate, True, "metrics of one trained run on the test split"
    )
    _add_run_arguments(evaluate)
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads")

    report = command("report", cmd_report, False, "render reports/ablation.html and .csv")
    report.add_argument("--results", default=str(pipeline.RESULTS_ROOT))
    report.add_argument("--out", default=str(pipeline.REPORTS_ROOT))
    report.add_argument(
        "--latency-benchmark",
        default="benchmarks/inference_latency.json",
        help="controlled inference measurement cited for latency parity (if the file exists)",
    )

    info = command(
        "info", cmd_info, False, "a backbone's parameters, FLOPs and levels (LMA's rate groups)"
    )
    _add_name_argument(info, "backbone")
    _add_name_argument(info, "dataset")
    info.add_argument(
        "--reference", action="store_true", help="use the published reference configuration"
    )

    preset = command("use-preset", cmd_use_preset, False, "write a preset into params.yaml")
    preset.add_argument("name", choices=[name for name, _ in preset_descriptions()])

    plan = command(
        "plan", cmd_plan, False, "jobs, FLOPs, GPU/CPU hours and disk of params.yaml, before a run"
    )
    plan.add_argument(
        "--preset",
        choices=[name for name, _ in preset_descriptions()],
        help="plan this preset instead of params.yaml (nothing is written)",
    )
    plan.add_argument(
        "--gpu", choices=sorted(REFERENCE_GPUS), default="h100-sxm", help="reference GPU"
    )
    plan.add_argument(
        "--gpu-utilisation",
        type=_positive_fraction,
        default=DEFAULT_GPU_UTILISATION,
        metavar="FRACTION",
        help=f"share of the GPU's peak reached (default: {DEFAULT_GPU_UTILISATION})",
    )
    plan.add_argument(
        "--cpu-gflops",
        type=_positive_float,
        default=DEFAULT_CPU_FLOPS_PER_CORE / 1e9,
        metavar="RATE",
        help="GFLOP/s one CPU core sustains in training (default: measured, "
        "benchmarks/plan_check.md)",
    )
    command("dvc-yaml", cmd_dvc_yaml, False, "write dvc.yaml from params.yaml")

    command("check", cmd_check, True, "validate params.yaml")
    command("status", cmd_status, True, "stage, step, last loss and ETA of every run")

    fetch = command(
        "fetch-weights",
        cmd_fetch_weights,
        False,
        "download torchvision's AlexNet weights for LPIPS into the torch hub cache",
    )
    fetch.add_argument("--url", help="where to download from (default: torchvision's URL)")
    fetch.add_argument(
        "--allow-offline",
        action="store_true",
        help="on failure warn and exit 0 (evaluation then records LPIPS as unavailable)",
    )
    return parser


# --- errors -------------------------------------------------------------------------------


def _one_line(error: object, limit: int | None = None) -> str:
    """The message on one line; foreign messages (`limit`) cut short, ours kept whole."""
    text = " ".join(str(error).split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def _torch_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def _unreadable_checkpoint(error: BaseException) -> bool:
    """What torch.load raises on a truncated, corrupt or foreign file."""
    if isinstance(error, pickle.UnpicklingError | EOFError):
        return True
    return isinstance(error, RuntimeError) and "PytorchStreamReader" in str(error)


def describe_error(error: BaseException) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit status."""
    memory_hint = (
        "lower training.batch_size or evaluation.batch_size, or the data's image_size "
        "(seemore plan shows each run's size)"
    )
    if isinstance(error, MemoryError):
        return f"out of memory ({_one_line(error) or 'MemoryError'}); {memory_hint}", FAILURE
    if _torch_out_of_memory(error):
        return f"out of GPU memory: {_one_line(error)}; {memory_hint}", FAILURE
    if _unreadable_checkpoint(error):
        return (
            f"a checkpoint could not be read ({_one_line(error, 200)}): it is truncated, corrupt "
            "or not written by seemore; delete it and re-run the stage that writes it",
            INPUT_ERROR,
        )
    if isinstance(error, ConfigError):
        return str(error), INPUT_ERROR  # one line per problem
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else "KeyError", INPUT_ERROR
    if isinstance(error, DataError | ValueError):
        return _one_line(error), INPUT_ERROR
    if isinstance(error, urllib.error.HTTPError):
        return (
            f"download failed: HTTP {error.code} {error.reason} from {error.url}; the source may "
            "have moved: place the files by hand (source: local) or retry later",
            FAILURE,
        )
    if isinstance(error, urllib.error.URLError):
        return (
            f"cannot reach the download source ({_one_line(error.reason)}); this step needs "
            "network access: check the connection or proxy, place the files by hand "
            "(source: local), or use the embedded preset offline",
            FAILURE,
        )
    if isinstance(error, TimeoutError):
        detail = _one_line(error) or "no answer"
        return f"timed out ({detail}); check the network and retry", FAILURE
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        return (
            f"no space left on device{where}; free space (seemore plan estimates what the "
            "run needs) and re-run",
            FAILURE,
        )
    if isinstance(error, FileNotFoundError) and error.errno is None:
        return _one_line(error), INPUT_ERROR  # ours: the message names the file and the fix
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}", FAILURE
    if isinstance(error, RuntimeError):
        return _one_line(error, 400), FAILURE
    return (
        f"unexpected {type(error).__name__}: {_one_line(error, 400)} (--debug shows the traceback)",
        FAILURE,
    )


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        # Named by the command's own parser: its usage, not the top level's.
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if os.environ.get("DVC_STAGE"):
            # Run by `dvc repro`: never beside snakemake, never from a stale dvc.yaml.
            pipeline.refuse_if_snakemake_running()
            pipeline.check_dvc_yaml(pipeline.load_plan(args.params))
        if args.reads_params:
            args.handler(args, load_params(args.params))
        else:
            args.handler(args)
        sys.stdout.flush()  # a closed pipe (`seemore plan | head`) shows here, not at exit
    except BrokenPipeError:
        # The reader stopped reading: not an error; nothing more goes to that pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, KeyboardInterrupt) as error:
        if args.debug:
            traceback.print_exception(error)
        if isinstance(error, KeyboardInterrupt):
            message, status = "interrupted", INTERRUPTED
        else:
            message, status = describe_error(error)
        print(f"seemore {args.command}: error: {message}", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
