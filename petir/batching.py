"""Tokenising and batching, shared by the torch models and their ONNX twins, so both see exactly the same inputs.

A task's model computes one result per text (or per query-passage pair) through ``encode`` or ``score``; what one
result is, the task declares once in its :class:`GraphOutput` (its axes), which also names the ONNX graph's output
and its dynamic axes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from petir import cli

#: Truncation lengths in tokens: below 8, the special tokens ([CLS], [SEP]; a RoBERTa pair has 4) leave a text little
#: or no room, and tokenizers silently ignore a max_length of 1.
MAX_LENGTH = cli.Bounded(int, minimum=8)

#: Axes whose size varies from call to call: dynamic in the ONNX graph, and per item for a per-token axis.
VARYING_AXES = ("batch", "sequence")


@dataclasses.dataclass(frozen=True)
class GraphOutput:
    """What a task's inference function returns for a batch: its ``name`` (the ONNX graph's output) and its axes,
    each ``"batch"``, ``"sequence"`` (one entry per token: varies by text) or ``"hidden"`` (the backbone's width).

    ``("batch", "hidden")`` is one vector per text, ``("batch",)`` one score per pair; a late-interaction model
    (one vector per token) would be ``("batch", "sequence", "hidden")``."""

    name: str
    axes: tuple[str, ...]

    def dynamic_axes(self) -> dict[int, str]:
        """The axes an exported graph leaves dynamic, as ``torch.onnx.export``'s ``dynamic_axes`` wants them."""
        return {index: axis for index, axis in enumerate(self.axes) if axis in VARYING_AXES}

    def item_shape(self, hidden: int) -> tuple[int | None, ...]:
        """The shape of one text's (or pair's) result; None where it varies by item."""
        return tuple(None if axis in VARYING_AXES else hidden for axis in self.axes[1:])


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    pairs: Sequence[str] | None = None,
    return_tensors: str = "pt",
) -> Any:
    """The one tokenizer call of petir (torch models and their ONNX twins): padded to the batch's longest text,
    truncated to ``max_length`` tokens; for (query, passage) pairs the passage is truncated, and a query longer than
    half the pair's tokens is cut to that half first (:func:`_fit_queries`)."""
    if pairs is not None:
        texts = _fit_queries(tokenizer, texts, max_length)
    return tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        max_length=max_length,
        truncation="only_second" if pairs is not None else True,
        padding=True,
        return_tensors=return_tensors,
    )


def _fit_queries(tokenizer: Any, queries: Sequence[str], max_length: int) -> list[str]:
    """``queries`` with each longer than half of a pair's ``max_length`` (special tokens aside) cut to that half, at
    a token boundary: truncating the passage alone cannot fit a query longer than the pair, and tokenizers fail on
    it. Shorter queries, all of a usual test set's, are kept whole, so scores are those of passage-only
    truncation. Said once per length (a line on stderr), not per pair."""
    budget = (max_length - tokenizer.num_special_tokens_to_add(pair=True)) // 2
    unique = list(dict.fromkeys(queries))
    offsets = tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = {
        query: query[: spans[budget - 1][1]]
        for query, spans in zip(unique, offsets, strict=True)
        if len(spans) > budget
    }
    if cut:
        _say_queries_cut(max_length, budget)
    return [cut.get(query, query) for query in queries]


@functools.cache
def _say_queries_cut(max_length: int, budget: int) -> None:
    cli.say(
        f"queries longer than {budget} tokens are cut to {budget}, so that a passage keeps half of the pair's "
        f"{max_length} tokens"
    )


