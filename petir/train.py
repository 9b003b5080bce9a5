"""Train a PET retriever (bi-encoder) or re-ranker (cross-encoder): ``python -m petir.train --help``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petir import cli
from petir.allocator import keep_freed_memory
from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
from petir.dev_check import describe_noise
from petir.distributed import main_process_first
from petir.errors import PetirError
from petir.files import output_lock, remove_written
from petir.ladder import describe_ladder, pick_learning_rate
from petir.options import key_values
from petir.pet import (
    BUDGETS,
    DEFAULT_BUDGET,
    METHODS,
    RENAMED,
    VARIANTS,
    count_on_config,
    get_method,
    make_config,
    resolve,
    resolve_method,
)
from petir.run_directory import LADDER_DIR, LADDER_FILE, RUN_OUTPUTS, check_run_directory
from petir.sampling import SamplingOptions, Triples
from petir.tasks import DEFAULT_TASK, TASKS, Task, get_task
from petir.train_config import TrainConfig, check_patience
from petir.trainer import Trainer, set_seed
from petir.training_data import TrainingDataOptions, describe_dev, dev_evaluator, load_training_data

EXAMPLES = """
examples:
  # the paper's IAA-L retriever on SciFact (BEIR layout) at the paper's 0.5 % budget; 15 % of the training
  # queries as dev set pick the learning rate (a ladder of 3) and the saved step (the untrained start included)
  python -m petir.train --data ../shared/data/scifact --method iaa-l --budget 0.5 \\
      --steps 300 --eval-every 50 --output runs/scifact-iaa-l

  # LoRA re-ranker from MS MARCO-style files, at the paper's 6.7 % budget (r=200)
  python -m petir.train --task rerank --corpus collection.tsv --queries queries.train.tsv \\
      --qrels qrels.train.tsv --method lora --budget 6.7 --output runs/msmarco-lora-reranker

  # a fixed learning rate: no ladder
  python -m petir.train --data ../shared/data/scifact --method full --lr 6e-5 --output runs/scifact-full

