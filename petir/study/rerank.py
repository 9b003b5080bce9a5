"""The study's re-ranking stage: ``petir.train --task rerank`` -> ``petir.rerank`` of the first stages the other
stages offer -> trec_eval, each re-ranked run also fused with its first stage; then the depth sweep."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petir import cli
from petir.batching import MAX_LENGTH
from petir.data import read_qrels
from petir.run_directory import MODEL_DIR
from petir.study.entries import BM25, COSINE, NO_RERANKING, seeds_of
from petir.study.report import DEPTH_SWEEP_NOTE, SWEEP_DEPTHS, depth_sweep
from petir.study.retrieval import bm25_run_file
from petir.study.runner import Command, Rows, Study, StudySettings, StudyStage
from petir.tasks.rerank import NAME
from petir.workspace import TOPICS_FILE

#: The paper's figures (BERT-base, MS MARCO; ../shared/PAPER.md, Table 4), per study entry, to print beside ours;
#: its IAA re-ranking table was not reachable.
PAPER = {
    "paper MARCO-P MRR@10": {
        "full": 0.376,
        "adapter": 0.366,
        "lora": 0.363,
        "mam": 0.365,
        "prefix": 0.355,
        "bitfit": 0.325,
    },
    "paper TREC19-P nDCG@10": {"full": 0.738},
}


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

    task = NAME
    untrained = COSINE
    main_first_stage = BM25
    options = RerankStudyOptions
    paper = PAPER

    def train_flags(self, options: RerankStudyOptions) -> dict[str, object]:
        return {
            "batch_size": options.rerank_batch_size,
            "max_length": options.rerank_max_length,
            "negatives": options.rerank_negatives,
        }

    def run(self, study: Study, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> Rows:
        first_stages = study.first_stages(seeds[0])
        rows = [
            {"method": NO_RERANKING, "first_stage": stage, "seed": "", **study.evaluate(run_file)}
            for stage, run_file in first_stages.items()
        ]
        for stage, run_file in first_stages.items():  # the baseline a user tries first: the backbone's own cosine
            with study.left_out_if_not_made(f"{COSINE} re-ranking {stage}"):
                cosine = study.root / NAME / COSINE
                reranked = self.rerank_run(study, run_file, Path(study.backbone_dir()), cosine, stage)
                rows += self._rerank_rows(study, {"method": COSINE, "seed": ""}, stage, run_file, reranked)
        for variant in variants:
            for seed in seeds_of(variant, seeds, seed_variants):
                with study.left_out_if_not_made(f"{variant} seed {seed}"):
                    run_dir = study.train(NAME, variant, seed)
                    for stage, run_file in first_stages.items():
                        if stage != BM25 and seed != seeds[0]:
                            continue  # seeds are compared on the BM25 run only (CPU time)
                        with study.left_out_if_not_made(f"{variant} seed {seed} re-ranking {stage}"):
                            rows += self._trained_rows(
                                study, study.row(variant, seed, run_dir), run_dir, stage, run_file
                            )
        return rows

    def _trained_rows(self, study: Study, row: dict[str, Any], run_dir: Path, stage: str, run_file: Path) -> Rows:
        """A trained run's re-ranking of one first stage, alone and fused; re-ranking BM25, the stage's main
        comparison, also goes into the model's card."""
        reranked = self.rerank_run(study, run_file, run_dir / MODEL_DIR, run_dir, stage)
        alone, fused = self._rerank_rows(study, row, stage, run_file, reranked)
        if stage == BM25:
            how = f"petir.rerank of BM25's top {study.s.stages[NAME].rerank_depth}"
            study.record_test_results(run_dir / MODEL_DIR, alone, how)
        return [alone, fused]

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
