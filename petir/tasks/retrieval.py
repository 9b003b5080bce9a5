"""The retrieval task: a bi-encoder (one shared query/passage encoder), its ONNX twin, its dev check (a search of a
sampled dev corpus) and its standard export (a plain Hugging Face model Pyserini and sentence-transformers load)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from petir import cli
from petir.backbone import _from_pretrained, resolve_backbone
from petir.batching import MAX_LENGTH, GraphOutput, TextEncoder
from petir.data import Corpus, Document, Pools, Qrels, Queries, Run
from petir.errors import PetirError
from petir.losses import contrastive_batch, contrastive_loss
from petir.models import STATE_FILE, PetModel
from petir.ondisk import ids_by_position
from petir.onnx import OnnxModel
from petir.run_directory import MODEL_DIR
from petir.sampling import Group
from petir.tasks.base import TEST_RUN_FILE, Rows, StudyStage, Task

if TYPE_CHECKING:
    from petir.reproduce import Study

NAME = "retrieval"


#: Passage tokens of every test encode (the study's ``pyserini.encode --max-length``, Pyserini's default too) and
#: the saved model's default: dev checks encode at the saved length, so they measure the model that is tested.
TEST_PASSAGE_LENGTH = 256


@dataclasses.dataclass
class RetrievalOptions:
    """The bi-encoder's options, saved in config.json."""

    pooling: str = cli.option("mean", "token pooling", ("mean", "cls"))
    similarity: str = cli.option("cosine", "score: cosine (L2-normalised vectors) or dot product", ("cosine", "dot"))
    query_max_length: int = cli.option(64, "query tokens", bounds=MAX_LENGTH)
    passage_max_length: int = cli.option(
        TEST_PASSAGE_LENGTH,
        "passage tokens as the model is used: dev checks encode at it, and the card's pyserini.encode --max-length",
        bounds=MAX_LENGTH,
    )
    train_passage_length: int | None = cli.option(
        None,
        "passage tokens in training batches (default: --passage-max-length); shorter trains faster, while dev checks "
        "and the saved model still encode at --passage-max-length, so the dev set measures the model that is used",
        bounds=MAX_LENGTH,
    )
    # Cosine scores live in [-1, 1]: a temperature of 0.05 (scale 20, as all-MiniLM-L6-v2 was trained with) gives
    # the softmax enough range; dot products are unbounded and need none.
    temperature: float | None = cli.option(
        None,
        "softmax temperature of the contrastive loss (default: 0.05 for cosine, 1 for dot)",
        bounds=cli.Bounded(float, above=0),
    )

    def __post_init__(self) -> None:
        if (self.train_passage_length or 0) > self.passage_max_length:
            raise PetirError(
                f"--train-passage-length {self.train_passage_length} is above --passage-max-length "
                f"{self.passage_max_length}: the model would train on passages longer than it is used with; lower it, "
                "or raise --passage-max-length"
            )


#: Passages a retrieval dev check searches by default: encoding them at 256 tokens costs about as much as two dozen
#: training steps of 16 queries at 128 tokens (SciFact on 2 cores: 1.8 s a step, ~23 passages a second), so checks
#: every few dozen steps and a learning-rate ladder's rung ends fit a quarter of the training time.
DEV_CORPUS = 1_000
#: The share of a sampled dev corpus given to the dev queries' BM25 candidates (the distractors that rank high);
#: the seeded sample of the rest keeps the easy part of a corpus-wide search.
CANDIDATE_SHARE = 0.75


@dataclasses.dataclass
class RetrievalDataOptions:
    """The flags only a retriever's training data reads (``petir.train``)."""

    dev_corpus: int = cli.option(
        DEV_CORPUS,
        "retrieval: dev queries search the whole corpus up to this many passages; above, their judged "
        "passages, their BM25 candidates best first up to three quarters of it, and a seeded sample",
        bounds=cli.Bounded(int, minimum=1),
    )


#: One vector per text.
EMBEDDINGS = GraphOutput("embeddings", ("batch", "hidden"))