def in_batches(
    compute: Callable[[list[int]], np.ndarray | list[np.ndarray]],
    lengths: Sequence[int],
    batch_size: int,
    desc: str,
    progress: bool,
    item_shape: tuple[int | None, ...],
) -> np.ndarray | list[np.ndarray]:
    """``compute`` over batches of items of similar length (sorted by ``lengths``, in characters, so a batch pads
    little), the results put back in input order. Padding never changes a result (a test checks it).

    ``item_shape`` is one item's result shape (:meth:`GraphOutput.item_shape`): fixed shapes come back as one
    float32 array [len(lengths), *item_shape]; a shape that varies by item (a per-token axis) as a list of arrays,
    each item's own."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks = [
        compute(order[start : start + batch_size])
        for start in cli.progress(range(0, len(order), batch_size), desc=desc, disable=not progress)
    ]
    if None in item_shape:
        restored: list[Any] = [None] * len(order)
        for position, item in zip(order, (item for chunk in chunks for item in chunk), strict=True):
            restored[position] = item
        return restored
    if not chunks:
        return np.zeros((0, *item_shape), dtype=np.float32)
    results = np.concatenate(chunks)
    ordered = np.empty_like(results)
    ordered[order] = results
    return ordered


#: Passage vectors a text encoder keeps across queries while re-ranking (FIFO beyond this many).
VECTOR_CACHE_SIZE = 200_000

#: A score of aligned (query, passage) pairs: float32 [len(queries)].
Scorer = Callable[[list[str], list[str]], np.ndarray]


class TextEncoder:
    """``encode`` for a model that embeds each text on its own (a bi-encoder) and its ONNX twin: batching, max lengths
    and progress in one place.

    Subclasses set ``graph_output``, ``query_max_length``, ``passage_max_length`` and ``dimension`` and implement
    ``_embed_batch``.
    """

    graph_output: ClassVar[GraphOutput]
    query_max_length: int
    passage_max_length: int
    dimension: int

    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        raise NotImplementedError

    def encode(
        self,
        texts: Sequence[str],
        kind: str = "passage",
        batch_size: int = 32,
        progress: bool = False,
        max_length: int | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Returns: float32 array [len(texts), hidden] (one vector per text; L2-normalised when the similarity is
        cosine), or per text an array [tokens, hidden] where the task's output has a per-token axis. ``kind``
        ("query" or "passage") picks the trained max length in tokens unless ``max_length`` overrides it."""
        max_length = max_length or (self.query_max_length if kind == "query" else self.passage_max_length)
        return in_batches(
            lambda rows: self._embed_batch([texts[i] for i in rows], max_length),
            [len(text) for text in texts],
            batch_size,
            f"encoding {kind}s",
            progress,
            self.graph_output.item_shape(self.dimension),
        )

    def outputs(self, queries: Sequence[str], passages: Sequence[str], batch_size: int = 32) -> Any:
        """What the task's graph computes for these examples, batched as :meth:`encode` batches: the passages'
        vectors (the queries are not used)."""
        return self.encode(passages, "passage", batch_size)

    def pair_vectors(self, texts: Sequence[str], kind: str, batch_size: int) -> Sequence[Any]:
        """What :meth:`pair_scorer` keeps for each text: its vector."""
        return self.encode(texts, kind, batch_size)

    @staticmethod
    def pair_product(query: Any, passage: Any) -> float:
        """The retrieval score of two :meth:`pair_vectors`."""
        return float(passage @ query)

    def pair_scorer(self, batch_size: int) -> Scorer:
        """The retrieval score (vector product) of aligned (query, passage) pairs, as ``petir.rerank`` uses it. Each
        distinct passage is encoded once per run (a first stage repeats passages across queries: SciFact's BM25 top
        100 is 30k pairs over a few thousand passages), up to :data:`VECTOR_CACHE_SIZE` kept."""
        vectors: dict[str, Any] = {}

        def score(queries: list[str], passages: list[str]) -> np.ndarray:
            new = [text for text in dict.fromkeys(passages) if text not in vectors]
            vectors.update(zip(new, self.pair_vectors(new, "passage", batch_size), strict=True))
            distinct = list(dict.fromkeys(queries))
            query_vectors = dict(zip(distinct, self.pair_vectors(distinct, "query", batch_size), strict=True))
            pairs = zip(queries, passages, strict=True)
            scores = np.array([self.pair_product(query_vectors[q], vectors[p]) for q, p in pairs], dtype=np.float32)
            for text in list(vectors)[: max(0, len(vectors) - VECTOR_CACHE_SIZE)]:
                del vectors[text]
            return scores

        return score


class PairScorer:
    """``score`` for a model that reads query and passage together (a cross-encoder) and its ONNX twin. Subclasses
    set ``graph_output`` and implement ``_score_batch``."""

    graph_output: ClassVar[GraphOutput]

    def _score_batch(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def score(
        self, queries: Sequence[str], passages: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Returns: float32 array [len(queries)] of scores (logits) for the aligned (query, passage) pairs."""
        return in_batches(
            lambda rows: self._score_batch([queries[i] for i in rows], [passages[i] for i in rows]),
            [len(query) + len(passage) for query, passage in zip(queries, passages, strict=True)],
            batch_size,
            "re-ranking",
            progress,
            self.graph_output.item_shape(0),
        )

    def outputs(self, queries: Sequence[str], passages: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """What the task's graph computes for these examples, batched as :meth:`score` batches: the pairs' scores."""
        return self.score(queries, passages, batch_size)

    def pair_scorer(self, batch_size: int) -> Scorer:
        """The model's score of aligned (query, passage) pairs, as ``petir.rerank`` uses it."""
        return lambda queries, passages: self.score(queries, passages, batch_size=batch_size)