The trained model is written to OUTPUT/model: a directory that Pyserini's encode/search CLIs and
petir.rerank load directly (see docs/pyserini.md and docs/training.md).
"""


def _method_help(backbone: str | None) -> str:
    """Every method (where it comes from, its options, its learning rate) and every variant's budget presets; with a
    ``backbone``, their trainable share of it (counted on the meta device from its config alone)."""
    backbone_config = _backbone_config(backbone) if backbone is not None else None
    lines = ["PET methods (--method) and their options (--pet KEY=VALUE, repeatable):"]
    for method in METHODS.values():
        fields = dataclasses.fields(method.config_class)
        lines.append(f"  {method.name:<8} {method.summary}")
        lines.append(f"  {'':<8} from {method.reference}; default lr {method.learning_rate:g}")
        lines += [f"  {'':<8} {f.name}={_default(f)}: {f.metadata['help']}" for f in fields] or [
            f"  {'':<8} no options"
        ]
    if backbone is None:
        where = "parameters counted when --help comes with --backbone NAME"
    else:
        where = f"on {backbone}" if backbone_config is not None else f"(counts need {backbone}'s config)"
    lines += [
        "",
        f"variants (--method NAME) and budget presets (--budget, default {DEFAULT_BUDGET}): the paper's widths for "
        f"BERT-base; trainable {where} (bi-encoder):",
    ]
    refused = []
    for name, (method, variant) in VARIANTS.items():
        presets = variant.budgets or {"-": {}}
        for budget, preset in presets.items():
            shown = ", ".join(f"{k}={v}" for k, v in {**variant.options, **preset}.items()) or "-"
            count = ""
            if backbone_config is not None:
                try:
                    trainable, total = count_on_config(
                        backbone_config, method.name, make_config(*resolve(name, {}, None if budget == "-" else budget))
                    )
                    count = f"{trainable:>11,} ({100 * trainable / total:.3f} %)"
                except PetirError:  # training refuses it the same way (DeBERTa takes no prefix, ModernBERT no map)
                    refused.append(name)
                    continue
            lines.append(f"  {name:<18} {budget:>4}  {shown:<38} {count}".rstrip())
    if refused:
        lines.append(f"  not on {backbone} (--method NAME says why): {', '.join(dict.fromkeys(refused))}")
    return "\n".join(lines)


def _backbone_config(backbone: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_backbone(backbone))
    except (OSError, ValueError):
        return None


def _default(field: dataclasses.Field) -> str:
    value = field.default
    return ",".join(value) if isinstance(value, tuple) else str(value)


@dataclasses.dataclass
class ModelOptions:
    """What ``petir.train`` trains: the task, the backbone and the PET method (its variant, budget and options)."""

    task: str = cli.option(DEFAULT_TASK, "; ".join(f"{task.name}: a {task.kind}" for task in TASKS.values()), TASKS)
    backbone: str = cli.option(DEFAULT_BACKBONE, "BERT-family model name or directory")
    method: str = cli.option(
        "iaa-l",
        "PET method or variant (listed below); iaa-l is the paper's best",
        # a renamed one gets a message saying so; computed when the parser is built: the methods registered then
        cli.Computed(lambda: list(dict.fromkeys([*METHODS, *VARIANTS, *RENAMED]))),
        metavar="METHOD",
    )
    budget: str | None = cli.option(
        None,
        "the paper's budget preset (%% of BERT-base) for the method's widths "
        f"(default: {DEFAULT_BUDGET} where the method has it); --pet options override it",
        BUDGETS,
    )
    pet: list[str] = cli.option([], "PET method option", metavar="KEY=VALUE")


@dataclasses.dataclass
class RunOptions:
    """How this process runs: its threads, and whether it continues an interrupted run."""

    threads: int = cli.threads_option("CPU threads")
    resume: bool = cli.option(
        False,
        "continue the run in --output from its checkpoint (its model/ and summary.json are rewritten at the end)",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; its --help lists the methods and their budget presets, and counts their trainable parameters on
    the backbone when ``argv`` names one with ``--backbone``: a user choosing a method for a backbone asks for that
    backbone, and the counts take seconds (transformers, PEFT, every variant built on the meta device) that plain
    ``--help`` and every run's start-up would otherwise pay."""
    argv = list(argv if argv is not None else sys.argv[1:])
    wants_help = "-h" in argv or "--help" in argv
    task = _peek(argv, "--task") or DEFAULT_TASK  # read first: only its options become flags
    parser = cli.ArgumentParser(
        prog="python -m petir.train",
        usage="%(prog)s (--data DATA | --corpus FILE --queries FILE --qrels FILE | --triples FILE) --output DIR "
        "[options]",
        description=__doc__,
        epilog=(_method_help(_peek(argv, "--backbone")) + "\n" if wants_help else "") + EXAMPLES,
    )
    cli.add_dataclass_flags(
        parser.add_argument_group("training data (a BEIR directory, or files)"), TrainingDataOptions
    )
    cli.add_dataclass_flags(parser.add_argument_group("model"), ModelOptions)
    if task in TASKS:  # else --task itself is refused, naming the tasks there are
        _add_task_options(parser, TASKS[task])
    cli.add_dataclass_flags(parser.add_argument_group("training groups"), SamplingOptions)
    cli.add_dataclass_flags(parser.add_argument_group("optimisation"), TrainConfig)
    run = parser.add_argument_group("the run: where it writes, how it runs")
    run.add_argument("--output", required=True, type=Path, help="run directory (model, checkpoint, logs): new or empty")
    cli.add_dataclass_flags(run, RunOptions)
    cli.add_overwrite_flag(
        run,
        f"what an earlier run wrote in --output (the files of {', '.join(RUN_OUTPUTS)} that petir recorded writing "
        "are deleted and the run starts over); other files there are kept",
    )
    return parser


def _peek(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``) before parsing, else None."""
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(flag + "="):
            return item.split("=", 1)[1]
    return None


#: Flags that --triples makes meaningless (the triples bring passages and negatives; and a task's own data flags
#: shape the dev pools of a BM25 search, which triples have none of).
NOT_WITH_TRIPLES = (*("data", "qrels", "dev_qrels"), *("negatives_run", "negative_depth", "dev_depth"))


def task_flags(task: Task) -> list[str]:
    """The flags only ``task`` reads (its options and its own data flags): giving one to another task is an error,
    not silently ignored."""
    return [*_field_names(task.model.options_class), *_field_names(task.data_options)]


def _field_names(options_class: type | None) -> list[str]:
    return [field.name for field in dataclasses.fields(options_class)] if options_class is not None else []


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _renamed(options_class: type | None) -> dict[str, str]:
    """An options class's flag names of earlier versions: old -> current (its ``RENAMED``)."""
    return getattr(options_class, "RENAMED", {}) if options_class is not None else {}


