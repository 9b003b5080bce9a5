"""A study's training runs on a GPU, several at once, for a machine without Pyserini or Java.

``python -m petir.reproduce`` runs everything on the CPU: BM25 (Java), ``petir.train``, ``petir.rerank`` or
``pyserini.encode``, fusion and trec_eval. On a lent GPU machine (torch and transformers, no Pyserini, no Java, no
network) this script runs the GPU-bound commands of each run, with the argv :func:`petir.study.runner.train_command`
builds, so that ``petir.reproduce`` with the same flags, back on the CPU machine, finds them done. At re-ranking it
trains and re-ranks (the CPU machine only fuses, evaluates and reports); at retrieval it trains, with its dev checks
(a dense search of the corpus), and the CPU machine encodes the corpus with the stock ``pyserini.encode`` and searches
the test queries. What differs from the CPU study, and why:

- BM25 is read, not run: ``--negatives-run`` gives ``petir.train`` the BM25 hits of the training and dev queries
  (the two runs petir.train caches on the CPU machine, concatenated: the same negatives and dev pools), and the test
  first stage of re-ranking is the study's own ``retrieval/bm25/test.run.trec``, carried along;
- passages come from the corpus file (``petir.rerank --corpus``) instead of the Lucene index;
- ``--device cuda`` (fp32) and ``--jobs`` runs at a time, in priority order (the order of ``--methods``, each
  entry's seeds together), until ``--deadline`` seconds: a run not finished by then is left out, not half-kept.

The output directory is the study's (same layout); ``--pack FILE`` writes it as a .tar.gz without checkpoints and
without files over ``--pack-limit-mb`` (a full fine-tuned model's 87 MB state: its run's state size stays blank).
Run it from the repository root; where petir is not installed, with ``PYTHONPATH=.``::

    PYTHONPATH=. python benchmarks/gpu_study.py rerank --output runs/gpu-rerank --data DATA --backbone MODEL_DIR \\
        --negatives-run train-dev.bm25.trec --methods full,adapter,iaa-l --seeds 1,2,3 --keep-best \\
        --steps 300 --eval-every 50 --eval-budget 2 --dev-depth 20 --rerank-depth 20 --hits 100 \\
        --jobs 8 --deadline 420 --pack $OUT/runs.tgz

At retrieval the same, with the retrieval stage's flags; back on the CPU machine, ``petir.reproduce retrieval
--test-picked`` encodes the corpus with each method's dev-picked rate only::

    PYTHONPATH=. python benchmarks/gpu_study.py retrieval --output runs/retrieval-gpu --data DATA \\
        --backbone sentence-transformers/all-MiniLM-L6-v2 --negatives-run train-dev.bm25.trec \\
        --methods adapter,adapter-lr3e-3 --seeds 1 --keep-best --eval-every 25 --eval-budget 1000 --jobs 20
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from petir import cli
from petir.data import corpus_path
from petir.ondisk import open_corpus, open_queries
from petir.reproduce import build_parser, settings_from_args
from petir.run_directory import SUMMARY_FILE
from petir.study import get_stage
from petir.study.entries import seeds_of, study_entries
from petir.study.runner import continue_flags, train_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    parser.prog = "python benchmarks/gpu_study.py"
    parser.description = __doc__
    parser.add_argument("--negatives-run", type=Path, required=True, help="BM25 hits of the train and dev queries")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--jobs", type=int, default=8, help="runs at a time")
    parser.add_argument("--deadline", type=float, default=420, help="seconds after which no run is started or kept")
    parser.add_argument("--pack", type=Path, help="write the output directory here as a .tar.gz")
    parser.add_argument("--pack-limit-mb", type=float, default=12, help="files larger than this stay out of --pack")
    return parser.parse_args(argv)


def run_one(argv: list[object], log: Path, deadline: float) -> bool:
    """``python -m ARGV`` with its output in ``log``; False if it failed or outlived the deadline."""
    with open(log, "a") as out:
        out.write("+ python -m " + " ".join(map(str, argv)) + "\n")
        out.flush()
        try:
            done = subprocess.run(
                [sys.executable, "-m", *map(str, argv)],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired:
            out.write("gpu_study: stopped at the deadline\n")
            return False
    return done.returncode == 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = settings_from_args(args)
    deadline = time.monotonic() + args.deadline
    root = settings.output
    stage = get_stage(args.stage)
    for needed in (*stage.gpu_inputs(root), args.negatives_run):
        if not needed.exists():
            sys.exit(f"gpu_study: {needed} is missing (run petir.reproduce on the CPU machine first, then carry it)")
    corpus = corpus_path(settings.data)
    len(open_corpus(corpus)), len(open_queries(settings.data / "queries.jsonl"))  # offsets built once, not per job
    plan = [
        (name, seed) for name in study_entries(args.methods) for seed in seeds_of(name, args.seeds, args.seed_methods)
    ]

    def job(name: str, seed: int) -> str:
        run_dir = root / args.stage / name / f"seed{seed}"
        steps = stage.gpu_steps(settings, run_dir, corpus, args.device)  # after training: e.g. re-rank BM25's run
        last_output = steps[-1][1] if steps else run_dir / SUMMARY_FILE
        if last_output.exists():
            return f"{name} seed {seed}: done before"
        if time.monotonic() >= deadline:
            return f"{name} seed {seed}: not started (deadline)"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "gpu_study.log"
        started = time.monotonic()
        train = train_command(settings, stage, name, seed, run_dir)
        train += [*cli.flags(negatives_run=args.negatives_run, device=args.device), *continue_flags(run_dir)]
        if not (run_dir / SUMMARY_FILE).exists() and not run_one(train, log, deadline):
            return f"{name} seed {seed}: training FAILED or cut (see {log})"
        for command, output in steps:  # a stage's test output is written to OUTPUT.partial, renamed when done
            partial = output.with_name(output.name + ".partial")
            partial.unlink(missing_ok=True)  # done but not renamed: redone (a re-ranking's scores are kept to resume)
            if not run_one([partial if arg == "OUTPUT" else arg for arg in command], log, deadline):
                return f"{name} seed {seed}: {command[0]} FAILED or cut (see {log})"
            partial.rename(output)
        return f"{name} seed {seed}: done in {time.monotonic() - started:.0f} s"

    started = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda entry: job(*entry), plan):
            print(f"gpu_study: [{time.monotonic() - started:5.0f} s] {line}", flush=True)
    if args.pack:
        pack(root, args.pack, args.pack_limit_mb)


def pack(root: Path, archive: Path, limit_mb: float) -> None:
    """The output directory as a .tar.gz, without checkpoints (resume state) and files over ``limit_mb``."""
    left_out = []

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "/checkpoint" in member.name or member.size > limit_mb * 2**20:
            left_out.append(member.name)
            return None
        return member

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=root.name, filter=keep)
    print(f"gpu_study: packed {root} into {archive} ({archive.stat().st_size / 2**20:.1f} MB); left out: {left_out}")


if __name__ == "__main__":
    main()
