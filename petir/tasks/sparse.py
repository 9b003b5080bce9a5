"""The learned sparse retrieval task: a SPLADE encoder (Formal et al., SPLADE v2, 2021), its ONNX twin, its dev check
(a search of a sampled dev corpus with the integer impacts Pyserini indexes) and the stock Pyserini impact commands.

The backbone's masked-LM head gives each token a logit per vocabulary term; a text's weight for a term is
``max over its tokens of log(1 + ReLU(logit))`` (padding left out), and a query scores a passage by the dot product
of their weights. Training is the retriever's (same data, negatives, false-negative masking:
:func:`petir.losses.contrastive_loss`, dot products at temperature 1) plus the FLOPS regulariser, which pushes the
mean weight of each term towards zero so that texts keep few terms (a short posting list per term: a fast index).

Pyserini indexes integer impacts: every weight is quantised as Pyserini's own SPLADE encoders do
(``round(weight / 5 * 256)``, :func:`quantise`), and the dev check scores with those integers, so it measures
the ranking the Lucene impact index gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from petir import cli
from petir.backbone import _from_pretrained, resolve_backbone
from petir.batching import MAX_LENGTH, GraphOutput, TextEncoder, in_batches
from petir.data import Corpus, Document, Pools, Qrels, Queries, Run
from petir.errors import PetirError
from petir.losses import contrastive_batch, contrastive_loss
from petir.models import PetModel
from petir.onnx_runtime import OnnxModel
from petir.sampling import Group
from petir.tasks.base import Task
from petir.tasks.retrieval import dev_corpus

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

NAME = "sparse"

#: Pyserini's impact quantisation (``pyserini/encode/_splade.py``: ``round(weight / 5 * 256)``): weights up to
#: IMPACT_RANGE map onto 0..IMPACT_LEVELS. The stock ``--encoder-class splade`` encode writes these integers, so the
#: dev check uses them too (:func:`quantise`, in Pyserini's order of operations: the same integers at every .5).
IMPACT_RANGE = 5
IMPACT_LEVELS = 256

#: Passage tokens of every test encode (``pyserini.encode --max-length``, Pyserini's default): dev checks encode at it.
TEST_PASSAGE_LENGTH = 256


@dataclasses.dataclass
class SparseOptions:
    """The SPLADE encoder's options, saved in config.json; the lengths are named as the retriever's are."""

    #: Names of earlier petir versions (flags and saved config.json keys): old -> current.
    RENAMED: ClassVar[dict[str, str]] = {
        "sparse_query_length": "query_max_length",
        "sparse_passage_length": "passage_max_length",
        "sparse_train_length": "train_passage_length",
    }

    query_max_length: int = cli.option(64, "query tokens", bounds=MAX_LENGTH)
    passage_max_length: int = cli.option(
        TEST_PASSAGE_LENGTH,
        "passage tokens as the model is used: dev checks encode at it, as pyserini.encode --max-length does",
        bounds=MAX_LENGTH,
    )
    train_passage_length: int | None = cli.option(
        None, "passage tokens in training batches (default: --passage-max-length)", bounds=MAX_LENGTH
    )
    # SPLADE v2's values (Formal et al. 2021, SPLADE-max): queries are regularised harder than passages, since
    # every query term costs a posting-list walk at search time.
    query_flops: float = cli.option(
        3e-4, "weight of the FLOPS regulariser on query term weights", bounds=cli.Bounded(float, minimum=0)
    )
    passage_flops: float = cli.option(
        1e-4, "weight of the FLOPS regulariser on passage term weights", bounds=cli.Bounded(float, minimum=0)
    )
    flops_warmup: int = cli.option(
        50,
        "training batches over which the FLOPS weights grow quadratically from 0 (SPLADE's warm-up: the "
        "ranking is learnt before the weights are thinned)",
        bounds=cli.Bounded(int, minimum=0),
    )
    mlm_head: str = cli.option(
        "frozen",
        "the masked-LM head (vocabulary projection) frozen, or its transform and bias trained with the PET "
        "modules (its output matrix stays tied to the input embeddings)",
        ("frozen", "trained"),
    )


@dataclasses.dataclass
class SparseDataOptions:
    """The flags only a sparse retriever's training data reads (``petir.train``), named as the retriever's are."""

    #: Flag names of earlier petir versions: old -> current.
    RENAMED: ClassVar[dict[str, str]] = {"sparse_dev_corpus": "dev_corpus"}

    dev_corpus: int = cli.option(
        10_000,
        "dev queries search the whole corpus up to this many passages; above, their judged passages and "
        "BM25 candidates plus a seeded sample",
        bounds=cli.Bounded(int, minimum=1),
    )


#: One weight per vocabulary term per text (the ``hidden`` axis is the vocabulary here).
TERM_WEIGHTS = GraphOutput("term_weights", ("batch", "hidden"))

#: Where the trained model keeps how many training batches it has seen (the FLOPS warm-up's clock): saved with the
#: trained tensors, so a resumed run warms up exactly as an uninterrupted one.
STEP_TENSOR = "flops_batches"


def splade_pooling(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Term weights [batch, vocabulary] from masked-LM logits [batch, tokens, vocabulary]: ``max_t log(1 +
    ReLU(logit))`` over non-padding tokens, as Pyserini's SPLADE encoders compute it.

    ``log(1 + ReLU(x))`` rises with ``x``, so it is taken of each term's largest logit rather than of every logit:
    the same weights (and the same gradient, which reaches each term's arg-max token only) without the element-wise
    pass over [tokens, vocabulary], which on a CPU costs twice the head's matrix product (1.4 s against 0.7 s for 8
    passages of 256 tokens on one core)."""
    padding = ~attention_mask.bool().unsqueeze(-1)
    return torch.log(1 + torch.relu(logits.masked_fill(padding, float("-inf")).max(dim=1).values))