class BiEncoder(PetModel, TextEncoder):
    """A shared query/passage encoder: pooled token states, L2-normalised for cosine similarity.

    Trained with a contrastive loss over in-batch and hard negatives.
    """

    task = NAME
    options_class = RetrievalOptions
    graph_output = EMBEDDINGS

    def _setup(self, options: RetrievalOptions) -> None:
        self.pooling = options.pooling
        self.similarity = options.similarity
        self.query_max_length = min(options.query_max_length, self.length_limit)
        self.passage_max_length = min(options.passage_max_length, self.length_limit)
        self.train_passage_length = min(options.train_passage_length or options.passage_max_length, self.length_limit)
        default_temperature = 0.05 if options.similarity == "cosine" else 1.0
        self.temperature = options.temperature if options.temperature is not None else default_temperature

    def inference(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the ONNX graph computes: :meth:`embed`."""
        return self.embed(features)

    def example_features(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """A padded batch in the model's own tokenisation (ONNX tracing and parity checks): the passages."""
        return self.tokenize(passages, self.passage_max_length)

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns: float tensor [batch, hidden], L2-normalised when similarity is cosine."""
        states = self.encoder(**features).last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = features["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.similarity == "cosine" else pooled

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        return contrastive_batch(self.tokenize, groups, self.query_max_length, self.train_passage_length)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Contrastive loss (:func:`petir.losses.contrastive_loss`): each query against every passage in the batch,
        gathered from every rank under ``torchrun``, false negatives masked out."""
        queries = self.embed(batch["queries"])
        return contrastive_loss(queries, self.embed(batch["passages"]), batch["groups"], self.temperature)

    @property
    def dimension(self) -> int:
        return self.encoder.config.hidden_size

    @torch.inference_mode()
    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        return self.embed(self.tokenize(texts, max_length)).float().cpu().numpy()

    def rank(self, queries: Queries, pools: Pools, corpus: Corpus, batch_size: int = 32, progress: bool = False) -> Run:
        docids = sorted({docid for pool in pools.values() for docid in pool})
        row = {docid: i for i, docid in enumerate(docids)}
        passages = self.encode([corpus[docid].contents for docid in docids], "passage", batch_size, progress)
        qids = list(pools)
        query_vectors = self.encode([queries[qid] for qid in qids], "query", batch_size)
        run = {}
        for qid, vector in zip(qids, query_vectors, strict=True):
            scores = passages[[row[docid] for docid in pools[qid]]] @ vector
            run[qid] = sorted(zip(pools[qid], scores.tolist(), strict=True), key=lambda hit: -hit[1])
        return run


class OnnxBiEncoder(OnnxModel, TextEncoder):
    """The ONNX twin of :class:`BiEncoder`: ``encode`` returns the same vectors (to float32 rounding)."""

    task = NAME
    graph_output = EMBEDDINGS

    def _setup(self, config: dict[str, Any]) -> None:
        self.query_max_length = config["query_max_length"]
        self.passage_max_length = config["passage_max_length"]
        self.similarity = config["similarity"]
        self.dimension = self.session.get_outputs()[0].shape[1]

    def _embed_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        return self.run(self.tokenize(texts, max_length))


# -- the dev check: a search of the corpus, scaled down -------------------------------------------------------------
def dev_corpus(corpus: Mapping[str, Document], first_stage: Pools, dev_qrels: Qrels, size: int) -> list[str]:
    """The passages a retrieval dev check searches: the whole corpus up to ``size`` passages; above, the dev
    queries' judged passages (all of them), their BM25 candidates rank by rank (every query's first, then every
    second...) up to :data:`CANDIDATE_SHARE` of ``size``, and a seeded sample of the rest (a corpus-wide search,
    scaled down, so the dev metric ranks against the same kind of distractors as the test)."""
    ids = ids_by_position(corpus)
    if len(ids) <= size:
        return list(ids)
    kept = dict.fromkeys(d for q in first_stage for d in dev_qrels[q])
    depth = max((len(pool) for pool in first_stage.values()), default=0)
    by_rank = (pool[rank] for rank in range(depth) for pool in first_stage.values() if rank < len(pool))
    for docid in by_rank:
        if len(kept) >= CANDIDATE_SHARE * size:
            break
        kept.setdefault(docid, None)
    # positions, not ids, are sampled: listing every id of an MS MARCO-sized corpus would hold it in memory
    wanted = max(0, size - len(kept))
    for position in random.Random(0).sample(range(len(ids)), min(len(ids), wanted + len(kept))):
        if len(kept) >= size:
            break
        kept.setdefault(ids[position], None)
    return list(kept)


def dev_pools(
    corpus: Mapping[str, Document], first_stage: Pools, dev_qrels: Qrels, options: RetrievalDataOptions
) -> Pools:
    """Every dev query searches the same dev corpus (:func:`dev_corpus`)."""
    return dict.fromkeys(first_stage, dev_corpus(corpus, first_stage, dev_qrels, options.dev_corpus))


# -- the standard export: a plain Hugging Face model -----------------------------------------------------------------
#: sentence-transformers' pooling modes for petir's poolings.
POOLING_MODES = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}


def export_files(model: BiEncoder, directory: Path, source: Path) -> None:
    """What makes the merged backbone in ``directory`` a retriever without petir: the sentence-transformers modules
    (pooling, normalisation) and a README.md with the stock Pyserini flags."""
    from petir.card import export_card  # the card module reads the task registry, which imports this one

    _save_sentence_transformers_files(model, directory)
    (directory / "README.md").write_text(export_card(source, _card(model, source)))


