"""`seemore` command line: the only thing Snakemake rules and DVC stages call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seemore import pipeline
from seemore.config import ConfigError, Params, load_params, preset_path
from seemore.data.download import DataError

DEFAULT_PARAMS = Path("params.yaml")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", required=True)
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


def _train_job(params: Params, run: pipeline.Run, stage: int) -> Any:
    from seemore.data import DATASETS
    from seemore.method.variants import VARIANTS
    from seemore.train import TrainJob, resolve_device

    return TrainJob(
        benchmark=DATASETS.get(run.dataset),
        data=params.data[run.dataset],
        backbone_name=run.backbone,
        backbone=params.models[run.dataset][run.backbone],
        variant_name=run.variant,
        variant=VARIANTS.get(run.variant),
        training=params.training[run.dataset],
        method=params.method,
        seed=run.seed,
        params_hash=pipeline.stage_hash(params, run, stage),
        device=resolve_device(params.experiment.device),
    )


def cmd_train(args: argparse.Namespace, params: Params) -> None:
    from seemore.train import train_stage

    _set_threads(args.threads)
    run = _run_from(args, params)
    path = train_stage(
        _train_job(params, run, args.stage),
        args.stage,
        pipeline.prepared_dir(run.dataset),
        run.directory,
        stage1_hash=pipeline.stage_hash(params, run, 1),
        progress=not args.quiet,
    )
    print(f"wrote {path}")


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
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
        recipe=saved.get("recipe"),
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
    from seemore.backbones.profile import profile
    from seemore.backbones.reference import reference_config
    from seemore.data import DATASETS

    backbone_class = BACKBONES.get(args.backbone)
    active = None if args.reference or not args.params.is_file() else load_params(args.params)
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
    parameters, flops = profile(backbone_class, config, geometry)
    info = {
        "backbone": args.backbone,
        "dataset": args.dataset,
        "configuration": origin,
        "geometry": vars(geometry),
        "kind": backbone_class.kind.value,
        "parameters": parameters,
        "flops_per_clip": flops,
    }
    print(json.dumps(info, indent=2))


def cmd_use_preset(args: argparse.Namespace) -> None:
    from seemore.recipes import write_preset

    target: Path = args.params
    backup = write_preset(args.name, target)
    if backup is not None:
        print(f"kept your edited {target} as {backup}")
    print(f"{target} now holds the {args.name!r} preset ({preset_path(args.name)})")


def cmd_check(args: argparse.Namespace, params: Params) -> None:
    count = sum(1 for _ in pipeline.runs(params))
    print(f"{args.params}: valid; {count} runs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seemore", description=__doc__)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="obtain and preprocess one dataset")
    prepare.add_argument("--dataset", required=True)

    train = commands.add_parser("train", help="train one stage of one run")
    _add_run_arguments(train)
    train.add_argument("--stage", type=int, choices=(1, 2), required=True)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="metrics of one trained run on the test split")
    _add_run_arguments(evaluate)
    evaluate.add_argument("--threads", type=int, default=None)

    report = commands.add_parser("report", help="render reports/ablation.html and .csv")
    report.add_argument("--results", default=str(pipeline.RESULTS_ROOT))
    report.add_argument("--out", default=str(pipeline.REPORTS_ROOT))
    report.add_argument(
        "--latency-benchmark",
        default="benchmarks/inference_latency.json",
        help="controlled inference measurement cited for latency parity (if the file exists)",
    )

    info = commands.add_parser("info", help="a backbone's parameter count and FLOPs")
    info.add_argument("--backbone", required=True)
    info.add_argument("--dataset", required=True)
    info.add_argument(
        "--reference", action="store_true", help="use the published reference configuration"
    )

    preset = commands.add_parser("use-preset", help="write a preset into params.yaml")
    preset.add_argument("name", help="embedded or paper")

    commands.add_parser("check", help="validate params.yaml")

    fetch = commands.add_parser(
        "fetch-weights",
        help="download torchvision's AlexNet weights for LPIPS into the torch hub cache",
    )
    fetch.add_argument("--url", help="where to download from (default: torchvision's URL)")
    fetch.add_argument(
        "--allow-offline",
        action="store_true",
        help="on failure warn and exit 0 (evaluation then records LPIPS as unavailable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            cmd_report(args)
        elif args.command == "info":
            cmd_info(args)
        elif args.command == "use-preset":
            cmd_use_preset(args)
        elif args.command == "fetch-weights":
            cmd_fetch_weights(args)
        else:
            params = load_params(args.params)
            handler = {
                "prepare": cmd_prepare,
                "train": cmd_train,
                "evaluate": cmd_evaluate,
                "check": cmd_check,
            }[args.command]
            handler(args, params)
    except (ConfigError, DataError, FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"seemore {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