def flops(weights: torch.Tensor) -> torch.Tensor:
    """The FLOPS regulariser of a batch of term weights [batch, vocabulary]: the sum over terms of the squared mean
    weight (a smooth proxy of the expected number of multiplications of a query-passage dot product)."""
    return (weights.mean(0) ** 2).sum()


def quantise(weights: np.ndarray) -> np.ndarray:
    """Integer impacts as Pyserini's SPLADE encoders write them (float64 arithmetic, rounding half to even)."""
    return np.round(weights.astype(np.float64) / IMPACT_RANGE * IMPACT_LEVELS).astype(np.int64)


def masked_lm_head(backbone: str, encoder: nn.Module) -> nn.Module:
    """The masked-LM head of ``backbone`` (what maps the encoder's token states to vocabulary logits): the modules of
    ``AutoModelForMaskedLM`` around its base model, applied in order, with the output matrix tied to ``encoder``'s
    input embeddings where the backbone ties them. A checkpoint without a trained head is one line."""
    from transformers import AutoModelForMaskedLM

    location = resolve_backbone(backbone)
    model, info = _from_pretrained(
        AutoModelForMaskedLM, location, f"the masked-LM head of {backbone!r}", output_loading_info=True
    )
    base = model.base_model
    missing = [key for key in info["missing_keys"] if not key.startswith(f"{model.base_model_prefix}.")]
    if missing:
        raise PetirError(
            f"backbone {backbone!r} has no trained masked-LM head ({missing[0]} is missing): the sparse task needs a "
            "BertForMaskedLM-shaped checkpoint, such as splade-tiny (python -m petir.backbone fetch splade-tiny)"
        )
    parts = [child for child in model.children() if child is not base and not isinstance(child, nn.modules.loss._Loss)]
    if model.config.tie_word_embeddings:
        model.get_output_embeddings().weight = encoder.get_input_embeddings().weight
    return nn.Sequential(*parts)


class ImpactPairs:
    """``petir.rerank``'s score for a sparse model and its ONNX twin: the integer dot product Lucene's impact search
    computes, each text kept as its sparse row (vocabulary-wide dense vectors, 120 kB a passage on BERT's
    vocabulary, would fill the memory on a deep re-rank)."""

    def pair_vectors(self, texts: Sequence[str], kind: str, batch_size: int) -> list[csr_matrix]:
        return impact_rows(self, texts, kind, batch_size)

    @staticmethod
    def pair_product(query: csr_matrix, passage: csr_matrix) -> float:
        return float(query.multiply(passage).sum())