def current_flags(argv: Sequence[str], task: Task) -> list[str]:
    """``argv`` with ``task``'s flags of earlier versions under their current names (``--sparse-query-length`` ->
    ``--query-max-length``), each noted once on stderr: the old names work for one release."""
    renamed = {
        _flag(old): _flag(new)
        for cls in (task.model.options_class, task.data_options)
        for old, new in _renamed(cls).items()
    }
    current = []
    for item in argv:
        flag, sep, value = item.partition("=")
        if flag in renamed:
            print(f"petir.train: {flag} is now {renamed[flag]}; the old name goes in the next release", file=sys.stderr)
            item = renamed[flag] + sep + value
        current.append(item)
    return current


def check_task_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A flag only other tasks have (under its name or an earlier one) is one line naming its task, not
    argparse's "unrecognized arguments": a flag is never silently taken for another task's."""
    known = set(parser._option_string_actions)
    for item in argv:
        flag = item.partition("=")[0]
        if not flag.startswith("--") or flag in known:
            continue
        owners = [other.name for other in TASKS.values() if flag in _own_flags(other)]
        if owners:
            raise PetirError(f"{flag} applies to --task {' or '.join(owners)} only")


def _own_flags(task: Task) -> set[str]:
    """``task``'s own flags, under their current names and earlier ones."""
    classes = (task.model.options_class, task.data_options)
    return {_flag(name) for name in (*task_flags(task), *(old for cls in classes for old in _renamed(cls)))}


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = {name for name, value in vars(args).items() if value != parser.get_default(name)}
    task = get_task(args.task)
    if args.negatives < task.min_negatives:
        raise PetirError(
            f"--negatives {args.negatives} leaves a {task.noun} no passage to rank a positive against; give "
            f"{task.min_negatives} or more"
        )
    if args.triples:
        wrong = sorted(given & {*NOT_WITH_TRIPLES, *_field_names(task.data_options)})
        if wrong:
            raise PetirError(f"--{wrong[0].replace('_', '-')} cannot be combined with --triples")


def _add_task_options(parser: argparse.ArgumentParser, task: Task) -> None:
    """One flag per field of ``task``'s options (and data options) dataclass: its default, choices and help live
    there alone. Only the task's own: the same idea has the same flag name in every task (``--passage-max-length``),
    and another task's flag is refused by :func:`check_task_flags`."""
    others = ", ".join(f"--task {name} --help" for name in TASKS if name != task.name)
    group = parser.add_argument_group(f"{task.name} options (--task {task.name}; other tasks' options: {others})")
    for options_class in (task.model.options_class, task.data_options):
        if options_class is not None:
            cli.add_dataclass_flags(group, options_class)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(argv if argv is not None else sys.argv[1:])
    task_name = _peek(argv, "--task") or DEFAULT_TASK
    if task_name in TASKS:
        argv = current_flags(argv, TASKS[task_name])
    parser = build_parser(argv)
    check_task_flags(parser, argv)
    args = parser.parse_args(argv)
    check_flags(parser, args)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 holds the lock, the trainer's too
    with output_lock(args.output, directory=True) if main_rank else contextlib.nullcontext():
        return _train(args, argv)


