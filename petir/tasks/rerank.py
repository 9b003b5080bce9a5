"""The re-ranking task: a monoBERT-style cross-encoder, its ONNX twin and its dev check (re-ranking each dev query's
BM25 top-k, as at test time)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from petir import cli
from petir.anatomy import hidden_dropout
from petir.batching import MAX_LENGTH, GraphOutput, PairScorer
from petir.data import Corpus, Document, Pools, Qrels, Queries, Run
from petir.losses import GROUP_LOSSES, false_negatives
from petir.models import PetModel
from petir.onnx_runtime import OnnxModel
from petir.sampling import Group
from petir.tasks.base import Task

NAME = "rerank"


@dataclasses.dataclass
class RerankOptions:
    """The cross-encoder's options, saved in config.json."""

    max_length: int = cli.option(256, "query+passage tokens", bounds=MAX_LENGTH)
    loss: str = cli.option(
        "listwise",
        "listwise: softmax cross-entropy over each query's group; pointwise: binary cross-entropy",
        tuple(GROUP_LOSSES),
    )


#: One score per (query, passage) pair.
SCORES = GraphOutput("scores", ("batch",))


class CrossEncoder(PetModel, PairScorer):
    """A monoBERT-style re-ranker: ``[CLS] query [SEP] passage [SEP]`` -> a relevance score from the [CLS] state.

    The score head is task-specific and always trained (counted with the trainable parameters).
    """

    task = NAME
    options_class = RerankOptions
    graph_output = SCORES

    def _setup(self, options: RerankOptions) -> None:
        self.max_length = min(options.max_length, self.length_limit)
        self.loss = options.loss
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(hidden_dropout(self.encoder.config)), nn.Linear(hidden, 1))

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the ONNX graph computes: :meth:`scores`."""
        return self.scores(features)

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """A padded batch in the model's own tokenisation (ONNX tracing and parity checks): the pairs."""
        return self.tokenize(queries, self.max_length, pairs=passages)

    def scores(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns: float tensor [batch] of relevance scores (logits)."""
        return self.head(self.encoder(**features).last_hidden_state[:, 0]).squeeze(-1)

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        queries = [group.query for group in groups for _ in group.passages]
        passages = [passage for group in groups for passage in group.passages]
        return {
            "pairs": self.tokenize(queries, self.max_length, pairs=passages),
            "false_negatives": false_negatives(groups, in_batch=False).to(self.device),
        }

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Listwise softmax cross-entropy over each query's group (positive first), or pointwise BCE
        (:data:`petir.losses.GROUP_LOSSES`); a negative judged relevant to the query (a false negative) is left out
        of either loss."""
        mask = batch["false_negatives"]
        return GROUP_LOSSES[self.loss](self.scores(batch["pairs"]).view(mask.shape), mask)

    @torch.inference_mode()
    def _score_batch(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return self.scores(self.tokenize(queries, self.max_length, passages)).float().cpu().numpy()

    def rank(self, queries: Queries, pools: Pools, corpus: Corpus, batch_size: int = 32, progress: bool = False) -> Run:
        pairs = [(qid, docid) for qid, pool in pools.items() for docid in pool]
        scores = self.score(
            [queries[qid] for qid, _ in pairs], [corpus[docid].contents for _, docid in pairs], batch_size, progress
        )
        run: Run = {qid: [] for qid in pools}
        for (qid, docid), score in zip(pairs, scores.tolist(), strict=True):
            run[qid].append((docid, score))
        return {qid: sorted(hits, key=lambda hit: -hit[1]) for qid, hits in run.items()}


class OnnxCrossEncoder(OnnxModel, PairScorer):
    """The ONNX twin of :class:`CrossEncoder`: ``score`` returns the same scores (to float32 rounding)."""

    task = NAME
    graph_output = SCORES

    def _setup(self, config: dict[str, Any]) -> None:
        self.max_length = config["max_length"]

    def _score_batch(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return self.run(self.tokenize(queries, self.max_length, passages))


def dev_pools(corpus: Mapping[str, Document], first_stage: Pools, dev_qrels: Qrels, options: None) -> Pools:
    """Each dev query re-ranks its own BM25 top ``--dev-depth``, as at test time."""
    return first_stage


def usage(model: CrossEncoder) -> str:
    """The model card's "Use" section."""
    return """```bash
python -m petir.rerank --run FIRST_STAGE.trec --topics TOPICS --index LUCENE_INDEX --model THIS_DIR \\
    --output reranked.trec
```"""


TASK = Task(
    model=CrossEncoder,
    onnx=OnnxCrossEncoder,
    kind="cross-encoder",
    noun="re-ranker",
    dev_pools=dev_pools,
    usage=usage,
    pipeline_tag="text-ranking",
    min_negatives=1,
    no_export="a re-ranker's score head reads the raw [CLS] state, which no standard classification class does, so "
    "it needs petir (python -m petir.rerank)",
)
