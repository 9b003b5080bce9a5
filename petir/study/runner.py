"""The study's runner: its settings, what a stage of it is (:class:`StudyStage`), and :class:`Study`, which runs
each documented command once, logs it to a replayable ``commands.sh`` and reports progress. The stages
(:mod:`petir.study`) are given to it; it never asks which one it runs."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petir import cli
from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
from petir.card import add_test_results
from petir.data import corpus_path, read_json
from petir.datasets import load_beir
from petir.errors import PetirError
from petir.evaluate import read_results
from petir.files import check_output, foreign_entries, listing, remove_output, write_json_atomic
from petir.models import CARD_FILE, STATE_FILE
from petir.run_directory import METRICS_FILE, MODEL_DIR, SUMMARY_FILE, read_summary, resumable
from petir.study.entries import study_entry
from petir.study.report import dev_curve, steps_to_fraction
from petir.workspace import QRELS_FILE, TOPICS_FILE, Workspace

POSITIVE = cli.Bounded(int, minimum=1)

#: Rows of a study's results table, one per run (method, seed, metrics...).
Rows = list[dict[str, Any]]
#: Each first stage's run of the test queries, in its run directory of the study.
TEST_RUN_FILE = "test.run.trec"
#: A command of the study: ``python -m`` arguments, with ``"OUTPUT"`` where it writes its output.
Command = list[object]


class NotMade(PetirError):
    """A step ``--report-only`` would have had to run: its output is not in the study directory."""

    def __init__(self, missing: str):
        self.missing = missing  # "rerank/iaa-l/seed3 is not trained yet"
        super().__init__(f"--report-only: {missing}; run the study without --report-only to make it")


class StudyStage:
    """A task's stage of the study (``python -m petir.reproduce STAGE``, and ``benchmarks/gpu_study.py``): what its
    training runs add to ``petir.train``, what the stage runs and reports. The runner (:class:`Study`) and the tables
    are shared; everything a stage does differently is here, so the runner never asks which stage it runs. Stages
    are registered by task name in :data:`petir.study.STAGES`."""

    #: The task the stage trains (``petir.train --task``): its name is the stage's, and its directory in the study.
    task: str
    #: The row of the untrained model, the start full fine-tuning's gain is measured from (gain shares).
    untrained: str
    #: The first stage whose rows are the stage's main comparison ("" where rows have none; re-ranking: BM25).
    main_first_stage: str = ""
    #: The paper's figures for this stage, printed beside its results table: column -> study entry -> value.
    paper: Mapping[str, Mapping[str, float]] = {}
    #: A dataclass of the stage's own flags (each field a :func:`petir.cli.option`), made from the command line into
    #: ``StudySettings.stages[task name]``.
    options: type

    def train_flags(self, options: Any) -> dict[str, object]:
        """The ``petir.train`` flags this stage's runs add, from its ``options`` (batch size, lengths, negatives)."""
        raise NotImplementedError

    def run(self, study: Study, variants: Sequence[str], seeds: Sequence[int], seed_variants: Sequence[str]) -> Rows:
        """Train every variant (with its seeds: :func:`petir.study.entries.seeds_of`), test it, and return the rows
        of the stage's results table (baselines first)."""
        raise NotImplementedError

    def first_stages(self, study: Study, seed: int) -> dict[str, Path]:
        """Test runs this stage offers a later stage to re-rank, by name (for ``seed``'s trained runs); none here."""
        return {}

    def report(self, study: Study, rows: Rows) -> None:
        """Write what this stage reports beyond its results table and convergence plot; nothing here."""

    def gpu_inputs(self, root: Path) -> tuple[Path, ...]:
        """Files of the study directory ``root`` a GPU machine needs carried to run this stage's GPU steps."""
        return ()

    def gpu_steps(
        self, settings: StudySettings, run_dir: Path, corpus: Path, device: str
    ) -> list[tuple[Command, Path]]:
        """What a run of this stage does on a GPU machine after training, as (command, output) pairs; none here."""
        return []