def _save_sentence_transformers_files(model: BiEncoder, directory: Path) -> None:
    """modules.json and the pooling (and normalisation) module configs that sentence-transformers reads."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if model.similarity == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir()
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (directory / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": model.dimension, **dict.fromkeys(POOLING_MODES.values(), False)}
    pooling[POOLING_MODES[model.pooling]] = True
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": model.passage_max_length, "do_lower_case": False}, indent=2) + "\n"
    )
    similarity = "cosine" if model.similarity == "cosine" else "dot"
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"similarity_fn_name": similarity, "prompts": {}, "default_prompt_name": None}, indent=2) + "\n"
    )


def pyserini_flags(model: BiEncoder) -> str:
    """The stock Pyserini encoder flags that reproduce the model's vectors."""
    return f"--encoder-class auto --pooling {model.pooling}" + (" --l2-norm" if model.similarity == "cosine" else "")


def _card(model: BiEncoder, source: Path) -> str:
    flags = pyserini_flags(model)
    vectors = f"{model.pooling} pooling" + (", L2-normalised" if model.similarity == "cosine" else "")
    return f"""# {model.method} retriever exported from petir

A plain Hugging Face model (`{model.encoder.config.model_type}`): petir's trained `{model.method}` weights folded into
`{model.backbone}`, exported from `{source.name}` by `python -m petir.export`. No petir needed to use it.

{pyserini_commands(model, flags)}

```python
from sentence_transformers import SentenceTransformer
vectors = SentenceTransformer("THIS_DIR").encode(["a passage"])   # {vectors}
```

Queries are encoded at {model.query_max_length} tokens, passages at {model.passage_max_length} (trained at
{model.train_passage_length}).
"""


def pyserini_commands(model: BiEncoder, encoder_flags: str = "") -> str:
    """The stock Pyserini encode and search commands of ``model`` (markdown), placeholders in capitals: Pyserini's
    ``--dimension`` defaults to 768 and its ``--device`` to cuda:0, so without the model's own a 384-wide model
    fails with ``assert d == self.d`` (and a CPU machine cannot encode at all); ``--max-length`` is the length the
    model was saved (and dev-checked) at."""
    flags = f" {encoder_flags}" if encoder_flags else ""
    return f"""```bash
python -m pyserini.encode input --corpus COLLECTION output --embeddings INDEX --to-faiss \\
    encoder --encoder THIS_DIR{flags} --dimension {model.dimension} --max-length {model.passage_max_length} --device cpu
python -m pyserini.search.faiss --index INDEX --topics TOPICS --encoder THIS_DIR{flags} --device cpu --output run.trec
```"""


# -- the study's retrieval stage ------------------------------------------------------------------------------------
@dataclasses.dataclass
class RetrievalStudyOptions:
    """The retrieval stage's flags (``petir.reproduce``)."""

    batch_size: int = cli.option(16, "queries per training batch", bounds=cli.Bounded(int, minimum=1))
    train_passage_length: int = cli.option(128, "passage tokens in training", bounds=MAX_LENGTH)
    test_picked: bool = cli.option(
        False,
        "retrieval: encode and search the test queries only with each method's learning rate its dev set picks "
        "(the other rates are reported by their dev values, and by test where an earlier command searched them), "
        "as a sweep is used, at a fraction of the CPU time",
    )


#: The first stage every study has: BM25 (Pyserini's, on the workspace's Lucene index).
BM25 = "bm25"


def bm25_run_file(root: Path) -> Path:
    """The study's BM25 run of the test queries, in the study directory ``root``."""
    return root / NAME / BM25 / TEST_RUN_FILE


