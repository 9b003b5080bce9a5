"""The training data of ``petir.train``: judged queries with mined hard negatives, or triples read in place, and a
dev set with the candidates each dev query ranks (its task's dev check, :attr:`petir.tasks.Task.dev_pools`).

Its flags are :class:`TrainingDataOptions`' fields (one default, help text and range each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from petir import cli
from petir.data import (
    Document,
    Pools,
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
from petir.dev_check import DevCheck
from petir.errors import DataError, PetirError
from petir.ondisk import open_corpus, open_queries
from petir.sampling import GroupSampler, SamplingOptions, TrainingQuery, Triples, TripleSampler, training_queries

if TYPE_CHECKING:
    from petir.models import PetModel
    from petir.tasks import Task


@dataclasses.dataclass
class TrainingDataOptions:
    """Where the training data comes from (a BEIR directory, or files) and how its dev set is made."""

    data: str | None = cli.option(
        None,
        "BEIR dataset: a directory (corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv) "
        "or a name (scifact) looked up in $PETIR_DATA, ../shared/data, the cache, else downloaded",
    )
    split: str = cli.option("train", "qrels split of --data to train on")
    corpus: str | None = cli.option(None, "corpus file (BEIR/Pyserini jsonl or MS MARCO collection tsv)")
    queries: str | None = cli.option(None, "queries file (BEIR jsonl or 'qid<TAB>text' tsv)")
    qrels: str | None = cli.option(None, "training qrels (BEIR tsv or TREC)")
    triples: str | None = cli.option(
        None,
        "MS MARCO triples, read in place (no BM25 mining): text 'query<TAB>positive<TAB>negative', or with "
        "--corpus and --queries ids 'qid<TAB>pid<TAB>pid'",
    )
    negatives_run: str | None = cli.option(
        None,
        "TREC run of the training queries to draw hard negatives from "
        "(e.g. Pyserini BM25 on a prebuilt index) instead of petir's own BM25 search",
    )
    dev_qrels: str | None = cli.option(None, "dev qrels (queries from the same queries file)")
    dev_queries: int | None = cli.option(
        None,
        "without --dev-qrels: training queries held out (default: 15 %% of the judged ones, at least 50 and at most "
        "200, never more than half; 0: no dev set, and the method's default learning rate)",
        bounds=cli.Bounded(int, minimum=0),
    )
    dev_depth: int = cli.option(
        100,
        "rerank: dev queries re-rank their BM25 top-k, as at test time; retrieval: BM25 candidates kept in a "
        "sampled dev corpus",
        bounds=cli.Bounded(int, minimum=1),
    )

    @property
    def dataset_name(self) -> str | None:
        """The training data's name for a model card: a BEIR name or directory's name (``scifact`` for
        ``../shared/data/scifact``), never a path of this machine; None for files, which carry no name."""
        return Path(self.data).name if self.data else None


@dataclasses.dataclass
class TrainingData:
    corpus: Mapping[str, Document]  # on disk (petir.ondisk) for corpus files, in memory for a triples' dev pool
    queries: Mapping[str, str]
    train: list[TrainingQuery] | Triples  # judged queries, or triples read in place
    dev_qrels: Qrels
    dev_pools: Pools  # candidate passages ranked for the dev metric
    held_out: list[int] = dataclasses.field(default_factory=list)  # triples lines kept for the dev set

    def sampler(self, options: SamplingOptions) -> GroupSampler | TripleSampler:
        if isinstance(self.train, Triples):
            if options.negatives != TripleSampler.negatives:
                raise PetirError("each training triple carries one negative: --negatives must be 1 with --triples")
            return TripleSampler(self.train, options.batch_size, options.seed, self.held_out)
        return GroupSampler(self.train, self.corpus, options.batch_size, options.negatives, options.seed)


def load_training_data(
    options: TrainingDataOptions, negative_depth: int, task: Task, task_data: Any, threads: int
) -> TrainingData:
    """Read the inputs, mine hard negatives (BM25 on ``threads`` threads, or a given run; from the top
    ``negative_depth``) and set a dev split aside with the pools ``task`` ranks (``task_data``: its own data
    options)."""
    if options.triples:
        return _from_triples(options)
    corpus_path, queries, train_qrels = _read_inputs(options)
    corpus = open_corpus(corpus_path)
    check_qrels(train_qrels, corpus, queries, options.qrels or f"{options.data} qrels/{options.split}.tsv")
    if options.dev_qrels:
        dev_qrels = read_qrels(options.dev_qrels)
        check_qrels(dev_qrels, corpus, queries, options.dev_qrels)
        if not any(relevant(dev_qrels, qid) for qid in dev_qrels):
            raise DataError(
                f"--dev-qrels {options.dev_qrels}: no relevant judgment (every relevance is 0 or below), so no dev "
                "query; pass qrels judging at least one passage relevant (rel >= 1), or drop --dev-qrels"
            )
    elif (size := dev_size(options.dev_queries, len(train_qrels))) > 0:
        _check_dev_size(size, len(train_qrels))
        train_qrels, dev_qrels = split_dev(train_qrels, size, seed=0)
    else:
        dev_qrels = {}
    from petir.bm25 import mine_hard_negatives
    from petir.workspace import Workspace

    judged = {qid: queries[qid] for qid in train_qrels if relevant(train_qrels, qid)}
    dev_queries = {qid: queries[qid] for qid in dev_qrels if relevant(dev_qrels, qid)}
    if options.negatives_run:
        candidates = read_run(options.negatives_run)
        missing = [qid for qid in dev_queries if qid not in candidates]
        if missing:
            raise PetirError(f"--negatives-run has no results for dev query {missing[0]!r}; include the dev queries")
        train_run, dev_run = candidates, candidates
    else:
        workspace = Workspace(corpus_path, corpus, threads)
        train_run = workspace.bm25(judged, hits=negative_depth)
        dev_run = workspace.bm25(dev_queries, hits=options.dev_depth) if dev_queries else {}
    negatives = mine_hard_negatives(train_run, train_qrels, negative_depth)
    first_stage = {qid: [docid for docid, _ in dev_run.get(qid, [])[: options.dev_depth]] for qid in dev_queries}
    pools = task.dev_pools(corpus, first_stage, dev_qrels, task_data)
    return TrainingData(corpus, queries, training_queries(queries, train_qrels, negatives), dev_qrels, pools)


#: The default dev set: a share of the training queries, within bounds. On SciFact (809 training queries: 121 held
#: out) a dev nDCG@10 has a standard error near 0.03, but the paired standard error of a gain over step 0 (the same
#: queries, before and after) is near 0.01, below the gains the study measured (0.02-0.05); fewer than 50 queries
#: make it larger than those, and more than 200 take training data for little more precision (SE ~ 1/sqrt(n)).
DEV_SHARE, DEV_FLOOR, DEV_CEILING = 0.15, 50, 200


def dev_size(asked: int | None, available: int) -> int:
    """Dev queries held out of ``available`` training queries: ``asked`` (``--dev-queries``), else
    :data:`DEV_SHARE` of them within :data:`DEV_FLOOR` and :data:`DEV_CEILING`, and at most half."""
    if asked is not None:
        return asked
    return min(max(DEV_FLOOR, round(DEV_SHARE * available)), DEV_CEILING, available // 2)


def _check_dev_size(dev_queries: int, available: int) -> None:
    if dev_queries >= available:
        raise PetirError(
            f"--dev-queries {dev_queries} leaves no training query (there are {available}); lower it"
            " (0: no dev set), or pass --dev-qrels"
        )


def _read_inputs(options: TrainingDataOptions) -> tuple[Path, Queries, Qrels]:
    if options.data:
        directory = resolve_beir(options.data)
        dataset = load_beir(directory, options.split)
        return corpus_path(directory), read_queries(directory / "queries.jsonl"), dataset.qrels
    missing = [flag for flag in ("corpus", "queries", "qrels") if not getattr(options, flag)]
    if missing:
        raise PetirError(f"give --data DIR, or --corpus, --queries and --qrels (missing: --{', --'.join(missing)})")
    return Path(options.corpus), read_queries(options.queries), read_qrels(options.qrels)


def _from_triples(options: TrainingDataOptions) -> TrainingData:
    """Triples bring their own negatives and are read in place (text triples, or id triples with --corpus and
    --queries). The dev set is ``--dev-queries`` seeded lines held out of training: each dev query ranks the
    passages of all dev lines, and its own positive is the one relevant."""
    if bool(options.corpus) != bool(options.queries):
        raise PetirError("id triples need both --corpus and --queries (text triples need neither)")
    corpus = open_corpus(options.corpus) if options.corpus else None
    triples = Triples(options.triples, corpus, open_queries(options.queries) if options.queries else None)
    held_out: list[int] = []
    if (size := dev_size(options.dev_queries, len(triples))) > 0:
        _check_dev_size(size, len(triples))
        held_out = sorted(np.random.default_rng(0).choice(len(triples), size, replace=False).tolist())
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
    """Dev metric: nDCG@10 and MRR@10 of the model's ranking of each dev query's pool, with nDCG@10 per query (its
    standard error; a progress bar: a check can take minutes)."""
    from petir.evaluate import evaluate_queries

    queries = {qid: data.queries[qid] for qid in data.dev_pools}

    def evaluate(model: PetModel) -> DevCheck:
        per_query = evaluate_queries(data.dev_qrels, model.rank(queries, data.dev_pools, data.corpus, progress=True))
        metrics = {name: round(float(np.mean([v[name] for v in per_query.values()])), 4) for name in DEV_METRICS}
        return DevCheck(metrics, [round(values[DEV_METRICS[0]], 6) for values in per_query.values()])

    return evaluate


#: The dev check's metrics; the first picks the kept state and the learning rate.
DEV_METRICS = ("ndcg@10", "mrr@10")


def describe_dev(data: TrainingData) -> str:
    """What a dev check ranks: the cost of one check grows with the pool (passages) and the pairs (re-ranking)."""
    passages = len({docid for pool in data.dev_pools.values() for docid in pool})
    pairs = sum(len(pool) for pool in data.dev_pools.values())
    return f"{len(data.dev_pools)} dev queries over {passages:,} passages ({pairs:,} query-passage scores a check)"