@dataclass
class StudySettings:
    """What every stage's runs share (``petir.reproduce``'s flags), and each stage's own options (``stages``: task
    name -> its :attr:`StudyStage.options`)."""

    data: Path = cli.option(
        Path("scifact"),
        "BEIR dataset with train and test qrels: a directory, or a name looked up in "
        "$PETIR_DATA, ../shared/data and the cache, else downloaded",
    )
    output: Path = field(default=Path())  # the study directory: a required flag (build_parser)
    backbone: str = cli.option(DEFAULT_BACKBONE, "BERT-family model name or directory")
    steps: int = cli.option(150, "training steps per run", bounds=POSITIVE)
    eval_every: int = cli.option(15, "dev evaluation interval (convergence curves)", bounds=cli.Bounded(int, minimum=0))
    eval_budget: float = cli.option(
        0.25, "most share of training time dev checks may take (petir.train)", bounds=cli.Bounded(float, minimum=0)
    )
    keep_best: bool = cli.option(
        True,
        "each run saves its best dev check, step 0 included, not its last step (petir.train's default): the rule "
        "that lets the dev set pick every method's training length; --no-keep-best saves the last step",
    )
    dev_queries: int | None = cli.option(
        None,
        "training queries held out as dev set (default: petir.train's, 15 %% of them within 50 and 200)",
        bounds=cli.Bounded(int, minimum=0),
    )
    dev_depth: int = cli.option(100, "rerank dev: the BM25 top-k each dev query re-ranks (as at test)", bounds=POSITIVE)
    hits: int = cli.option(1000, "retrieval depth of the test runs", bounds=POSITIVE)
    threads: int = cli.threads_option("CPU threads for every step, Pyserini's included")
    patience: int = cli.option(
        0,
        "each run stops once this many dev checks in a row have not beaten its best (petir.train --patience); "
        "--steps is then the cap",
        bounds=cli.Bounded(int, minimum=0),
    )
    dry_run: bool = cli.option(False, "print the commands without running them")
    report_only: bool = cli.option(
        False,
        "run nothing: write the tables from the runs and test results already in --output; a run or result not "
        "there is left out, each named on stderr (a study stopped early, or lanes run in other directories and "
        "copied in)",
    )
    stages: dict[str, Any] = field(default_factory=dict)


COMMANDS_FILE = "commands.sh"
#: Beside each run directory (RUN.settings.json): the petir.train command that made it, compared on every re-run.
SETTINGS_SUFFIX = ".settings.json"
#: What the study derives from a trained run inside its directory (test runs, their metrics, the Faiss index),
#: discarded with the run when --overwrite trains it again with other settings.
DERIVED_OUTPUTS = ("test.*", "faiss-index")


def train_command(settings: StudySettings, stage: StudyStage, name: str, seed: int, run_dir: Path) -> list[object]:
    """The ``petir.train`` argv of one run of the study (also what benchmarks/gpu_study.py runs on a GPU)."""
    entry = study_entry(name)
    pet = [item for key, value in entry.options.items() for item in ("--pet", f"{key}={value}")]
    stage_flags = stage.train_flags(settings.stages[stage.task])
    return [
        "petir.train",
        *cli.flags(data=settings.data, task=stage.task, backbone=settings.backbone, method=entry.variant),
        *(cli.flags(budget=entry.budget) if entry.budget else []),
        *pet,
        *(["--lr", str(entry.learning_rate)] if entry.learning_rate is not None else []),
        *cli.flags(steps=settings.steps, eval_every=settings.eval_every, seed=seed),
        *cli.flags(eval_budget=settings.eval_budget),
        *([] if settings.keep_best else ["--no-keep-best"]),
        *(cli.flags(patience=settings.patience) if settings.patience else []),
        *dev_flags(settings),
        *cli.flags(threads=settings.threads, output=run_dir),
        *cli.flags(**stage_flags),
    ]


def dev_flags(settings: StudySettings) -> list[str]:
    """The dataset's own dev split where it has one (qrels/dev.tsv), else training queries held out."""
    dev_qrels = settings.data / "qrels" / "dev.tsv"
    if dev_qrels.exists():
        held_out = cli.flags(dev_qrels=dev_qrels)
    else:
        held_out = cli.flags(dev_queries=settings.dev_queries) if settings.dev_queries is not None else []
    return [*held_out, *cli.flags(dev_depth=settings.dev_depth)]