def _train(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    """The run of :func:`main`, under the output's lock: taken before the minutes of data loading and the step-0 dev
    check, so a second writer (or a --resume of this live run) is refused at once."""
    check_run_directory(args.output, args.resume, args.overwrite)  # before minutes of data loading
    check_patience(cli.from_args(TrainConfig, args, output_dir=args.output))  # likewise
    resolved = resolve_method(args.method, key_values(args.pet, "--pet"), args.budget)  # a bad --pet fails here
    method, pet_options, variant, budget = resolved.method, resolved.options, resolved.variant, resolved.budget
    threads = cli.use_threads(args.threads)
    keep_freed_memory()  # about a third faster CPU steps (petir.allocator)
    task = get_task(args.task)
    task_data = cli.from_args(task.data_options, args) if task.data_options is not None else None
    with main_process_first(args.device):  # under torchrun, rank 0 builds the shared BM25 cache first
        data = load_training_data(
            cli.from_args(TrainingDataOptions, args), args.negative_depth, task, task_data, threads
        )
    task_options = cli.dataclass_values(task.model.options_class, args)

    def build_model() -> Any:
        """The model at its seeded start: every rung of a learning-rate ladder, and the run, start from it."""
        set_seed(args.seed)
        return task.model(args.backbone, method, pet_options, budget, **task_options)

    model = build_model()
    report = model.parameter_report()
    print(
        f"petir: {args.task} | {variant.name} ({method} {json.dumps(model.pet_config.to_dict())}) | "
        f"trainable {report['trainable']:,} of {report['backbone']:,} ({report['percent']:.3f}%) | "
        f"{len(data.train) - len(data.held_out):,} training "
        f"{'triples' if isinstance(data.train, Triples) else 'queries'} | "
        f"threads {threads}"
    )
    if data.dev_pools:
        print(
            f"petir: dev set: {describe_dev(data)}; checks every {args.eval_every or args.steps} steps, "
            f"within {args.eval_budget:.0%} of training time"
            + ("; the saved model is the best check, step 0 included (--no-keep-best: the last step)" * args.keep_best)
        )
    default_rate = get_method(method).learning_rate
    ladder = args.learning_rate is None and bool(data.dev_pools) and not _fixed_by_checkpoint(args)
    if ladder:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            raise PetirError("under torchrun give --lr: the learning-rate ladder runs in one process (petir.train)")
        print(f"petir: {describe_ladder(default_rate, cli.from_args(TrainConfig, args, output_dir=args.output))}")
    elif args.learning_rate is None and not data.dev_pools:
        print(f"petir: learning rate {default_rate:g}, the method's default (no dev set to pick one on)")
    config = TrainConfig(
        **{
            **cli.dataclass_values(TrainConfig, args),
            "output_dir": args.output,
            "learning_rate": args.learning_rate if args.learning_rate is not None else default_rate,
            "extra": {
                "argv": list(argv) if argv is not None else sys.argv[1:],
                "task": args.task,
                "dataset": cli.from_args(TrainingDataOptions, args).dataset_name,
            },
        }
    )
    sampler = data.sampler(cli.from_args(SamplingOptions, args))
    evaluate = dev_evaluator(data) if data.dev_pools else None
    resume, overwrite = args.resume, args.overwrite
    if ladder:
        if overwrite:
            remove_written(args.output)  # the ladder writes first: start over before it, not after
        del model  # each rung builds its own, and the run one more
        picked = pick_learning_rate(build_model, sampler, config, evaluate, default_rate, resume)
        extra = {**config.extra, "lr_ladder": picked}
        config = dataclasses.replace(config, learning_rate=picked["picked"], extra=extra)
        print(f"petir: learning rate {picked['picked']:g} picked on dev; the run trains at it from the start")
        model, resume, overwrite = build_model(), True, False
    summary = Trainer(model, sampler, config, evaluate).train(resume=resume, overwrite=overwrite)
    print(last_line(summary, args.output))
    return summary


def _fixed_by_checkpoint(args: argparse.Namespace) -> bool:
    """A resumed run whose checkpoint holds no ladder: it was started with --lr, and continues at its rate."""
    return args.resume and not (args.output / LADDER_FILE).exists() and not (args.output / LADDER_DIR).is_dir()


def last_line(summary: dict[str, Any], output: Path) -> str:
    """The CLI's last line: where the model went, its dev value and noise, what training cost; and, where no dev
    check beat the untrained start, that plainly (the start is what was saved)."""
    train_s, dev_s, steps = summary["wall_time_s"], summary["dev_time_s"], max(summary["steps"], 1)
    kept = summary["kept"]
    line = (
        f"petir: model written to {output / 'model'}; dev {summary['final_dev']}"
        + (f" (saved: step {kept['step']}, dev {kept['dev']}{describe_noise(kept)})" if kept else "")
        + f"; training {train_s:.0f} s ({train_s / steps:.2f} s/step), {summary['dev_checks']} dev checks {dev_s:.0f} s"
    )
    if summary["improved"] is False:
        line += (
            f"\npetir: training did not improve on the starting model on dev (step 0, {kept['dev']}, was not beaten "
            "in any later check): the saved model is the untrained start"
        )
    return line


if __name__ == "__main__":
    cli.run(main)