class SparseEncoder(ImpactPairs, PetModel, TextEncoder):
    """A shared query/passage SPLADE encoder: PET modules in the backbone, its masked-LM head on top.

    ``encode`` gives float term weights [texts, vocabulary]; :meth:`impacts` the integer ones Pyserini indexes."""

    task = NAME
    options_class = SparseOptions
    graph_output = TERM_WEIGHTS

    def _setup(self, options: SparseOptions) -> None:
        self.query_max_length = min(options.query_max_length, self.length_limit)
        self.passage_max_length = min(options.passage_max_length, self.length_limit)
        self.train_passage_length = min(options.train_passage_length or options.passage_max_length, self.length_limit)
        self.query_flops, self.passage_flops = options.query_flops, options.passage_flops
        self.flops_warmup, self.mlm_head = options.flops_warmup, options.mlm_head
        self.head = masked_lm_head(self.backbone, self.encoder)
        tied = {id(parameter) for parameter in self.encoder.parameters()}
        for parameter in self.head.parameters():
            if id(parameter) not in tied:  # a tied output matrix is the encoder's, trained or frozen with it
                parameter.requires_grad_(options.mlm_head == "trained")
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.float32), persistent=False)

    @property
    def dimension(self) -> int:
        return self.encoder.get_input_embeddings().weight.shape[0]

    # -- the model ------------------------------------------------------------------------------------------------
    def logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked-LM logits [batch, tokens, vocabulary] (what the plug-in's ``AutoModelForMaskedLM`` view returns)."""
        return self.head(self.encoder(**features).last_hidden_state)

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Term weights [batch, vocabulary] (:func:`splade_pooling`): what the ONNX graph computes."""
        return splade_pooling(self.logits(features), features["attention_mask"])

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenize(passages, self.passage_max_length)

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        return contrastive_batch(self.tokenize, groups, self.query_max_length, self.train_passage_length)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Contrastive loss on dot products (in-batch and hard negatives, false negatives masked) plus the FLOPS
        regulariser of the query and passage weights, its weights growing quadratically over ``flops_warmup``
        training batches."""
        queries, passages = self.inference(batch["queries"]), self.inference(batch["passages"])
        loss = contrastive_loss(queries, passages, batch["groups"], 1.0)
        warm = min(1.0, float(self.batches_seen) / self.flops_warmup) ** 2 if self.flops_warmup else 1.0
        if self.training and torch.is_grad_enabled():
            self.batches_seen += 1
        return loss + warm * (self.query_flops * flops(queries) + self.passage_flops * flops(passages))

    # -- the warm-up clock travels with the trained tensors -------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().trainable_state_dict(), STEP_TENSOR: self.batches_seen.detach().clone()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "the saved state") -> None:
        state = dict(state)
        seen = state.pop(STEP_TENSOR, None)
        super().load_trainable_state_dict(state, source)
        if seen is not None:
            self.batches_seen.copy_(seen.reshape(()))

    # -- encoding and ranking ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        return self.inference(self.tokenize(texts, max_length)).float().cpu().numpy()

    def rank(self, queries: Queries, pools: Pools, corpus: Corpus, batch_size: int = 8, progress: bool = False) -> Run:
        """Each pool by the integer dot products Lucene's impact search computes (:func:`impact_matrix`)."""
        docids = sorted({docid for pool in pools.values() for docid in pool})
        row = {docid: i for i, docid in enumerate(docids)}
        passages = impact_matrix(self, [corpus[docid].contents for docid in docids], "passage", batch_size, progress)
        qids = list(pools)
        scores = impact_matrix(self, [queries[qid] for qid in qids], "query", batch_size) @ passages.T
        run = {}
        for position, qid in enumerate(qids):
            values = scores[position, [row[docid] for docid in pools[qid]]].toarray().ravel().astype(float)
            run[qid] = sorted(zip(pools[qid], values.tolist(), strict=True), key=lambda hit: -hit[1])
        return run

    def term_weights(
        self, texts: Sequence[str], kind: str = "query", max_length: int | None = None, batch_size: int = 8
    ) -> list[dict[str, int]]:
        """Each text's nonzero integer impacts by vocabulary token: what Pyserini's impact search and
        JsonVectorCollection take (``max_length`` overrides the query or passage length)."""
        rows = impact_rows(self, texts, kind, batch_size, max_length=max_length)
        return [impacts_by_token(self.tokenizer, row) for row in rows]


class OnnxSparseEncoder(ImpactPairs, OnnxModel, TextEncoder):
    """The ONNX twin of :class:`SparseEncoder`: ``encode`` returns the same term weights (to float32 rounding)."""

    task = NAME
    graph_output = TERM_WEIGHTS

    def _setup(self, config: dict[str, Any]) -> None:
        self.query_max_length = config["query_max_length"]
        self.passage_max_length = config["passage_max_length"]
        self.dimension = self.session.get_outputs()[0].shape[1]

    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        return self.run(self.tokenize(texts, max_length))


def impact_rows(
    model: TextEncoder,
    texts: Sequence[str],
    kind: str,
    batch_size: int = 8,
    progress: bool = False,
    max_length: int | None = None,
) -> list[csr_matrix]:
    """Each text's integer impacts as a sparse row [1, vocabulary] (a corpus of dense vocabulary-wide rows would not
    fit in memory); ``kind`` picks the query or passage length unless ``max_length`` overrides it."""
    from scipy.sparse import csr_matrix

    max_length = max_length or (model.query_max_length if kind == "query" else model.passage_max_length)
    return in_batches(
        lambda rows: [
            csr_matrix(quantise(weights)[None]) for weights in model._embed_batch([texts[i] for i in rows], max_length)
        ],
        [len(text) for text in texts],
        batch_size,
        f"encoding {kind}s",
        progress,
        (None,),
    )


def impact_matrix(
    model: TextEncoder, texts: Sequence[str], kind: str, batch_size: int = 8, progress: bool = False
) -> csr_matrix:
    """Integer impacts of ``texts`` as a sparse matrix [texts, vocabulary]."""
    from scipy.sparse import csr_matrix, vstack

    if not texts:
        return csr_matrix((0, model.dimension), dtype=np.int64)
    return vstack(impact_rows(model, texts, kind, batch_size, progress)).tocsr()


def impacts_by_token(tokenizer: Any, row: csr_matrix) -> dict[str, int]:
    """A sparse row of impacts as ``{token: impact}``, zeros left out."""
    tokens = tokenizer.convert_ids_to_tokens(row.indices.tolist())
    return {token: int(value) for token, value in zip(tokens, row.data.tolist(), strict=True) if value}


# -- the dev check: a search of the corpus, scaled down (as the retriever's) -----------------------------------------
def dev_pools(
    corpus: Mapping[str, Document], first_stage: Pools, dev_qrels: Qrels, options: SparseDataOptions
) -> Pools:
    """Every dev query searches the same dev corpus (:func:`petir.tasks.retrieval.dev_corpus`)."""
    return dict.fromkeys(first_stage, dev_corpus(corpus, first_stage, dev_qrels, options.dev_corpus))


def pyserini_commands(model: SparseEncoder) -> str:
    """The stock Pyserini commands of ``model`` (markdown): encode into a JsonVectorCollection with Pyserini's own
    SPLADE encoder class (which loads the petir model through the plug-in's ``AutoModelForMaskedLM`` view), index
    the integer impacts, search with the plug-in's query encoder. ``--max-length`` is the length the dev check
    encoded at; a small ``--batch-size`` bounds the vocabulary-wide logits in memory."""
    return f"""```bash
python -m pyserini.encode input --corpus COLLECTION output --embeddings VECTORS \\
    encoder --encoder THIS_DIR --encoder-class splade --max-length {model.passage_max_length} --batch-size 8 \\
    --device cpu
python -m pyserini.index.lucene --collection JsonVectorCollection --input VECTORS --index INDEX \\
    --generator DefaultLuceneDocumentGenerator --impact --pretokenized --threads 4
python -m pyserini.search.lucene --index INDEX --topics TOPICS --encoder THIS_DIR --impact --output run.trec \\
    --hits 1000
```

Queries are encoded at {model.query_max_length} tokens, passages at {model.passage_max_length}; weights are quantised as
Pyserini's SPLADE encoders do (`round(weight / 5 * 256)`)."""


TASK = Task(
    model=SparseEncoder,
    onnx=OnnxSparseEncoder,
    kind="SPLADE sparse encoder",
    noun="sparse retriever",
    dev_pools=dev_pools,
    data_options=SparseDataOptions,
    usage=pyserini_commands,
    pipeline_tag="feature-extraction",
    no_export="a sparse retriever is searched through the petir plug-in (docs/sparse.md)",
    impact=True,
)
