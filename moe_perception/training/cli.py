"""Subcommands of ``moe-perception`` for this part (argparse only; handlers import lazily).

- ``train CONFIG``: both training stages (also under ``torchrun`` for DDP);
- ``evaluate CHECKPOINT``: every metric for the model and the baselines of its experts;
- ``calibrate CHECKPOINT --out NEW``: fit the temperature on validation and store it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moe_perception.training.config import TrainConfig


def _data_config(args: argparse.Namespace):
    """The data section: from ``--config`` if given, then ``--data``/``--dataset``."""
    from dataclasses import replace

    from moe_perception.training.config import DataConfig, load_train_config

    config = load_train_config(args.config) if args.config else None
    data = config.data if config else DataConfig()
    if args.data:
        data = replace(data, root=args.data)
    if args.dataset:
        data = replace(data, dataset=args.dataset)
    return data, config


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_perception.training.config import load_train_config
    from moe_perception.training.trainer import train

    config = load_train_config(args.config)
    if args.data:
        from dataclasses import replace

        config = replace(config, data=replace(config.data, root=args.data))
    out = Path(args.out) if args.out else Path("runs") / config.name
    pretrained: bool | str = args.encoder_weights or not args.no_pretrained
    final = train(config, out, pretrained=pretrained)
    print(f"model written to {final}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from moe_perception.checkpoint import read_checkpoint
    from moe_perception.training.config import EvalConfig
    from moe_perception.training.evaluate import (
        evaluate_checkpoint,
        parse_condition,
        study_conditions,
    )
    from moe_perception.training.report import write_report

    data, config = _data_config(args)
    _set_threads(args, config)
    settings = (config.evaluation if config and config.evaluation else None) or EvalConfig()
    changes = {}
    for key in ("bootstrap", "limit", "batch_size", "examples", "seed", "temperature"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = value
    if args.models:
        changes["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.corruption:
        from moe_perception.data.corruptions import CORRUPTIONS

        names = CORRUPTIONS if args.corruption == ["all"] else tuple(args.corruption)
        changes["corruptions"] = tuple(names)
    if args.severity:
        changes["severities"] = tuple(args.severity)
    settings = replace(settings, **changes)
    if args.val is not None:
        validation = None if args.val == "none" else parse_condition(args.val).subset
        settings = replace(settings, validation=validation)
    if args.test is not None:
        settings = replace(settings, test=parse_condition(args.test).subset)
    extra = [parse_condition(text, "ood") for text in args.ood or ()]
    if extra:
        settings = replace(settings, ood=())
    conditions = study_conditions(settings) + extra
    if settings.temperature == "fit" and not any(c.role == "validation" for c in conditions):
        raise ValueError("--temperature fit needs a validation subset (--val)")
    metadata, _ = read_checkpoint(args.checkpoint)
    results, examples = evaluate_checkpoint(
        args.checkpoint, data, settings, conditions, device=args.device, progress=not args.quiet
    )
    out = Path(args.out) if args.out else Path("reports") / Path(args.checkpoint).stem
    written = write_report(results, examples, out, metadata.class_colors)
    for name, condition in results["conditions"].items():
        for view, summary in condition["views"].items():
            pe = summary["maps"]["predictive_entropy"]
            print(
                f"{name:<14} {view:<22} mIoU {100 * summary['miou']:5.1f}  "
                f"ECE {100 * summary['ece']:5.2f}  AUROC(PE) "
                f"{100 * (pe['auroc'] or float('nan')):5.1f}"
            )
    print(f"wrote {len(written)} files to {out}")
    return 0


def _study(args: argparse.Namespace) -> int:
    """Train (or resume) a study config's run, then evaluate it with its evaluation section."""
    from pathlib import Path

    from moe_perception.training.config import load_train_config

    config = load_train_config(args.config)
    if config.evaluation is None:
        raise ValueError(f"{args.config} has no evaluation section")
    run_dir = Path(args.runs) / config.name
    checkpoint = run_dir / "model.pt"
    if not (args.skip_training and checkpoint.is_file()):
        train_args = argparse.Namespace(
            config=args.config,
            out=str(run_dir),
            data=args.data,
            no_pretrained=False,
            encoder_weights=None,
        )
        _train(train_args)
    eval_args = argparse.Namespace(
        checkpoint=str(checkpoint),
        config=args.config,
        data=args.data,
        dataset=None,
        device=args.device,
        quiet=args.quiet,
        val=None,
        test=None,
        ood=None,
        corruption=None,
        severity=None,
        models=None,
        temperature=None,
        bootstrap=None,
        limit=args.limit,
        threads=args.threads,
        batch_size=None,
        examples=None,
        seed=None,
        out=str(Path(args.reports) / config.name),
    )
    return _evaluate(eval_args)


