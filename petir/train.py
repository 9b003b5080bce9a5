"""Train a PET retriever (bi-encoder) or re-ranker (cross-encoder): ``python -m petir.train --help``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petir import cli
from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
from petir.data import (
    Document,
    Qrels,
    Queries,
    check_qrels,
    corpus_path,
    read_qrels,
    read_queries,
    read_run,
    relevant,
    split_dev,
)
from petir.datasets import load_beir, resolve_beir
from petir.distributed import main_process_first
from petir.errors import PetirError
from petir.models import PetModel
from petir.ondisk import open_corpus, open_queries
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
    resolved_budget,
    variant_of,
)
from petir.sampling import GroupSampler, TrainingQuery, Triples, TripleSampler, training_queries
from petir.tasks import DEFAULT_TASK, TASKS, Task, get_task
from petir.trainer import RUN_OUTPUTS, TrainConfig, Trainer, check_run_directory, set_seed

EXAMPLES = """
examples:
  # the paper's IAA-L retriever on SciFact (BEIR layout) at the paper's 0.5 % budget, 100 training queries as dev
  python -m petir.train --data ../shared/data/scifact --method iaa-l --budget 0.5 \\
      --steps 300 --eval-every 50 --output runs/scifact-iaa-l

  # LoRA re-ranker from MS MARCO-style files, at the paper's 6.7 % budget (r=200)
  python -m petir.train --task rerank --corpus collection.tsv --queries queries.train.tsv \\
      --qrels qrels.train.tsv --method lora --budget 6.7 --output runs/msmarco-lora-reranker

The trained model is written to OUTPUT/model: a directory that Pyserini's encode/search CLIs and
petir.rerank load directly (see docs/pyserini.md and docs/training.md).
"""


def _method_help(backbone: str) -> str:
    """Every method (where it comes from, its options, its learning rate) and every variant's budget presets with
    their trainable share of ``backbone`` (counted on the meta device from its config alone)."""
    backbone_config = _backbone_config(backbone)
    lines = ["PET methods (--method) and their options (--pet KEY=VALUE, repeatable):"]
    for method in METHODS.values():
        fields = dataclasses.fields(method.config_class)
        options = ", ".join(f"{f.name}={_default(f)}" for f in fields) or "no options"
        lines.append(f"  {method.name:<8} {method.summary}")
        lines.append(f"  {'':<8} from {method.reference}; default lr {method.learning_rate:g}")
        lines.append(f"  {'':<8} options: {options}")
    where = f"on {backbone}" if backbone_config is not None else f"(counts need {backbone}'s config)"
    lines += [
        "",
        f"variants (--method NAME) and budget presets (--budget, default {DEFAULT_BUDGET}): the paper's widths for "
        f"BERT-base; trainable {where} (bi-encoder):",
    ]
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
                except PetirError:  # the architecture has no place for it (DeBERTa takes no prefix): --method says why
                    count = "not on this backbone"
            lines.append(f"  {name:<18} {budget:>4}  {shown:<38} {count}")
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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; its --help counts trainable parameters on the ``--backbone`` found in ``argv`` (only when help
    is asked for: the counts build every variant on the meta device, a second of start-up otherwise wasted)."""
    argv = list(argv if argv is not None else sys.argv[1:])
    wants_help = "-h" in argv or "--help" in argv
    backbone = _peek(argv, "--backbone", DEFAULT_BACKBONE)
    parser = cli.ArgumentParser(
        prog="python -m petir.train",
        description=__doc__,
        epilog=(_method_help(backbone) + "\n" if wants_help else "") + EXAMPLES,
    )
    data = parser.add_argument_group("training data (a BEIR directory, or files)")
    data.add_argument(
        "--data",
        help="BEIR dataset: a directory (corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv) "
        "or a name (scifact) looked up in $PETIR_DATA, ../shared/data, the cache, else downloaded",
    )
    data.add_argument("--split", default="train", help="qrels split of --data to train on")
    data.add_argument("--corpus", help="corpus file (BEIR/Pyserini jsonl or MS MARCO collection tsv)")
    data.add_argument("--queries", help="queries file (BEIR jsonl or 'qid<TAB>text' tsv)")
    data.add_argument("--qrels", help="training qrels (BEIR tsv or TREC)")
    data.add_argument(
        "--triples",
        help="MS MARCO triples, read in place (no BM25 mining): text 'query<TAB>positive<TAB>negative', or with "
        "--corpus and --queries ids 'qid<TAB>pid<TAB>pid'",
    )
    data.add_argument(
        "--negatives-run",
        help="TREC run of the training queries to draw hard negatives from "
        "(e.g. Pyserini BM25 on a prebuilt index) instead of petir's own BM25 search",
    )
    data.add_argument("--dev-qrels", help="dev qrels (queries from the same queries file)")
    data.add_argument(
        "--dev-queries",
        type=cli.Bounded(int, minimum=0),
        default=100,
        help="without --dev-qrels: training queries held out",
    )
    data.add_argument(
        "--dev-depth",
        type=cli.Bounded(int, minimum=1),
        default=100,
        help="rerank: dev queries re-rank their BM25 top-k, as at test time; retrieval: BM25 candidates kept in a "
        "sampled dev corpus",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--task",
        choices=TASKS,
        default=DEFAULT_TASK,
        help="; ".join(f"{task.name}: a {task.kind}" for task in TASKS.values()),
    )
    model.add_argument("--backbone", default=DEFAULT_BACKBONE, help="BERT-family model name or directory")
    model.add_argument(
        "--method",
        choices=list(dict.fromkeys([*METHODS, *VARIANTS, *RENAMED])),  # a renamed one gets a message saying so
        default="iaa-l",
        metavar="METHOD",
        help="PET method or variant (listed below); iaa-l is the paper's best",
    )
    model.add_argument(
        "--budget",
        choices=BUDGETS,
        help="the paper's budget preset (%% of BERT-base) for the method's widths "
        f"(default: {DEFAULT_BUDGET} where the method has it); --pet options override it",
    )
    model.add_argument("--pet", action="append", default=[], metavar="KEY=VALUE", help="PET method option")
    _add_task_options(parser)

    sampling = parser.add_argument_group("training groups")
    positive = cli.Bounded(int, minimum=1)
    sampling.add_argument("--batch-size", type=positive, default=16, help="queries per micro-batch (per process)")
    sampling.add_argument(
        "--negatives",
        type=cli.Bounded(int, minimum=0),
        default=1,
        help="hard negatives per query (BM25, not relevant); retrieval: 0 trains on in-batch negatives alone",
    )
    sampling.add_argument("--negative-depth", type=positive, default=30, help="run depth hard negatives are drawn from")
    sampling.add_argument("--seed", type=cli.SEED, default=42, help="seed for initialisation, sampling and dropout")

    train = parser.add_argument_group("optimisation")
    cli.add_dataclass_flags(train, TrainConfig)
    train.add_argument(
        "--threads",
        type=positive,
        default=cli.default_threads(),
        help="CPU threads (default: $OMP_NUM_THREADS, else the cores not busy with other work)",
    )
    train.add_argument(
        "--output", required=True, type=Path, help="run directory (model, checkpoint, logs): new or empty"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output from its checkpoint (its model/ and summary.json are rewritten at the end)",
    )
    cli.add_overwrite_flag(
        train,
        f"what an earlier run wrote in --output ({', '.join(RUN_OUTPUTS)} are deleted and the run starts over); "
        "other files there are kept",
    )
    return parser


