"""Training groups for both stages: each query with one positive and ``n`` negatives, positive first.

Batches are a pure function of ``(seed, micro-batch index)``: resuming from a checkpoint only needs the step
number, and each distributed rank draws its own micro-batches without communication.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from petir.data import Corpus, Document, Qrels, Queries, relevant
from petir.errors import DataError


@dataclass(frozen=True)
class TrainingQuery:
    qid: str
    text: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]  # hard negatives, best first; random corpus passages fill any shortfall


class Group(NamedTuple):
    """One query's training group. ``docids`` and ``positives`` (every passage the training qrels judge relevant
    to the query) let the loss mask false negatives: a passage of the batch that is relevant to the query but is
    not its positive. Groups without ids (synthetic batches) mask nothing."""

    query: str
    passages: list[str]  # positive first, then negatives
    docids: tuple[str, ...] = ()
    positives: frozenset[str] = frozenset()


def training_queries(
    queries: Queries, qrels: Qrels, hard_negatives: dict[str, list[str]] | None = None
) -> list[TrainingQuery]:
    """Every judged query with at least one relevant passage, in qid order."""
    hard_negatives = hard_negatives or {}
    selected = []
    for qid in sorted(qrels):
        positives = relevant(qrels, qid)
        if positives and qid in queries:
            negatives = [docid for docid in hard_negatives.get(qid, []) if docid not in positives]
            selected.append(TrainingQuery(qid, queries[qid], tuple(sorted(positives)), tuple(negatives)))
    if not selected:
        raise DataError("no training query has a relevant passage in the qrels; check the split and the files")
    return selected


def from_triples(triples: Iterable[tuple[str, str, str]]) -> tuple[list[TrainingQuery], Corpus]:
    """Training queries from MS MARCO-style text triples ``(query, positive, negative)``."""
    passage_ids: dict[str, str] = {}
    grouped: dict[str, tuple[set[str], list[str]]] = {}

    def passage_id(text: str) -> str:
        return passage_ids.setdefault(text, f"p{len(passage_ids)}")

    for query, positive, negative in triples:
        positives, negatives = grouped.setdefault(query, (set(), []))
        positives.add(passage_id(positive))
        negatives.append(passage_id(negative))
    corpus = {pid: Document(pid, "", text) for text, pid in passage_ids.items()}
    selected = [
        TrainingQuery(f"q{index}", query, tuple(sorted(positives)), tuple(dict.fromkeys(negatives)))
        for index, (query, (positives, negatives)) in enumerate(grouped.items())
    ]
    return selected, corpus


class GroupSampler:
    """Deterministic micro-batches of training groups.

    Micro-batch ``i`` (counted over the whole run, across ranks) takes its queries from the epoch's seeded
    permutation and picks each query's positive and negatives with a generator seeded by ``(seed, i)``.
    """

    def __init__(
        self,
        queries: Sequence[TrainingQuery],
        corpus: Corpus,
        batch_size: int,
        negatives: int,
        seed: int,
    ):
        if batch_size > len(queries):
            raise DataError(f"batch size {batch_size} is larger than the {len(queries)} training queries")
        self.queries = list(queries)
        self.corpus = corpus
        self.corpus_ids = list(corpus)
        self.batch_size = batch_size
        self.negatives = negatives
        self.seed = seed
        self.batches_per_epoch = len(self.queries) // batch_size

    def groups(self, index: int) -> list[Group]:
        """The groups of micro-batch ``index``."""
        epoch, position = divmod(index, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.queries))
        rng = np.random.default_rng([self.seed, epoch, position, 1])
        chosen = order[position * self.batch_size : (position + 1) * self.batch_size]
        return [self._group(self.queries[i], rng) for i in chosen]

    def _group(self, query: TrainingQuery, rng: np.random.Generator) -> Group:
        positive = query.positives[rng.integers(len(query.positives))]
        judged = set(query.positives)
        pool = [docid for docid in query.negatives if docid not in judged]  # triples may list a positive as negative
        if len(pool) >= self.negatives:
            picked = [pool[i] for i in rng.choice(len(pool), self.negatives, replace=False)]
        else:
            picked = pool + self._random_negatives(query, self.negatives - len(pool), rng)
        docids = (positive, *picked)
        return Group(query.text, [self.corpus[docid].contents for docid in docids], docids, frozenset(judged))

    def _random_negatives(self, query: TrainingQuery, count: int, rng: np.random.Generator) -> list[str]:
        excluded = set(query.positives) | set(query.negatives)
        if len(self.corpus_ids) - len(excluded) < count:
            raise DataError(f"the corpus has too few passages to draw {self.negatives} negatives for query {query.qid}")
        picked: list[str] = []
        while len(picked) < count:
            docid = self.corpus_ids[rng.integers(len(self.corpus_ids))]
            if docid not in excluded:
                picked.append(docid)
                excluded.add(docid)
        return picked
