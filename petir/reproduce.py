"""Reproduce the study at CPU scale: every PET method against full fine-tuning, per stage, with one command.

    python -m petir.reproduce retrieval --data ../shared/data/scifact --output runs/scifact-study

Each step runs the documented command line as a subprocess (they are written to OUTPUT/commands.sh as they run)
and is skipped when its result exists, so an interrupted study continues where it stopped (a training run only
where the settings recorded beside it are this command's: else it is refused, or redone with ``--overwrite``):

- retrieval: ``petir.train`` -> ``pyserini.encode`` (Faiss index) -> ``pyserini.search.faiss`` -> trec_eval,
  plus the BM25 and zero-shot backbone baselines through the same stock Pyserini commands;
- rerank: ``petir.train --task rerank`` -> ``petir.rerank`` of the BM25 run (every seed) and of the best dense run
  of the retrieval stage (first seed) -> trec_eval.

Results: OUTPUT/results-STAGE.{csv,md} (every run with its method's p-values, uncorrected and Holm-adjusted; then
mean ± standard deviation over seeds per method, with the marks that hold after the correction and each method's
share of full fine-tuning's gain over the untrained model), OUTPUT/gain-share.csv (that share per stage, one line
per method at its dev-picked rate, with its Holm-adjusted p-value against full fine-tuning), OUTPUT/gain-share-STAGE.png
(those shares as bars, each seed a dot) and OUTPUT/convergence-STAGE.png (dev nDCG@10 and training loss against
steps; scattered methods dashed, the rest solid).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from petir import cli
from petir.allocator import keep_freed_memory
from petir.data import read_qrels
from petir.datasets import resolve_beir
from petir.files import output_lock
from petir.pet import VARIANTS
from petir.study import STAGES, get_stage
from petir.study.entries import (
    ABLATIONS,
    MAIN_VARIANTS,
    seed_entry_list,
    seed_list,
    seeds_of,
    study_entries,
    unmatched_seed_entries,
)
from petir.study.plots import plot_convergence, plot_gain_share
from petir.study.report import GAIN_SHARE_FILE, chosen_on_dev, significance, write_gain_share, write_tables
from petir.study.runner import Study, StudySettings


@dataclass
class StudyPlan:
    """Which runs a study makes: its methods, and the seeds each runs with."""

    methods: str = cli.option(
        ",".join(VARIANTS),
        f"comma-separated, from: {', '.join([*VARIANTS, *ABLATIONS])}; each at the 0.5 %% preset, or NAME@6.7; "
        "NAME+r=8 sets a PET option (as petir.train's --pet; repeatable: iaa-l+r=17+ar=2); "
        "NAME-lr1e-4 trains at that learning rate (with several rates of a method, the tables mark the one dev picks); "
        '"" runs the baselines only',
    )
    seeds: list[int] = cli.option("1", "comma-separated seeds", parse=seed_list)
    seed_methods: list[str] = cli.option(
        ",".join(MAIN_VARIANTS),
        "comma-separated: entries run with every seed, named as in --methods (full-lr1e-4, not full); the others "
        "with the first seed only",
        parse=seed_entry_list,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m petir.reproduce", description=__doc__)
    parser.add_argument("stage", choices=(*STAGES, "all"), help="which stage of the study to run")
    parser.add_argument("--output", type=Path, required=True, help="study directory (runs, tables, plots)")
    cli.add_dataclass_flags(parser, StudySettings)
    cli.add_dataclass_flags(parser, StudyPlan)
    cli.add_overwrite_flag(parser, "a run trained with other settings than this command's, and its test runs")
    for name, stage in STAGES.items():
        cli.add_dataclass_flags(parser.add_argument_group(f"{name} stage"), stage.options)
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The study's settings from its command line (:func:`build_parser`), the dataset resolved to its directory."""
    values = cli.dataclass_values(StudySettings, args)
    return StudySettings(
        **{**values, "data": resolve_beir(values["data"]).resolve()},
        output=args.output,
        stages={name: cli.from_args(stage.options, args) for name, stage in STAGES.items()},
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report_only and (args.overwrite or args.dry_run):
        other = "--overwrite" if args.overwrite else "--dry-run"
        parser.error(f"--report-only runs nothing, so {other} has nothing to do; drop one of them")
    with output_lock(args.output, directory=True):  # one study per directory; each training run locks its own
        _run_study(args)


def _run_study(args: argparse.Namespace) -> None:
    variants = study_entries(args.methods)
    settings = settings_from_args(args)
    cli.use_threads(args.threads)
    keep_freed_memory()  # and the settings reach every petir.train it starts
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    runs = sum(len(seeds_of(variant, args.seeds, args.seed_methods)) for variant in variants) * len(stages)
    study = Study(settings, STAGES, planned_runs=runs, overwrite=args.overwrite)
    for name, rates in unmatched_seed_entries(variants, args.seed_methods).items():
        print(
            f"petir.reproduce: note: --seed-methods {name} names no entry of --methods; {', '.join(rates)} run with "
            "the first seed only (name them in --seed-methods as in --methods to run every seed)",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"petir.reproduce: {', '.join(stages)} on {settings.data.name}: {len(variants)} methods, seeds "
        f"{','.join(map(str, args.seeds))} ({runs} training runs; finished ones are reused), {args.threads} threads",
        flush=True,
    )
    for stage in stages:
        stage_runner = get_stage(stage)
        rows = stage_runner.run(study, variants, args.seeds, args.seed_methods)
        if not args.dry_run:
            tests = significance(rows, read_qrels(study.qrels), args.output)
            untrained = stage_runner.untrained
            write_tables(rows, args.output / f"results-{stage}", tests, stage_runner.paper or None, untrained)
            main_first_stage = stage_runner.main_first_stage
            write_gain_share(args.output / GAIN_SHARE_FILE, stage, rows, tests, untrained, main_first_stage)
            plot_gain_share(args.output, stage, rows, untrained, main_first_stage)
            chosen = set(chosen_on_dev(rows).values())  # one curve per method: the rate its dev set picked
            picked = [variant for variant in variants if variant in chosen]
            reported = {v: [row["seed"] for row in rows if row["method"] == v and not row.get("fused")] for v in picked}
            plot_convergence(args.output, stage, {v: sorted(set(seeds)) for v, seeds in reported.items()})
            stage_runner.report(study, rows)
            print((args.output / f"results-{stage}.md").read_text())
    print(study.timing_summary())


if __name__ == "__main__":
    cli.run(main)
