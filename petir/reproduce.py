"""Reproduce the study at CPU scale: every PET method against full fine-tuning, per stage, with one command.

    python -m petir.reproduce retrieval --data ../shared/data/scifact --output runs/scifact-study

Each step runs the documented command line as a subprocess (they are written to OUTPUT/commands.sh as they run)
and is skipped when its result exists, so an interrupted study continues where it stopped:

- retrieval: ``petir.train`` -> ``pyserini.encode`` (Faiss index) -> ``pyserini.search.faiss`` -> trec_eval,
  plus the BM25 and zero-shot backbone baselines through the same stock Pyserini commands;
- rerank: ``petir.train --task rerank`` -> ``petir.rerank`` of the BM25 run (every seed) and of the best dense run
  of the retrieval stage (first seed) -> trec_eval.

Results: OUTPUT/results-STAGE.{csv,md} (every run; then mean ± standard deviation over seeds per method) and
OUTPUT/convergence-STAGE.png (dev nDCG@10 and training loss against steps; scattered methods dashed, the rest solid).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petir import cli
from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
from petir.batching import MAX_LENGTH
from petir.data import corpus_path, read_qrels
from petir.datasets import load_beir, resolve_beir
from petir.errors import PetirError
from petir.evaluate import read_results
from petir.files import check_output, foreign_entries, listing
from petir.models import STATE_FILE
from petir.pet import VARIANTS
from petir.report import (
    ABLATIONS,
    DEPTH_SWEEP_NOTE,
    PAPER,
    SWEEP_DEPTHS,
    chosen_on_dev,
    depth_sweep,
    dev_curve,
    plot_convergence,
    significance,
    steps_to_fraction,
    study_entry,
    write_tables,
)
from petir.trainer import METRICS_FILE, MODEL_DIR, SUMMARY_FILE, read_summary, resumable
from petir.workspace import QRELS_FILE, TOPICS_FILE, Workspace

#: Run with every seed by default: the reference, the best scattered method of the first study, the paper's best.
MAIN_VARIANTS = ("full", "adapter", "iaa-l")


def study_entries(methods: str) -> list[str]:
    """The entries of a comma-separated ``--methods``, each checked (:func:`study_entry`) before any run starts."""
    entries = [name.strip() for name in methods.split(",") if name.strip()]
    for name in entries:
        study_entry(name)
    return entries


def seed_list(text: str) -> list[int]:
    """``--seeds`` as integers, parsed once for every command that takes a study's flags."""
    try:
        return [cli.SEED.parse(seed) for seed in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, each of which {error}") from None


def seeds_of(entry: str, seeds: Sequence[int], seed_entries: Sequence[str]) -> Sequence[int]:
    """The seeds an entry runs with: all of them for a ``--seed-methods`` entry, else the first."""
    return seeds if entry in seed_entries else seeds[:1]


@dataclass
class StudySettings:
    data: Path
    output: Path
    backbone: str
    steps: int
    batch_size: int
    eval_every: int
    eval_budget: float
    keep_best: bool
    train_passage_length: int
    dev_queries: int
    dev_depth: int
    hits: int
    rerank_batch_size: int
    rerank_negatives: int
    rerank_max_length: int
    rerank_depth: int
    threads: int
    dry_run: bool
    test_picked: bool = False


COMMANDS_FILE = "commands.sh"
TEST_RUN_FILE = "test.run.trec"  # each first stage's run of the test queries, in its run directory


def train_command(settings: StudySettings, stage: str, name: str, seed: int, run_dir: Path) -> list[object]:
    """The ``petir.train`` argv of one run of the study (also what benchmarks/gpu_study.py runs on a GPU)."""
    entry = study_entry(name)
    pet = [item for key, value in entry.options.items() for item in ("--pet", f"{key}={value}")]
    if stage == "retrieval":
        batch_size, task_args = settings.batch_size, cli.flags(passage_max_length=settings.train_passage_length)
    else:
        batch_size = settings.rerank_batch_size
        task_args = cli.flags(max_length=settings.rerank_max_length, negatives=settings.rerank_negatives)
    return [
        "petir.train",
        *cli.flags(data=settings.data, task=stage, backbone=settings.backbone, method=entry.variant),
        *(cli.flags(budget=entry.budget) if entry.budget else []),
        *pet,
        *(["--lr", str(entry.learning_rate)] if entry.learning_rate is not None else []),
        *cli.flags(steps=settings.steps, batch_size=batch_size, eval_every=settings.eval_every, seed=seed),
        *cli.flags(eval_budget=settings.eval_budget),
        *(["--keep-best"] if settings.keep_best else []),
        *dev_flags(settings),
        *cli.flags(threads=settings.threads, output=run_dir),
        *task_args,
    ]


def dev_flags(settings: StudySettings) -> list[str]:
    """The dataset's own dev split where it has one (qrels/dev.tsv), else training queries held out."""
    dev_qrels = settings.data / "qrels" / "dev.tsv"
    held_out = cli.flags(dev_qrels=dev_qrels) if dev_qrels.exists() else cli.flags(dev_queries=settings.dev_queries)
    return [*held_out, *cli.flags(dev_depth=settings.dev_depth)]


#: What marks a directory as a study's: its script, or a stage directory (benchmarks/gpu_study.py writes those alone).
STUDY_MARKS = (COMMANDS_FILE, "retrieval", "rerank")


def check_study_directory(output: Path) -> Path:
    """A study directory is new, empty, or one a study wrote (:data:`STUDY_MARKS`), which a re-run continues
    (finished runs are reused); a directory holding anything else is refused."""
    check_output(output, directory=True)
    found = foreign_entries(output)
    if found and not set(STUDY_MARKS) & set(found):
        raise PetirError(
            f"--output {output} is not empty ({listing(found)}) and is not a petir study directory (none of "
            f"{', '.join(STUDY_MARKS)}); pick a new or empty directory"
        )
    return output


def continue_flags(run_dir: Path) -> list[str]:
    """How a study starts one of its own training runs: ``--resume`` from its checkpoint, else ``--overwrite`` where
    the directory exists (what is there is the study's own: a run stopped before its first checkpoint, or a log)."""
    if resumable(run_dir):
        return ["--resume"]
    return ["--overwrite"] if run_dir.exists() else []


class Study:
    """Runs the study's commands, logs each to ``commands.sh`` (a script that replays the study from scratch, with
    the data, output and cache paths as variables), and reports progress: run k of n, elapsed time and an ETA."""

    def __init__(self, settings: StudySettings, planned_runs: int):
        self.s = settings
        self.root = check_study_directory(settings.output)
        self.root.mkdir(parents=True, exist_ok=True)
        self.topics = self.root / TOPICS_FILE
        self.qrels = self.root / QRELS_FILE
        self.started = time.monotonic()
        self.timings: list[tuple[str, float]] = []  # (command, seconds) of every command this invocation ran
        self.planned_runs, self.done_runs, self.run_seconds = planned_runs, 0, 0.0
        if not (self.root / COMMANDS_FILE).exists():
            self._write_script_header()
            self._log_line('CACHE=$(python -m petir.workspace --data "$DATA" --output "$OUT")')
        self.workspace = Workspace(corpus_path(settings.data), load_beir(settings.data, "test").corpus)
        self.paths = {str(settings.data): "$DATA", str(self.root.resolve()): "$OUT", self._backbone_dir(): "$BACKBONE"}
        self.paths[str(self.workspace.root)] = "$CACHE"
        if not self.qrels.exists():  # logged above as the line that sets $CACHE
            self.run("petir.workspace", *cli.flags(data=settings.data.resolve(), output=self.root.resolve()), log=False)

    # -- running commands --------------------------------------------------------------------------------------
    def _write_script_header(self) -> None:
        (self.root / COMMANDS_FILE).write_text(
            "#!/usr/bin/env bash\n"
            "# Written by python -m petir.reproduce as it ran: every command of the study, in order. It replays the\n"
            "# study from scratch: set DATA (the BEIR directory), OUT (a new directory) and PETIR_CACHE as you like.\n"
            "# petir.workspace writes the test topics/qrels and builds the Pyserini collection and Lucene index;\n"
            "# petir.train runs BM25 itself for its hard negatives and dev pools (cached in $PETIR_CACHE).\n"
            "set -euo pipefail\n"
            f"DATA=${{DATA:-{shlex.quote(str(self.s.data.resolve()))}}}\n"
            f"OUT=${{OUT:-{shlex.quote(str(self.root.resolve()))}}}\n"
            "# the backbone's local directory (the zero-shot baseline encodes with it as a plain HF model)\n"
            f"BACKBONE=${{BACKBONE:-{shlex.quote(self._backbone_dir())}}}\n"
            f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{self.s.threads}}}\n"
            'mkdir -p "$OUT"\n'
        )

    def _backbone_dir(self) -> str:
        return resolve_backbone(self.s.backbone)

    def _log_line(self, line: str) -> None:
        with open(self.root / COMMANDS_FILE, "a") as log:
            log.write(line + "\n")

    def _portable(self, argv: Sequence[object]) -> str:
        """The command with the data, output and cache paths as ``"$DATA"``, ``"$OUT"`` and ``"$CACHE"``."""
        words = []
        for arg in map(str, argv):
            word = shlex.quote(arg)
            for path, variable in sorted(self.paths.items(), key=lambda item: -len(item[0])):
                if arg == path or arg.startswith(path + "/"):
                    word = f'"{variable}"{shlex.quote(arg[len(path) :]) if arg != path else ""}'
                    break
            words.append(word)
        return " ".join(words)

    def run(self, *argv: object, output: Path | None = None, log: bool = True) -> None:
        """Run ``python -m ...`` as documented, after appending it to commands.sh; a command that writes ``output``
        is logged writing there directly (the study itself writes a partial file and renames it)."""
        logged = [output if arg == "OUTPUT" else arg for arg in argv]
        line = "python -m " + self._portable(logged)
        if output is not None:
            line = f"mkdir -p {self._portable([output.parent])} && {line}"
        if log:
            self._log_line(line)
        executed = [self._partial(output) if arg == "OUTPUT" else arg for arg in argv]
        print(f"+ python -m {' '.join(shlex.quote(str(a)) for a in executed)}", flush=True)
        if self.s.dry_run:
            return
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", *map(str, executed)])
        self.timings.append((str(argv[0]), time.monotonic() - started))
        if result.returncode != 0:
            raise PetirError(f"step failed (exit {result.returncode}): {line}")

    @staticmethod
    def _partial(output: Path | None) -> Path:
        assert output is not None
        return output.with_name(output.name + ".partial")

    def announce(self, stage: str, variant: str, seed: int) -> None:
        """The study's top-level progress line: which run of how many, time so far, and the time still to go."""
        self.done_runs += 1
        elapsed = time.monotonic() - self.started
        measured = [seconds for _, seconds in self.timings]
        eta = ""
        if measured and self.done_runs > 1:
            per_run = sum(measured) / (self.done_runs - 1)
            eta = f", about {_clock(per_run * (self.planned_runs - self.done_runs + 1))} to go"
        print(
            f"petir.reproduce: [{self.done_runs}/{self.planned_runs}] {stage} {variant} seed {seed} "
            f"(elapsed {_clock(elapsed)}{eta})",
            flush=True,
        )

    def timing_summary(self) -> str:
        """Seconds per kind of command this invocation ran (cached steps cost nothing and are not listed)."""
        totals: dict[str, list[float]] = {}
        for command, seconds in self.timings:
            totals.setdefault(command, []).append(seconds)
        lines = [f"petir.reproduce: done in {_clock(time.monotonic() - self.started)}"]
        lines += [f"  {command:<24} {len(times):>3} runs  {_clock(sum(times))}" for command, times in totals.items()]
        return "\n".join(lines)

    # -- retrieval ---------------------------------------------------------------------------------------------
    def train(self, stage: str, variant: str, seed: int) -> Path:
        run_dir = self.root / stage / variant / f"seed{seed}"
        self.announce(stage, variant, seed)
        if (run_dir / SUMMARY_FILE).exists():
            return run_dir
        self.run(*train_command(self.s, stage, variant, seed, run_dir), *continue_flags(run_dir))
        return run_dir

    def produce(self, output: Path, *argv: object) -> Path:
        """Run a command that writes ``output`` (given as the placeholder ``OUTPUT`` in ``argv``) into a partial
        path first and rename it when the command succeeds, so an interrupted command is redone, not trusted."""
        if output.exists():
            return output
        partial = self._partial(output)
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        self.run(*argv, output=output)
        if not self.s.dry_run:
            partial.rename(output)
        return output

    def dense_run(self, encoder: str, directory: Path, encoder_flags: Sequence[str] = ()) -> Path:
        """Encode the corpus with the stock ``pyserini.encode`` and search with ``pyserini.search.faiss``."""
        index = self.produce(
            directory / "faiss-index",
            *("pyserini.encode", "input", "--corpus", self.workspace.collection),
            *("output", "--embeddings", "OUTPUT", "--to-faiss"),
            *("encoder", "--encoder", encoder, *encoder_flags),
            *cli.flags(dimension=self._dimension(), device="cpu", batch_size=32, max_length=256),
        )
        return self.produce(
            directory / TEST_RUN_FILE,
            *("pyserini.search.faiss", "--index", index, "--topics", self.topics, "--encoder", encoder),
            *encoder_flags,
            *cli.flags(output="OUTPUT", hits=self.s.hits, device="cpu", batch_size=64, threads=self.s.threads),
        )

    def _dimension(self) -> int:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolve_backbone(self.s.backbone)).hidden_size

    def evaluate(self, run_file: Path) -> dict[str, float]:
        """trec_eval of a test run (``python -m petir.evaluate``), cached beside it."""
        path = self.produce(
            run_file.with_name(run_file.name + ".metrics.json"),
            "petir.evaluate",
            self.qrels,
            run_file,
            "--output",
            "OUTPUT",
        )
        if self.s.dry_run:
            return {}
        return {**read_results(path), "run": str(run_file.relative_to(self.root))}

    def retrieval(self, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> list[dict]:
        rows = [self._bm25_row(), self._zero_shot_row()]
        runs = [
            (variant, seed, self.train("retrieval", variant, seed))
            for variant in variants
            for seed in seeds_of(variant, seeds, seed_variants)
        ]
        trained = [self._row(variant, seed, run_dir, {}) for variant, seed, run_dir in runs]
        tested = set(chosen_on_dev(trained).values()) if self.s.test_picked and not self.s.dry_run else set(variants)
        for (variant, seed, run_dir), row in zip(runs, trained, strict=True):
            if variant not in tested:
                if (run_dir / TEST_RUN_FILE).exists():  # searched by an earlier command: reporting it costs nothing
                    row.update(self.evaluate(run_dir / TEST_RUN_FILE))
                continue
            if not (self.s.dry_run or (run_dir / MODEL_DIR / STATE_FILE).exists()):
                print(
                    f"petir.reproduce: {variant} seed {seed}: its weights are not here (trained on another machine "
                    "and left there): dev values only",
                    flush=True,
                )
                continue
            row.update(self.evaluate(self.dense_run(str(run_dir / MODEL_DIR), run_dir)))
        return rows + trained

    def best_dense_run(self, seed: int) -> tuple[str, Path] | None:
        """The retrieval stage's best trained dense run of ``seed`` (by nDCG@10), if that stage has run."""
        candidates = []
        for run_file in (self.root / "retrieval").glob(f"*/seed{seed}/{TEST_RUN_FILE}"):
            if run_file.with_name(run_file.name + ".metrics.json").exists():
                candidates.append((self.evaluate(run_file)["ndcg@10"], run_file.parent.parent.name, run_file))
        if not candidates:
            return None
        _, variant, run_file = max(candidates)
        return f"dense-{variant}", run_file

    def rerank(self, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> list[dict]:
        first_stages = {"bm25": self.bm25_run()}
        dense = self.best_dense_run(seeds[0])
        if dense is not None:
            first_stages[dense[0]] = dense[1]
        rows = [
            {"method": "no re-ranking", "first_stage": stage, "seed": "", **self.evaluate(run_file)}
            for stage, run_file in first_stages.items()
        ]
        for stage, run_file in first_stages.items():  # the baseline a user tries first: the backbone's own cosine
            reranked = self.rerank_run(run_file, Path(self._backbone_dir()), self.root / "rerank" / "cosine", stage)
            rows += self._rerank_rows({"method": "cosine", "seed": ""}, stage, run_file, reranked)
        for variant in variants:
            for seed in seeds_of(variant, seeds, seed_variants):
                run_dir = self.train("rerank", variant, seed)
                for stage, run_file in first_stages.items():
                    if stage != "bm25" and seed != seeds[0]:
                        continue  # seeds are compared on the BM25 run only (CPU time)
                    reranked = self.rerank_run(run_file, run_dir / MODEL_DIR, run_dir, stage)
                    rows += self._rerank_rows(self._row(variant, seed, run_dir, {}), stage, run_file, reranked)
        return rows

    def _rerank_rows(self, row: dict[str, Any], stage: str, first_stage: Path, reranked: Path) -> list[dict]:
        """The re-ranked run's row, and the row of its reciprocal-rank fusion with the first stage (the stock
        ``pyserini.fusion --method rrf`` over the re-ranked depth): a re-ranker that knows something the first stage
        does not helps fused even where it loses alone."""
        fused = self.produce(
            reranked.with_name(reranked.stem + ".rrf.trec"),
            *("pyserini.fusion", "--runs", first_stage, reranked, "--method", "rrf"),
            *cli.flags(depth=self.s.rerank_depth, k=self.s.hits, output="OUTPUT"),
        )
        first_stage_run = str(first_stage.relative_to(self.root)) if not self.s.dry_run else ""
        return [
            {**row, "first_stage": stage, **self.evaluate(reranked), "first_stage_run": first_stage_run},
            {
                **row,
                "first_stage": f"{stage} + RRF",
                **self.evaluate(fused),
                "first_stage_run": first_stage_run,
                "fused": True,
            },
        ]

    def rerank_run(self, run_file: Path, model: Path, directory: Path, stage: str) -> Path:
        """``petir.rerank`` of ``run_file``'s top ``--rerank-depth`` with ``model``, into ``directory``."""
        return self.produce(
            directory / f"test.rerank-{stage}.trec",
            "petir.rerank",
            *cli.flags(run=run_file, topics=self.topics, index=self.workspace.lucene_index),
            *cli.flags(model=model, output="OUTPUT", depth=self.s.rerank_depth, device="cpu"),
        )

    def bm25_run(self) -> Path:
        directory = self.root / "retrieval" / "bm25"
        directory.mkdir(parents=True, exist_ok=True)
        return self.produce(
            directory / TEST_RUN_FILE,
            *("pyserini.search.lucene", "--index", self.workspace.lucene_index, "--topics", self.topics, "--bm25"),
            *cli.flags(output="OUTPUT", hits=self.s.hits, threads=self.s.threads, batch_size=64),
        )

    def _bm25_row(self) -> dict[str, Any]:
        return {"method": "bm25", "seed": "", **self.evaluate(self.bm25_run())}

    def _zero_shot_row(self) -> dict[str, Any]:
        directory = self.root / "retrieval" / "zero-shot"
        directory.mkdir(parents=True, exist_ok=True)
        flags = ["--pooling", "mean", "--l2-norm"]
        run_file = self.dense_run(resolve_backbone(self.s.backbone), directory, flags)
        return {"method": "zero-shot", "seed": "", **self.evaluate(run_file)}

    # -- one result row ----------------------------------------------------------------------------------------
    def _row(self, variant: str, seed: int, run_dir: Path, metrics: dict[str, float]) -> dict[str, Any]:
        if self.s.dry_run:
            return {"method": variant, "seed": seed}
        summary = read_summary(run_dir / SUMMARY_FILE)
        curve = dev_curve(run_dir / METRICS_FILE)
        kept = summary.get("kept")  # --keep-best: the dev check whose state was saved
        state = run_dir / MODEL_DIR / STATE_FILE
        return {
            "method": variant,
            "seed": seed,
            **metrics,
            "trainable": summary["parameters"]["trainable"],
            "trainable_%": summary["parameters"]["percent"],
            "state_mb": state.stat().st_size / 2**20 if state.exists() else None,  # absent: weights left where trained
            "train_s": summary["wall_time_s"],
            "dev_s": summary.get("dev_time_s"),
            "peak_mem_mb": summary["peak_memory_mb"],
            "steps_to_95%": steps_to_fraction(curve, 0.95),
            "steps_to_95%_gain": steps_to_fraction(curve, 0.95, of_gain=True),
            "dev_ndcg@10": kept["dev"]["ndcg@10"] if kept else curve[-1][1] if curve else None,
        }


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m petir.reproduce", description=__doc__)
    positive, count = cli.Bounded(int, minimum=1), cli.Bounded(int, minimum=0)
    parser.add_argument("stage", choices=("retrieval", "rerank", "all"), help="which stage of the study to run")
    parser.add_argument(
        "--data",
        default="scifact",
        help="BEIR dataset with train and test qrels: a directory, or a name looked up in "
        "$PETIR_DATA, ../shared/data and the cache, else downloaded",
    )
    parser.add_argument("--output", type=Path, required=True, help="study directory (runs, tables, plots)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="BERT-family model name or directory")
    parser.add_argument(
        "--methods",
        default=",".join(VARIANTS),
        help=f"comma-separated, from: {', '.join([*VARIANTS, *ABLATIONS])}; each at the 0.5 %% preset, or NAME@6.7; "
        "NAME-lr1e-4 trains at that learning rate (with several rates of a method, the tables mark the one dev picks)",
    )
    parser.add_argument("--seeds", type=seed_list, default="1", help="comma-separated seeds")
    parser.add_argument(
        "--seed-methods",
        type=lambda text: text.split(","),
        default=",".join(MAIN_VARIANTS),
        help="comma-separated: methods run with every seed (the others with the first seed only)",
    )
    parser.add_argument("--steps", type=positive, default=150, help="training steps per run")
    parser.add_argument("--batch-size", type=positive, default=16, help="queries per training batch")
    parser.add_argument("--eval-every", type=count, default=15, help="dev evaluation interval (convergence curves)")
    parser.add_argument(
        "--eval-budget",
        type=cli.Bounded(float, minimum=0),
        default=0.25,
        help="most share of training time dev checks may take (petir.train)",
    )
    parser.add_argument(
        "--keep-best",
        action="store_true",
        help="each run saves its best dev check, not its last step (petir.train --keep-best): the rule that lets "
        "the dev set pick every method's training length",
    )
    parser.add_argument("--train-passage-length", type=MAX_LENGTH, default=128, help="passage tokens in training")
    parser.add_argument("--dev-queries", type=count, default=50, help="training queries held out as dev set")
    parser.add_argument(
        "--dev-depth",
        type=positive,
        default=100,
        help="rerank dev: the BM25 top-k each dev query re-ranks (as at test)",
    )
    parser.add_argument("--hits", type=positive, default=1000, help="retrieval depth of the test runs")
    parser.add_argument("--rerank-batch-size", type=positive, default=8, help="rerank: queries per training batch")
    parser.add_argument("--rerank-negatives", type=positive, default=3, help="rerank: BM25 negatives per query")
    parser.add_argument("--rerank-max-length", type=MAX_LENGTH, default=128, help="rerank: query+passage tokens")
    parser.add_argument("--rerank-depth", type=positive, default=100, help="rerank: passages re-scored per query")
    parser.add_argument(
        "--threads",
        type=positive,
        default=cli.default_threads(),
        help="CPU threads for every step, Pyserini's included (default: $OMP_NUM_THREADS, else the idle cores)",
    )
    parser.add_argument(
        "--test-picked",
        action="store_true",
        help="retrieval: encode and search the test queries only with each method's learning rate its dev set picks "
        "(the other rates are reported by their dev values, and by test where an earlier command searched them), "
        "as a sweep is used, at a fraction of the CPU time",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The study's settings from its command line (:func:`build_parser`)."""
    return StudySettings(
        data=resolve_beir(args.data).resolve(),
        output=args.output,
        backbone=args.backbone,
        steps=args.steps,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        eval_budget=args.eval_budget,
        keep_best=args.keep_best,
        train_passage_length=args.train_passage_length,
        dev_queries=args.dev_queries,
        dev_depth=args.dev_depth,
        hits=args.hits,
        rerank_batch_size=args.rerank_batch_size,
        rerank_negatives=args.rerank_negatives,
        rerank_max_length=args.rerank_max_length,
        rerank_depth=args.rerank_depth,
        threads=args.threads,
        dry_run=args.dry_run,
        test_picked=args.test_picked,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    variants = study_entries(args.methods)
    settings = settings_from_args(args)
    cli.use_threads(args.threads)
    stages = ("retrieval", "rerank") if args.stage == "all" else (args.stage,)
    runs = sum(len(seeds_of(variant, args.seeds, args.seed_methods)) for variant in variants) * len(stages)
    study = Study(settings, planned_runs=runs)
    print(
        f"petir.reproduce: {', '.join(stages)} on {settings.data.name}: {len(variants)} methods, seeds "
        f"{','.join(map(str, args.seeds))} ({runs} training runs; finished ones are reused), {args.threads} threads",
        flush=True,
    )
    for stage in stages:
        run_stage = study.retrieval if stage == "retrieval" else study.rerank
        rows = run_stage(variants, args.seeds, args.seed_methods)
        if not args.dry_run:
            marks = significance(rows, read_qrels(study.qrels), args.output)
            write_tables(rows, args.output / f"results-{stage}", marks, PAPER[stage])
            chosen = set(chosen_on_dev(rows).values())  # one curve per method: the rate its dev set picked
            picked = [variant for variant in variants if variant in chosen]
            plot_convergence(args.output, stage, {v: seeds_of(v, args.seeds, args.seed_methods) for v in picked})
            if stage == "rerank":
                depths = [depth for depth in SWEEP_DEPTHS if depth <= args.rerank_depth]
                sweep = depth_sweep(rows, read_qrels(study.qrels), args.output, depths)
                (args.output / "results-rerank-depth.md").write_text(DEPTH_SWEEP_NOTE + "\n\n" + sweep + "\n")
            print((args.output / f"results-{stage}.md").read_text())
    print(study.timing_summary())


if __name__ == "__main__":
    cli.run(main)
