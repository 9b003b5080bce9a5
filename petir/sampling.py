"""Training groups for both stages: each query with one positive and ``n`` negatives, positive first.

Batches are a pure function of ``(seed, micro-batch index)``: resuming from a checkpoint only needs the step
number, and each distributed rank draws its own micro-batches without communication. Judged queries
(:class:`GroupSampler`) are held in memory; training triples (:class:`TripleSampler`) are read from disk line by
line in a seeded order computed per position, so memory does not grow with the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from petir import cli
from petir.data import Corpus, Document, PathLike, Qrels, Queries, relevant, triple_record
from petir.errors import DataError
from petir.ondisk import LineFile, ids_by_position


@dataclass
class SamplingOptions:
    """How training groups are drawn (``petir.train``'s flags)."""

    batch_size: int = cli.option(16, "queries per micro-batch (per process)", bounds=cli.Bounded(int, minimum=1))
    negatives: int = cli.option(
        1,
        "hard negatives per query (BM25, not relevant); retrieval: 0 trains on in-batch negatives alone",
        bounds=cli.Bounded(int, minimum=0),
    )
    negative_depth: int = cli.option(30, "run depth hard negatives are drawn from", bounds=cli.Bounded(int, minimum=1))
    seed: int = cli.option(42, "seed for initialisation, sampling and dropout", bounds=cli.SEED)


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
        self.corpus_ids = ids_by_position(corpus)
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


class Triples:
    """MS MARCO training triples read in place: "query<TAB>positive<TAB>negative" texts, or with ``corpus`` and
    ``queries`` "qid<TAB>pid<TAB>pid" ids looked up there. Each line is one training group (its positive and its
    one negative); a text passage is its own id, so copies of a query's positive elsewhere in the batch are still
    masked as false negatives."""

    def __init__(self, path: PathLike, corpus: Mapping[str, Document] | None = None, queries: Queries | None = None):
        self.lines = LineFile(path, "triples", check=triple_record)
        self.corpus = corpus
        self.queries = queries

    def __len__(self) -> int:
        return len(self.lines)

    def group(self, position: int) -> Group:
        query, positive, negative = triple_record(self.lines[position], f"{self.lines.source}:#{position}")
        if self.corpus is None:
            return Group(query, [positive, negative], (positive, negative), frozenset([positive]))
        try:
            passages = [self.corpus[positive].contents, self.corpus[negative].contents]
            return Group(self.queries[query], passages, (positive, negative), frozenset([positive]))
        except KeyError as e:
            raise DataError(
                f"{self.lines.where(position)}: id {e.args[0]!r} is not in the corpus or queries file"
            ) from None


class TripleSampler:
    """Micro-batches of triples: micro-batch ``i`` takes ``batch_size`` lines at consecutive positions of the
    epoch's seeded permutation of the training lines (every line but the ``held_out`` dev lines)."""

    negatives = 1  # each triple carries one negative

    def __init__(self, triples: Triples, batch_size: int, seed: int, held_out: Sequence[int] = ()):
        self.triples = triples
        self.held_out = np.sort(np.asarray(held_out, dtype=np.int64))
        self.size = len(triples) - len(self.held_out)
        if batch_size > self.size:
            raise DataError(f"batch size {batch_size} is larger than the {self.size} training triples")
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = self.size // batch_size

    def groups(self, index: int) -> list[Group]:
        epoch, position = divmod(index, self.batches_per_epoch)
        order = Permutation(self.size, (self.seed, epoch))
        first = position * self.batch_size
        return [self.triples.group(self._line(order[k])) for k in range(first, first + self.batch_size)]

    def _line(self, k: int) -> int:
        """The ``k``-th line that is not held out."""
        line = k
        while (shifted := k + int(np.searchsorted(self.held_out, line, side="right"))) != line:
            line = shifted
        return line


class Permutation:
    """A seeded pseudo-random permutation of ``range(size)``, computed per position: a 4-round Feistel network on
    the smallest even number of bits that covers ``size``, walking cycles past it. It shuffles billions of lines
    without an array of them."""

    _MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
    _M64 = (1 << 64) - 1

    def __init__(self, size: int, seed: tuple[int, ...]):
        self.size = size
        bits = max(2, (size - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        self.keys = [int(k) for k in np.random.default_rng(list(seed)).integers(0, 2**63, size=4)]

    def __getitem__(self, position: int) -> int:
        if not 0 <= position < self.size:
            raise IndexError(position)
        value = position
        while True:
            value = self._encrypt(value)
            if value < self.size:
                return value

    def _encrypt(self, value: int) -> int:
        left, right = value >> self.half, value & self.mask
        for key in self.keys:
            left, right = right, left ^ (self._round(right, key) & self.mask)
        return (left << self.half) | right

    def _round(self, value: int, key: int) -> int:
        z = (value + key) * self._MIX[0] & self._M64  # splitmix64's finaliser: every input bit moves every output bit
        z = (z ^ (z >> 30)) * self._MIX[1] & self._M64
        z = (z ^ (z >> 27)) * self._MIX[2] & self._M64
        return z ^ (z >> 31)