def check_study_directory(output: Path, stages: Sequence[str]) -> Path:
    """A study directory is new, empty, or one a study wrote, which a re-run continues (finished runs are reused);
    a directory holding anything else is refused. What marks a study's: its script, or a stage directory
    (``stages``: their names; benchmarks/gpu_study.py writes those alone)."""
    check_output(output, directory=True)
    found = foreign_entries(output)
    marks = (COMMANDS_FILE, *stages)
    if found and not set(marks) & set(found):
        raise PetirError(
            f"--output {output} is not empty ({listing(found)}) and is not a petir study directory (none of "
            f"{', '.join(marks)}); pick a new or empty directory"
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

    def __init__(
        self, settings: StudySettings, stages: Mapping[str, StudyStage], planned_runs: int, overwrite: bool = False
    ):
        """``overwrite``: train again a finished or unfinished run whose settings differ from this command's."""
        self.s = settings
        self.overwrite = overwrite
        self.stages = stages  # every stage of the study, by name (those this invocation runs, and the others)
        self.root = check_study_directory(settings.output, list(stages))
        self.topics = self.root / TOPICS_FILE
        self.qrels = self.root / QRELS_FILE
        if not self.qrels.exists():  # a new study: nothing to report
            self._refuse_in_report_only(self.qrels, "made")
        self.root.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.timings: list[tuple[str, float]] = []  # (command, seconds) of every command this invocation ran
        self.planned_runs, self.done_runs, self.run_seconds = planned_runs, 0, 0.0
        if not (self.root / COMMANDS_FILE).exists():
            self._write_script_header()
            self._log_line('CACHE=$(python -m petir.workspace --data "$DATA" --output "$OUT")')
        self.workspace = Workspace(
            corpus_path(settings.data), load_beir(settings.data, "test").corpus, settings.threads
        )
        self.paths = {str(settings.data): "$DATA", str(self.root.resolve()): "$OUT", self.backbone_dir(): "$BACKBONE"}
        self.paths[str(self.workspace.root)] = "$CACHE"
        if not self.qrels.exists():  # logged above as the line that sets $CACHE
            workspace = cli.flags(data=settings.data.resolve(), output=self.root.resolve(), threads=settings.threads)
            self.run("petir.workspace", *workspace, log=False)

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
            f"BACKBONE=${{BACKBONE:-{shlex.quote(self.backbone_dir())}}}\n"
            f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{self.s.threads}}}\n"
            'mkdir -p "$OUT"\n'
        )

    def backbone_dir(self) -> str:
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

    # -- the steps every stage takes ---------------------------------------------------------------------------
    def train(self, stage: str, variant: str, seed: int) -> Path:
        run_dir = self.root / stage / variant / f"seed{seed}"
        self.announce(stage, variant, seed)
        command = train_command(self.s, self.stages[stage], variant, seed, run_dir)
        redo = self._settings_changed(run_dir, command)
        if (run_dir / SUMMARY_FILE).exists() and not redo:
            return run_dir
        self._refuse_in_report_only(run_dir, "trained")
        if redo:
            for pattern in DERIVED_OUTPUTS:
                for path in run_dir.glob(pattern):
                    remove_output(path)
        if not self.s.dry_run:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(_settings_file(run_dir), {"command": run_settings(command)})
        self.run(*command, *(["--overwrite"] if redo else continue_flags(run_dir)))
        return run_dir

    def _settings_changed(self, run_dir: Path, command: list[object]) -> bool:
        """Whether the run in ``run_dir`` was made by other settings than ``command``'s (then: refused, or redone with
        ``--overwrite``). A run without a settings record (a study of an older petir) is taken as it is."""
        path = _settings_file(run_dir)
        if not run_dir.exists() or not path.exists():
            return False
        recorded = read_json(path, "study run's settings", f"remove {path} and rerun", {"command": tuple[str, ...]})
        before, now = _pairs(recorded["command"]), _pairs(run_settings(command))
        if before == now:
            return False
        if not self.overwrite:
            changed = [f"{' '.join(pair)} (was {_value(before, pair[0])})" for pair in now if pair not in before]
            changed += [f"no {' '.join(pair)}" for pair in before if pair[0] not in {p[0] for p in now}]
            raise PetirError(
                f"{run_dir} was trained with other settings than this command's: {', '.join(changed)}; pass "
                "--overwrite to train it again (its test runs are redone too), or pick a new --output"
            )
        return True

    def produce(self, output: Path, *argv: object) -> Path:
        """Run a command that writes ``output`` (given as the placeholder ``OUTPUT`` in ``argv``) into a partial
        path first and rename it when the command succeeds, so an interrupted command is redone, not trusted."""
        if output.exists():
            return output
        self._refuse_in_report_only(output, "made")
        partial = self._partial(output)
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        self.run(*argv, output=output)
        if not self.s.dry_run:
            partial.rename(output)
        return output

    def _refuse_in_report_only(self, output: Path, what: str) -> None:
        if self.s.report_only:
            raise NotMade(f"{output.relative_to(self.root)} is not {what} yet")

    @contextlib.contextmanager
    def left_out_if_not_made(self, what: str) -> Iterator[None]:
        """Around one run's steps: under ``--report-only``, a run whose training or test result is not there is
        left out of the tables (named in one line on stderr) instead of ending the report."""
        try:
            yield
        except NotMade as not_made:
            print(f"petir.reproduce: {what} left out (--report-only): {not_made.missing}", file=sys.stderr, flush=True)

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

    def record_test_results(self, model_dir: Path, results: dict[str, Any], how: str) -> None:
        """A model's test numbers, as a stage computed them (``how``), into its card: the study trained the model,
        so its card is the study's to complete. A dry run computes none and writes nothing; a run copied in without
        its model directory (``--report-only`` over lanes kept small) has no card to complete."""
        scores = {name: value for name, value in results.items() if isinstance(value, float)}
        if scores and (model_dir / CARD_FILE).is_file():
            add_test_results(model_dir, self.s.data.name, scores, f"{how}; trec_eval -c; petir.reproduce")

    def first_stages(self, seed: int) -> dict[str, Path]:
        """The test runs the study's stages offer a later stage to re-rank, by name (BM25; ``seed``'s best dense
        run)."""
        return {name: run for stage in self.stages.values() for name, run in stage.first_stages(self, seed).items()}

    # -- one result row ----------------------------------------------------------------------------------------
    def row(self, variant: str, seed: int, run_dir: Path) -> dict[str, Any]:
        """A trained run's row of a results table (its stage adds the test metrics)."""
        if self.s.dry_run:
            return {"method": variant, "seed": seed}
        summary = read_summary(run_dir / SUMMARY_FILE)
        curve = dev_curve(run_dir / METRICS_FILE)
        kept = summary.get("kept")  # --keep-best: the dev check whose state was saved
        state = run_dir / MODEL_DIR / STATE_FILE
        return {
            "method": variant,
            "seed": seed,
            "trainable": summary["parameters"]["trainable"],
            "trainable_%": summary["parameters"]["percent"],
            "state_mb": state.stat().st_size / 2**20 if state.exists() else None,  # absent: weights left where trained
            "train_s": summary["wall_time_s"],
            "dev_s": summary.get("dev_time_s"),
            "peak_mem_mb": summary["peak_memory_mb"],
            "steps_to_95%": steps_to_fraction(curve, 0.95),
            "steps_to_95%_gain": steps_to_fraction(curve, 0.95, of_gain=True),
            "dev_ndcg@10": kept["dev"]["ndcg@10"] if kept else curve[-1][1] if curve else None,
            "kept_step": kept["step"] if kept else None,  # --keep-best: the training length its dev set picked
            "dev_se": (kept or {}).get("dev_se", summary.get("final_dev_se")),
            "lr": summary.get("config", {}).get("learning_rate"),  # the rate trained at: fixed, or picked on dev
        }


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def run_settings(command: Sequence[object]) -> list[str]:
    """What identifies a training run in a study: its ``petir.train`` argv without ``--threads`` (speed, not the
    result) and ``--output`` (its place)."""
    return [
        word for pair in _pairs(list(map(str, command))) if pair[0] not in ("--threads", "--output") for word in pair
    ]


def _settings_file(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + SETTINGS_SUFFIX)


def _pairs(words: Sequence[str]) -> list[tuple[str, ...]]:
    """An argv's flags with their values (``--no-keep-best`` alone), in order."""
    pairs: list[tuple[str, ...]] = []
    for word in words:
        if word.startswith("--") or not pairs:
            pairs.append((word,))
        else:
            pairs[-1] = (*pairs[-1], word)
    return pairs


def _value(pairs: list[tuple[str, ...]], flag: str) -> str:
    return " ".join(next((pair[1:] for pair in pairs if pair[0] == flag), ("unset",)))