class RetrievalStage(StudyStage):
    """``petir.train`` -> ``pyserini.encode`` (Faiss index) -> ``pyserini.search.faiss`` -> trec_eval, beside the BM25
    and zero-shot backbone baselines through the same stock Pyserini commands; offers BM25 and the best dense run to
    re-ranking."""

    options = RetrievalStudyOptions

    def train_flags(self, options: RetrievalStudyOptions) -> dict[str, object]:
        return {
            "batch_size": options.batch_size,
            "train_passage_length": options.train_passage_length,
            "passage_max_length": TEST_PASSAGE_LENGTH,  # dev checks encode as dense_run's test encode does
        }

    def run(self, study: Study, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> Rows:
        from petir.report import chosen_on_dev
        from petir.reproduce import seeds_of

        rows = [self._bm25_row(study), self._zero_shot_row(study)]
        runs = [
            (variant, seed, study.train(NAME, variant, seed))
            for variant in variants
            for seed in seeds_of(variant, seeds, seed_variants)
        ]
        trained = [study.row(variant, seed, run_dir) for variant, seed, run_dir in runs]
        picked = study.s.stages[NAME].test_picked and not study.s.dry_run
        tested = set(chosen_on_dev(trained).values()) if picked else set(variants)
        for (variant, seed, run_dir), row in zip(runs, trained, strict=True):
            if variant not in tested:
                if (run_dir / TEST_RUN_FILE).exists():  # searched by an earlier command: reporting it costs nothing
                    row.update(study.evaluate(run_dir / TEST_RUN_FILE))
                continue
            if not (study.s.dry_run or (run_dir / MODEL_DIR / STATE_FILE).exists()):
                print(
                    f"petir.reproduce: {variant} seed {seed}: its weights are not here (trained on another machine "
                    "and left there): dev values only",
                    flush=True,
                )
                continue
            results = study.evaluate(self.dense_run(study, str(run_dir / MODEL_DIR), run_dir))
            row.update(results)
            if results:  # a dry run computes none
                self._card_test_results(study, run_dir / MODEL_DIR, results)
        return rows + trained

    def _card_test_results(self, study: Study, model_dir: Path, results: dict[str, Any]) -> None:
        """The model's test numbers, as this stage computed them, into its card (the study trained the model)."""
        from petir.card import add_test_results  # the card module reads the task registry, which imports this one

        how = f"stock pyserini.encode and pyserini.search.faiss, {study.s.hits} hits, trec_eval -c; petir.reproduce"
        scores = {name: value for name, value in results.items() if isinstance(value, float)}
        add_test_results(model_dir, study.s.data.name, scores, how)

    def first_stages(self, study: Study, seed: int) -> dict[str, Path]:
        """BM25, and the best trained dense run of ``seed`` (by nDCG@10) if this stage has run."""
        stages = {BM25: self.bm25_run(study)}
        candidates = []
        for run_file in (study.root / NAME).glob(f"*/seed{seed}/{TEST_RUN_FILE}"):
            if run_file.with_name(run_file.name + ".metrics.json").exists():
                candidates.append((study.evaluate(run_file)["ndcg@10"], run_file.parent.parent.name, run_file))
        if candidates:
            _, variant, run_file = max(candidates)
            stages[f"dense-{variant}"] = run_file
        return stages

    def dense_run(self, study: Study, encoder: str, directory: Path, encoder_flags: Sequence[str] = ()) -> Path:
        """Encode the corpus with the stock ``pyserini.encode`` and search with ``pyserini.search.faiss``."""
        index = study.produce(
            directory / "faiss-index",
            *("pyserini.encode", "input", "--corpus", study.workspace.collection),
            *("output", "--embeddings", "OUTPUT", "--to-faiss"),
            *("encoder", "--encoder", encoder, *encoder_flags),
            *cli.flags(dimension=_dimension(study.s.backbone), device="cpu", batch_size=32),
            *cli.flags(max_length=TEST_PASSAGE_LENGTH),
        )
        return study.produce(
            directory / TEST_RUN_FILE,
            *("pyserini.search.faiss", "--index", index, "--topics", study.topics, "--encoder", encoder),
            *encoder_flags,
            *cli.flags(output="OUTPUT", hits=study.s.hits, device="cpu", batch_size=64, threads=study.s.threads),
        )

    def bm25_run(self, study: Study) -> Path:
        bm25_run_file(study.root).parent.mkdir(parents=True, exist_ok=True)
        return study.produce(
            bm25_run_file(study.root),
            *("pyserini.search.lucene", "--index", study.workspace.lucene_index, "--topics", study.topics, "--bm25"),
            *cli.flags(output="OUTPUT", hits=study.s.hits, threads=study.s.threads, batch_size=64),
        )

    def _bm25_row(self, study: Study) -> dict[str, Any]:
        return {"method": BM25, "seed": "", **study.evaluate(self.bm25_run(study))}

    def _zero_shot_row(self, study: Study) -> dict[str, Any]:
        directory = study.root / NAME / "zero-shot"
        directory.mkdir(parents=True, exist_ok=True)
        flags = ["--pooling", "mean", "--l2-norm"]
        run_file = self.dense_run(study, study.backbone_dir(), directory, flags)
        return {"method": "zero-shot", "seed": "", **study.evaluate(run_file)}


def _dimension(backbone: str) -> int:
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, resolve_backbone(backbone), f"the config of backbone {backbone!r}").hidden_size


TASK = Task(
    model=BiEncoder,
    onnx=OnnxBiEncoder,
    kind="bi-encoder",
    noun="retriever",
    dev_pools=dev_pools,
    data_options=RetrievalDataOptions,
    usage=pyserini_commands,
    pipeline_tag="sentence-similarity",
    export=export_files,
    pyserini=True,
    study=RetrievalStage(),
)
