"""The re-ranking task: a monoBERT-style cross-encoder, its ONNX twin and its dev check (re-ranking each dev query's
BM25 top-k, as at test time)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from petir import cli
from petir.anatomy import hidden_dropout
from petir.batching import MAX_LENGTH, GraphOutput, PairScorer
from petir.data import Corpus, Document, Pools, Qrels, Queries, Run, read_qrels
from petir.losses import GROUP_LOSSES, false_negatives
from petir.models import PetModel
from petir.onnx import OnnxModel
from petir.run_directory import MODEL_DIR
from petir.sampling import Group
from petir.tasks.base import Command, Rows, StudyStage, Task
from petir.tasks.retrieval import BM25, bm25_run_file
from petir.workspace import TOPICS_FILE

if TYPE_CHECKING:
    from petir.reproduce import Study, StudySettings

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


# -- the study's re-ranking stage -----------------------------------------------------------------------------------
@dataclasses.dataclass
class RerankStudyOptions:
    """The re-ranking stage's flags (``petir.reproduce``)."""

    rerank_batch_size: int = cli.option(8, "rerank: queries per training batch", bounds=cli.Bounded(int, minimum=1))
    rerank_negatives: int = cli.option(3, "rerank: BM25 negatives per query", bounds=cli.Bounded(int, minimum=1))
    rerank_max_length: int = cli.option(128, "rerank: query+passage tokens", bounds=MAX_LENGTH)
    rerank_depth: int = cli.option(100, "rerank: passages re-scored per query", bounds=cli.Bounded(int, minimum=1))


class RerankStage(StudyStage):
    """``petir.train --task rerank`` -> ``petir.rerank`` of every first stage the other stages offer (BM25 with
    every seed, the best dense run with the first) -> trec_eval, beside the backbone's own cosine and each re-ranked
    run fused with its first stage; then the depth sweep."""

    options = RerankStudyOptions

    def train_flags(self, options: RerankStudyOptions) -> dict[str, object]:
        return {
            "batch_size": options.rerank_batch_size,
            "max_length": options.rerank_max_length,
            "negatives": options.rerank_negatives,
        }

    def run(self, study: Study, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> Rows:
        from petir.reproduce import seeds_of

        first_stages = study.first_stages(seeds[0])
        rows = [
            {"method": "no re-ranking", "first_stage": stage, "seed": "", **study.evaluate(run_file)}
            for stage, run_file in first_stages.items()
        ]
        for stage, run_file in first_stages.items():  # the baseline a user tries first: the backbone's own cosine
            reranked = self.rerank_run(study, run_file, Path(study.backbone_dir()), study.root / NAME / "cosine", stage)
            rows += self._rerank_rows(study, {"method": "cosine", "seed": ""}, stage, run_file, reranked)
        for variant in variants:
            for seed in seeds_of(variant, seeds, seed_variants):
                run_dir = study.train(NAME, variant, seed)
                for stage, run_file in first_stages.items():
                    if stage != BM25 and seed != seeds[0]:
                        continue  # seeds are compared on the BM25 run only (CPU time)
                    reranked = self.rerank_run(study, run_file, run_dir / MODEL_DIR, run_dir, stage)
                    rows += self._rerank_rows(study, study.row(variant, seed, run_dir), stage, run_file, reranked)
        return rows

    def _rerank_rows(self, study: Study, row: dict[str, Any], stage: str, first_stage: Path, reranked: Path) -> Rows:
        """The re-ranked run's row, and the row of its reciprocal-rank fusion with the first stage (the stock
        ``pyserini.fusion --method rrf`` over the re-ranked depth): a re-ranker that knows something the first stage
        does not helps fused even where it loses alone."""
        fused = study.produce(
            reranked.with_name(reranked.stem + ".rrf.trec"),
            *("pyserini.fusion", "--runs", first_stage, reranked, "--method", "rrf"),
            *cli.flags(depth=study.s.stages[NAME].rerank_depth, k=study.s.hits, output="OUTPUT"),
        )
        first_stage_run = str(first_stage.relative_to(study.root)) if not study.s.dry_run else ""
        return [
            {**row, "first_stage": stage, **study.evaluate(reranked), "first_stage_run": first_stage_run},
            {
                **row,
                "first_stage": f"{stage} + RRF",
                **study.evaluate(fused),
                "first_stage_run": first_stage_run,
                "fused": True,
            },
        ]

    def rerank_run(self, study: Study, run_file: Path, model: Path, directory: Path, stage: str) -> Path:
        """``petir.rerank`` of ``run_file``'s top ``--rerank-depth`` with ``model``, into ``directory``."""
        passages = {"index": study.workspace.lucene_index}
        return study.produce(
            reranked_file(directory, stage), *_rerank_command(study.s, run_file, passages, model, "cpu")
        )

    def report(self, study: Study, rows: Rows) -> None:
        """The depth sweep: each re-ranker's nDCG@10 when re-ranking only the top k of its first stage."""
        from petir.report import DEPTH_SWEEP_NOTE, SWEEP_DEPTHS, depth_sweep

        depths = [depth for depth in SWEEP_DEPTHS if depth <= study.s.stages[NAME].rerank_depth]
        sweep = depth_sweep(rows, read_qrels(study.qrels), study.root, depths)
        (study.root / f"results-{NAME}-depth.md").write_text(DEPTH_SWEEP_NOTE + "\n\n" + sweep + "\n")

    def gpu_inputs(self, root: Path) -> tuple[Path, ...]:
        """The BM25 test run its runs re-rank, and the test topics."""
        return bm25_run_file(root), root / TOPICS_FILE

    def gpu_steps(
        self, settings: StudySettings, run_dir: Path, corpus: Path, device: str
    ) -> list[tuple[Command, Path]]:
        """Re-rank the BM25 test run (passages from the corpus file: no Lucene index on a GPU machine)."""
        run_file = bm25_run_file(settings.output)
        command = _rerank_command(settings, run_file, {"corpus": corpus}, run_dir / MODEL_DIR, device)
        return [(command, reranked_file(run_dir, BM25))]


def reranked_file(directory: Path, first_stage: str) -> Path:
    """Where a study's re-ranking of ``first_stage`` is written."""
    return directory / f"test.rerank-{first_stage}.trec"


def _rerank_command(
    settings: StudySettings, run_file: Path, passages: dict[str, Path], model: Path, device: str
) -> Command:
    """The ``petir.rerank`` command of a study's re-ranking (``passages``: its ``index`` or ``corpus``)."""
    depth = settings.stages[NAME].rerank_depth
    return [
        "petir.rerank",
        *cli.flags(run=run_file, topics=settings.output / TOPICS_FILE, **passages),
        *cli.flags(model=model, output="OUTPUT", depth=depth, device=device),
    ]


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
    study=RerankStage(),
    no_export="a re-ranker's score head reads the raw [CLS] state, which no standard classification class does, so "
    "it needs petir (python -m petir.rerank)",
)