def _summarize(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from moe_perception.training.report import study_summary

    results = []
    for folder in args.reports:
        path = Path(folder) / "results.json"
        if not path.is_file():  # committed reports keep only the compact metrics
            path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"no results.json or metrics.json in {folder}")
        results.append({**json.loads(path.read_text()), "run": Path(folder).name})
    text = study_summary(results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def _model_card(args: argparse.Namespace) -> int:
    from moe_perception.training.model_card import write_model_card

    out = write_model_card(
        args.checkpoint, args.report, args.config, args.log, args.out, args.corruptions
    )
    print(f"wrote {out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from moe_perception.training.calibration import calibrate_checkpoint
    from moe_perception.training.evaluate import parse_condition

    data, config = _data_config(args)
    _set_threads(args, config)
    condition = parse_condition(args.subset, "validation")
    report = calibrate_checkpoint(
        args.checkpoint,
        args.out,
        data,
        condition.subset,
        fp16=args.fp16,
        limit=args.limit,
        device=args.device,
        progress=not args.quiet,
    )
    print(
        f"temperature {report['temperature']:.4f} (NLL {report['nll_before']:.4f} -> "
        f"{report['nll_after']:.4f} on {report['pixels']} pixels of {report['frames']} "
        f"frames); written to {args.out}"
    )
    return 0


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a training/study YAML (data and evaluation sections)")
    parser.add_argument("--data", help="dataset folder (default: the config's, else CamVid)")
    parser.add_argument(
        "--dataset", choices=("camvid", "a2d2", "cityscapes"), help="dataset layout"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the config's threads, else torch's default)",
    )


def _set_threads(args: argparse.Namespace, config: TrainConfig | None) -> None:
    """One thread per process is often faster when other jobs share the cores."""
    import torch

    threads = args.threads or (config.threads if config is not None else 0)
    if threads:
        torch.set_num_threads(threads)


def register(commands: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to the ``moe-perception`` parser."""
    train = commands.add_parser(
        "train",
        help="train a model from a YAML config (experts, then the gate)",
        description="Stage 1 trains each expert on its subset; stage 2 trains the gate on "
        "the frozen experts. Resumes from <out>/state_*.pt. For several GPUs run it under "
        "torchrun --nproc_per_node N.",
    )
    train.add_argument("config", help="training YAML, e.g. config/camvid_default.yaml")
    train.add_argument("--out", help="run folder (default runs/<config name>)")
    train.add_argument("--data", help="dataset folder (overrides the config)")
    train.add_argument(
        "--no-pretrained", action="store_true", help="random encoder init (tests only)"
    )
    train.add_argument("--encoder-weights", help="encoder weights file (e.g. ResNet-101)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a checkpoint and the baselines of its experts",
        description="Subsets are written [NAME=]SPLITS[:SEQUENCES][@A-B][+CORRUPTION:SEVERITY],"
        " e.g. test, dusk=test:0001TP, test:Seq05VD, test+fog:3. Without --val/--test/--ood the"
        " config's evaluation section (or the defaults: val, test) decides.",
    )
    evaluate.add_argument("checkpoint", help="a moe_perception checkpoint (.pt)")
    _add_data_arguments(evaluate)
    evaluate.add_argument("--val", help="validation subset (temperature, thresholds); 'none'")
    evaluate.add_argument("--test", help="in-distribution test subset (default test)")
    evaluate.add_argument(
        "--ood", action="append", help="an out-of-distribution subset (repeatable)"
    )
    evaluate.add_argument(
        "--corruption", nargs="+", help="corruptions of the test subset, or 'all'"
    )
    evaluate.add_argument("--severity", nargs="+", type=int, help="severities (default 1-5)")
    evaluate.add_argument(
        "--models", help="views: moe,ensemble,experts,expert:NAME,mc_dropout[:NAME]"
    )
    evaluate.add_argument(
        "--temperature",
        choices=("fit", "checkpoint", "none"),
        help="fit T per view on --val (default), use the checkpoint's T, or T = 1",
    )
    evaluate.add_argument("--bootstrap", type=int, help="bootstrap resamples (0: none)")
    evaluate.add_argument("--limit", type=int, help="at most N frames per subset (0: all)")
    evaluate.add_argument("--batch-size", type=int, dest="batch_size", help="frames per pass")
    evaluate.add_argument("--examples", type=int, help="example frames per subset")
    evaluate.add_argument("--seed", type=int, help="corruption and bootstrap seed")
    evaluate.add_argument("--out", help="report folder (default reports/<checkpoint name>)")
    evaluate.set_defaults(handler=_evaluate)

    study = commands.add_parser(
        "study",
        help="train a study config's run and evaluate it (one command per study config)",
    )
    study.add_argument("config", help="a study YAML, e.g. config/study_camvid_k2_simple.yaml")
    study.add_argument("--runs", default="runs", help="folder of run folders (default runs)")
    study.add_argument("--reports", default="reports/study", help="folder of reports")
    study.add_argument("--data", help="dataset folder (overrides the config)")
    study.add_argument("--device", default="cpu", help="evaluation device")
    study.add_argument("--limit", type=int, help="at most N frames per evaluated subset")
    study.add_argument(
        "--skip-training", action="store_true", help="evaluate an existing model.pt as it is"
    )
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    study.add_argument("--threads", type=int, help="torch CPU threads (default: the config's)")
    study.set_defaults(handler=_study)

    summarize = commands.add_parser(
        "summarize",
        help="compare evaluation reports along the paper's claims (markdown)",
    )
    summarize.add_argument(
        "reports", nargs="+", help="report folders with results.json or metrics.json"
    )
    summarize.add_argument("--out", help="markdown file to write (default: print)")
    summarize.set_defaults(handler=_summarize)

    card = commands.add_parser(
        "model-card", help="write a model card from a checkpoint and its evaluation report"
    )
    card.add_argument("checkpoint", help="the shipped checkpoint")
    card.add_argument("--report", required=True, help="evaluate's folder for the test set")
    card.add_argument("--config", required=True, help="the training YAML")
    card.add_argument("--log", required=True, help="the run's log.jsonl")
    card.add_argument("--corruptions", help="evaluate's folder for the corruptions (optional)")
    card.add_argument("--out", default="models/README.md", help="default models/README.md")
    card.set_defaults(handler=_model_card)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit the temperature on validation and write a calibrated checkpoint",
    )
    calibrate.add_argument("checkpoint", help="a moe_perception checkpoint (.pt)")
    calibrate.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    _add_data_arguments(calibrate)
    calibrate.add_argument("--subset", default="val", help="validation subset (default val)")
    calibrate.add_argument("--limit", type=int, default=0, help="at most N frames (0: all)")
    calibrate.add_argument("--fp16", action="store_true", help="store weights in half precision")
    calibrate.set_defaults(handler=_calibrate)
