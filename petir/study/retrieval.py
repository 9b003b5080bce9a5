"""The study's retrieval stage: ``petir.train`` -> ``pyserini.encode`` -> ``pyserini.search.faiss`` -> trec_eval, beside
BM25 and the zero-shot backbone."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petir import cli
from petir.backbone import _from_pretrained, resolve_backbone
from petir.batching import MAX_LENGTH
from petir.models import STATE_FILE
from petir.run_directory import MODEL_DIR
from petir.study.entries import BM25, ZERO_SHOT, seeds_of
from petir.study.report import chosen_on_dev
from petir.study.runner import TEST_RUN_FILE, Rows, Study, StudyStage
from petir.tasks.retrieval import NAME, TEST_PASSAGE_LENGTH

#: The paper's figures (BERT-base, MS MARCO; ../shared/PAPER.md, Table 3), per study entry, to print beside ours.
#: The paper's "best scattered PET" rows name no method (0.5 %: MRR@10 0.304, nDCG@10 0.609; 6.7 %: 0.316, 0.616).
PAPER = {
    "paper MARCO-P MRR@10": {"full": 0.316, "iaa-s": 0.312, "iaa-l": 0.314, "iaa-m": 0.309, "iaa-l@6.7": 0.327},
    "paper TREC19-P nDCG@10": {"full": 0.600, "iaa-s": 0.605, "iaa-l": 0.615, "iaa-m": 0.602, "iaa-l@6.7": 0.617},
}


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


def bm25_run_file(root: Path) -> Path:
    """The study's BM25 run of the test queries, in the study directory ``root``."""
    return root / NAME / BM25 / TEST_RUN_FILE


class RetrievalStage(StudyStage):
    """``petir.train`` -> ``pyserini.encode`` (Faiss index) -> ``pyserini.search.faiss`` -> trec_eval, beside the BM25
    and zero-shot backbone baselines through the same stock Pyserini commands; offers BM25 and the best dense run to
    re-ranking."""

    task = NAME
    untrained = ZERO_SHOT
    options = RetrievalStudyOptions
    paper = PAPER

    def train_flags(self, options: RetrievalStudyOptions) -> dict[str, object]:
        return {
            "batch_size": options.batch_size,
            "train_passage_length": options.train_passage_length,
            "passage_max_length": TEST_PASSAGE_LENGTH,  # dev checks encode as dense_run's test encode does
        }

    def run(self, study: Study, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> Rows:
        rows = [self._bm25_row(study)]
        with study.left_out_if_not_made(ZERO_SHOT):
            rows.append(self._zero_shot_row(study))
        runs = []
        for variant in variants:
            for seed in seeds_of(variant, seeds, seed_variants):
                with study.left_out_if_not_made(f"{variant} seed {seed}"):
                    runs.append((variant, seed, study.train(NAME, variant, seed)))
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
            with study.left_out_if_not_made(f"{variant} seed {seed}'s test run (its dev values are kept)"):
                results = study.evaluate(self.dense_run(study, str(run_dir / MODEL_DIR), run_dir))
                row.update(results)
                how = f"stock pyserini.encode and pyserini.search.faiss, {study.s.hits} hits"
                study.record_test_results(run_dir / MODEL_DIR, results, how)
        return rows + trained

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
        directory = study.root / NAME / ZERO_SHOT
        directory.mkdir(parents=True, exist_ok=True)
        flags = ["--pooling", "mean", "--l2-norm"]
        run_file = self.dense_run(study, study.backbone_dir(), directory, flags)
        return {"method": ZERO_SHOT, "seed": "", **study.evaluate(run_file)}


def _dimension(backbone: str) -> int:
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, resolve_backbone(backbone), f"the config of backbone {backbone!r}").hidden_size