def _peek(argv: Sequence[str], flag: str, default: str) -> str:
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``) before parsing, else ``default``."""
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(flag + "="):
            return item.split("=", 1)[1]
    return default


def parse_pet_options(pairs: Sequence[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PetirError(f"--pet expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


@dataclasses.dataclass
class TrainingData:
    corpus: Mapping[str, Document]  # on disk (petir.ondisk) for corpus files, in memory for a triples' dev pool
    queries: Mapping[str, str]
    train: list[TrainingQuery] | Triples  # judged queries, or triples read in place
    dev_qrels: Qrels
    dev_pools: dict[str, list[str]]  # candidate passages ranked for the dev metric
    held_out: list[int] = dataclasses.field(default_factory=list)  # triples lines kept for the dev set

    def sampler(self, batch_size: int, negatives: int, seed: int) -> GroupSampler | TripleSampler:
        if isinstance(self.train, Triples):
            if negatives != TripleSampler.negatives:
                raise PetirError("each training triple carries one negative: --negatives must be 1 with --triples")
            return TripleSampler(self.train, batch_size, seed, self.held_out)
        return GroupSampler(self.train, self.corpus, batch_size, negatives, seed)


def load_training_data(args: argparse.Namespace) -> TrainingData:
    """Read the inputs, mine hard negatives (BM25, or a given run) and set a dev split with its pools aside."""
    if args.triples:
        return _from_triples(args)
    corpus_path, queries, train_qrels = _read_inputs(args)
    corpus = open_corpus(corpus_path)
    check_qrels(train_qrels, corpus, queries, args.qrels or f"{args.data} qrels/{args.split}.tsv")
    if args.dev_qrels:
        dev_qrels = read_qrels(args.dev_qrels)
        check_qrels(dev_qrels, corpus, queries, args.dev_qrels)
    elif args.dev_queries > 0:
        _check_dev_size(args.dev_queries, len(train_qrels))
        train_qrels, dev_qrels = split_dev(train_qrels, args.dev_queries, seed=0)
    else:
        dev_qrels = {}
    from petir.bm25 import mine_hard_negatives
    from petir.workspace import Workspace

    judged = {qid: queries[qid] for qid in train_qrels if relevant(train_qrels, qid)}
    dev_queries = {qid: queries[qid] for qid in dev_qrels if relevant(dev_qrels, qid)}
    if args.negatives_run:
        candidates = read_run(args.negatives_run)
        missing = [qid for qid in dev_queries if qid not in candidates]
        if missing:
            raise PetirError(f"--negatives-run has no results for dev query {missing[0]!r}; include the dev queries")
        train_run, dev_run = candidates, candidates
    else:
        workspace = Workspace(corpus_path, corpus)
        train_run = workspace.bm25(judged, hits=args.negative_depth)
        dev_run = workspace.bm25(dev_queries, hits=args.dev_depth) if dev_queries else {}
    negatives = mine_hard_negatives(train_run, train_qrels, args.negative_depth)
    first_stage = {qid: [docid for docid, _ in dev_run.get(qid, [])[: args.dev_depth]] for qid in dev_queries}
    task = get_task(args.task)
    pools = task.dev_pools(corpus, first_stage, dev_qrels, task_data_options(task, args))
    return TrainingData(corpus, queries, training_queries(queries, train_qrels, negatives), dev_qrels, pools)


def _check_dev_size(dev_queries: int, available: int) -> None:
    if dev_queries >= available:
        raise PetirError(
            f"--dev-queries {dev_queries} leaves no training query (there are {available}); lower it"
            " (0: no dev set), or pass --dev-qrels"
        )


def _read_inputs(args: argparse.Namespace) -> tuple[Path, Queries, Qrels]:
    if args.data:
        directory = resolve_beir(args.data)
        dataset = load_beir(directory, args.split)
        return corpus_path(directory), read_queries(directory / "queries.jsonl"), dataset.qrels
    missing = [flag for flag in ("corpus", "queries", "qrels") if not getattr(args, flag)]
    if missing:
        raise PetirError(f"give --data DIR, or --corpus, --queries and --qrels (missing: --{', --'.join(missing)})")
    return Path(args.corpus), read_queries(args.queries), read_qrels(args.qrels)


def _from_triples(args: argparse.Namespace) -> TrainingData:
    """Triples bring their own negatives and are read in place (text triples, or id triples with --corpus and
    --queries). The dev set is ``--dev-queries`` seeded lines held out of training: each dev query ranks the
    passages of all dev lines, and its own positive is the one relevant."""
    if bool(args.corpus) != bool(args.queries):
        raise PetirError("id triples need both --corpus and --queries (text triples need neither)")
    corpus = open_corpus(args.corpus) if args.corpus else None
    triples = Triples(args.triples, corpus, open_queries(args.queries) if args.queries else None)
    held_out: list[int] = []
    if args.dev_queries > 0:
        _check_dev_size(args.dev_queries, len(triples))
        held_out = sorted(np.random.default_rng(0).choice(len(triples), args.dev_queries, replace=False).tolist())
    dev = {f"dev-{position}": triples.group(position) for position in held_out}
    pool = list(dict.fromkeys(docid for group in dev.values() for docid in group.docids))
    if corpus is None:  # text triples: the dev lines' passages are the dev corpus, each text its own id
        texts = (zip(group.docids, group.passages, strict=True) for group in dev.values())
        corpus = {docid: Document(docid, "", text) for pairs in texts for docid, text in pairs}
    return TrainingData(
        corpus=corpus,
        queries={qid: group.query for qid, group in dev.items()},
        train=triples,
        dev_qrels={qid: {group.docids[0]: 1} for qid, group in dev.items()},
        dev_pools=dict.fromkeys(dev, pool),
        held_out=held_out,
    )


def dev_evaluator(data: TrainingData):
    """Dev metric: nDCG@10 and MRR@10 of the model's ranking of each dev query's pool (with a progress bar: a check
    can take minutes)."""
    from petir.evaluate import evaluate_run

    queries = {qid: data.queries[qid] for qid in data.dev_pools}

    def evaluate(model: PetModel) -> dict[str, float]:
        metrics = evaluate_run(data.dev_qrels, model.rank(queries, data.dev_pools, data.corpus, progress=True))
        return {name: round(metrics[name], 4) for name in ("ndcg@10", "mrr@10")}

    return evaluate


def describe_dev(data: TrainingData) -> str:
    """What a dev check ranks: the cost of one check grows with the pool (passages) and the pairs (re-ranking)."""
    passages = len({docid for pool in data.dev_pools.values() for docid in pool})
    pairs = sum(len(pool) for pool in data.dev_pools.values())
    return f"{len(data.dev_pools)} dev queries over {passages:,} passages ({pairs:,} query-passage scores a check)"


#: Flags that --triples makes meaningless (the triples bring passages and negatives; and a task's own data flags
#: shape the dev pools of a BM25 search, which triples have none of).
NOT_WITH_TRIPLES = (*("data", "qrels", "dev_qrels"), *("negatives_run", "negative_depth", "dev_depth"))


def task_flags(task: Task) -> list[str]:
    """The flags only ``task`` reads (its options and its own data flags): giving one to another task is an error,
    not silently ignored."""
    return [*_field_names(task.model.options_class), *_field_names(task.data_options)]


def _field_names(options_class: type | None) -> list[str]:
    return [field.name for field in dataclasses.fields(options_class)] if options_class is not None else []


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = {name for name, value in vars(args).items() if value != parser.get_default(name)}
    task = get_task(args.task)
    for other in TASKS.values():
        wrong = sorted(given & set(task_flags(other))) if other is not task else []
        if wrong:
            raise PetirError(f"--{wrong[0].replace('_', '-')} applies to --task {other.name} only")
    if args.negatives < task.min_negatives:
        raise PetirError(
            f"--negatives {args.negatives} leaves a {task.noun} no passage to rank a positive against; give "
            f"{task.min_negatives} or more"
        )
    if args.triples:
        wrong = sorted(given & {*NOT_WITH_TRIPLES, *_field_names(task.data_options)})
        if wrong:
            raise PetirError(f"--{wrong[0].replace('_', '-')} cannot be combined with --triples")


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    return cli.dataclass_values(get_task(args.task).model.options_class, args)


def task_data_options(task: Task, args: argparse.Namespace) -> Any:
    """The task's own data flags as its ``data_options`` dataclass (None where it has none)."""
    return task.data_options(**cli.dataclass_values(task.data_options, args)) if task.data_options else None


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """One flag per field of each task's options (and data options) dataclass: its default, choices and help live
    there alone."""
    for task in TASKS.values():
        group = parser.add_argument_group(f"{task.name} options (--task {task.name})")
        for options_class in (task.model.options_class, task.data_options):
            if options_class is not None:
                cli.add_dataclass_flags(group, options_class)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    check_flags(parser, args)
    check_run_directory(args.output, args.resume, args.overwrite)  # before minutes of data loading
    asked = parse_pet_options(args.pet)
    method, pet_options = resolve(args.method, asked, args.budget)
    variant = variant_of(method, make_config(method, pet_options))  # a bad --pet option fails before any data is read
    budget = resolved_budget(args.method, asked, args.budget)  # recorded in config.json, read by the card and study
    cli.use_threads(args.threads)
    with main_process_first(args.device):  # under torchrun, rank 0 builds the shared BM25 cache first
        data = load_training_data(args)
    set_seed(args.seed)
    model = get_task(args.task).model(args.backbone, method, pet_options, budget, **task_options(args))
    report = model.parameter_report()
    print(
        f"petir: {args.task} | {variant.name} ({method} {json.dumps(model.pet_config.to_dict())}) | "
        f"trainable {report['trainable']:,} of {report['backbone']:,} ({report['percent']:.3f}%) | "
        f"{len(data.train) - len(data.held_out):,} training "
        f"{'triples' if isinstance(data.train, Triples) else 'queries'} | "
        f"threads {args.threads}"
    )
    if data.dev_pools:
        print(
            f"petir: dev set: {describe_dev(data)}; checks every {args.eval_every or args.steps} steps, "
            f"within {args.eval_budget:.0%} of training time"
        )
    config = TrainConfig(
        **{
            **cli.dataclass_values(TrainConfig, args),
            "output_dir": args.output,
            "learning_rate": args.learning_rate if args.learning_rate is not None else get_method(method).learning_rate,
            "extra": {"argv": list(argv) if argv is not None else sys.argv[1:], "task": args.task},
        }
    )
    sampler = data.sampler(args.batch_size, args.negatives, args.seed)
    evaluate = dev_evaluator(data) if data.dev_pools else None
    summary = Trainer(model, sampler, config, evaluate).train(resume=args.resume, overwrite=args.overwrite)
    train_s, dev_s, steps = summary["wall_time_s"], summary["dev_time_s"], max(summary["steps"], 1)
    print(
        f"petir: model written to {args.output / 'model'}; dev {summary['final_dev']}"
        + (f" (saved: step {summary['kept']['step']}, dev {summary['kept']['dev']})" if summary["kept"] else "")
        + f"; training {train_s:.0f} s "
        f"({train_s / steps:.2f} s/step), {summary['dev_checks']} dev checks {dev_s:.0f} s"
    )
    return summary


if __name__ == "__main__":
    cli.run(main)
