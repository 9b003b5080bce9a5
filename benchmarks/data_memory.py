"""Peak memory of training and re-ranking on MS MARCO-format files of growing size: it must not grow with the file.

Writes synthetic MS MARCO-format files (not committed; ``--scratch``, default a temporary directory) for each
``--lines`` size N: ``collection.tsv`` (N passages "pid<TAB>text", ~60 words each), ``queries.tsv`` (N/10 queries)
and ``triples.tsv`` (N lines "qid<TAB>pid<TAB>pid"). Then, each in a fresh process whose peak resident set size
(``ru_maxrss``) is read by its parent:

- ``petir.train --triples --corpus --queries`` (a 2-layer random BERT, IAA-L, 20 steps, batch 16, 50 held-out dev
  lines): first run (it builds the offset and id indexes in ``$PETIR_CACHE``) and second run (indexes cached);
- ``petir.rerank --corpus collection.tsv`` on a 200-query x 50-passage run of random pids, with the backbone itself
  as the model (its mean-pooled cosine: which model scores does not change what grows with the file, the
  passages read in place).

Start-up time is the time to the first training step (the offset/id index build included on a first run).
Writes ``docs/results/data-memory.{json,md}``::

    python benchmarks/data_memory.py                          # 1 M and 10 M lines: ~15 minutes, ~8 GB of disk
    python benchmarks/data_memory.py --lines 10000,100000     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
WORDS = np.array("the cat sat on a mat protein gene cell cancer risk increase study dog".split())

MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
first_step = None
for line in process.stdout:
    if first_step is None and ("training:" in line or "re-ranking:" in line):
        first_step = time.perf_counter() - started
    last = line
code = process.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{code} {peak:.1f} {time.perf_counter() - started:.1f} {first_step or 0:.1f}")
"""


def write_files(directory: Path, lines: int) -> dict[str, Path]:
    """collection.tsv, queries.tsv, triples.tsv and a first-stage run for re-ranking, written in chunks."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {name: directory / f"{name}.tsv" for name in ("collection", "queries", "triples")}
    queries = max(lines // 10, 100)
    chunk = 100_000
    with open(paths["collection"], "w") as out:
        for first in range(0, lines, chunk):
            text = [" ".join(row) for row in WORDS[rng.integers(0, len(WORDS), (min(chunk, lines - first), 60))]]
            out.writelines(f"{first + i}\t{passage}\n" for i, passage in enumerate(text))
    with open(paths["queries"], "w") as out:
        out.writelines(f"q{i}\t{' '.join(WORDS[rng.integers(0, len(WORDS), 8)])}\n" for i in range(queries))
    with open(paths["triples"], "w") as out:
        for first in range(0, lines, chunk):
            size = min(chunk, lines - first)
            q, p, n = rng.integers(0, queries, size), rng.integers(0, lines, size), rng.integers(0, lines, size)
            out.writelines(f"q{a}\t{b}\t{c}\n" for a, b, c in zip(q, p, n, strict=True))
    paths["topics"] = directory / "topics.tsv"
    paths["topics"].write_text("".join(f"q{i}\tcat gene risk study\n" for i in range(200)))
    paths["run"] = directory / "run.trec"
    pids = rng.integers(0, lines, (200, 50))
    paths["run"].write_text(
        "".join(
            f"q{i} Q0 {pid} {rank + 1} {50 - rank} bm25\n"
            for i in range(200)
            for rank, pid in enumerate(dict.fromkeys(pids[i]))
        )
    )
    return paths


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, env=env)
    code, peak, wall, first = result.stdout.split()
    if code != "0":
        raise SystemExit(f"data_memory: {' '.join(argv[:4])} failed (exit {code})")
    return {"peak_rss_mb": float(peak), "wall_s": float(wall), "startup_s": float(first)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", default="1000000,10000000", help="comma-separated file sizes in lines")
    parser.add_argument("--scratch", type=Path, help="where the synthetic files go (default: a temporary directory)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for data-memory.{json,md}")
    args = parser.parse_args(argv)
    from petir.backbone import random_backbone

    results: dict[str, Any] = {"sizes": {}}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        root = Path(scratch)
        backbone = random_backbone(
            root / "backbone",
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS],
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PETIR_CACHE": str(root / "cache")}
        for lines in (int(n) for n in args.lines.split(",")):
            began = time.perf_counter()
            paths = write_files(root / f"data-{lines}", lines)
            row: dict[str, Any] = {
                "write_s": round(time.perf_counter() - began, 1),
                "file_mb": {name: round(path.stat().st_size / 2**20, 1) for name, path in paths.items()},
            }
            train = ["-m", "petir.train", "--triples", str(paths["triples"]), "--corpus", str(paths["collection"])]
            train += ["--queries", str(paths["queries"]), "--backbone", str(backbone), "--method", "iaa-l"]
            train += ["--steps", "20", "--batch-size", "16", "--dev-queries", "50", "--eval-every", "0"]
            train += ["--device", "cpu", "--threads", "1", "--save-every", "1000"]
            for run in ("first", "second"):
                row[f"train_{run}"] = measure(
                    [sys.executable, *train, "--output", str(root / f"run-{lines}-{run}")], env
                )
                print(f"data_memory: {lines:,} lines, train ({run} run): {row[f'train_{run}']}", file=sys.stderr)
            rerank = ["-m", "petir.rerank", "--run", str(paths["run"]), "--topics", str(paths["topics"])]
            rerank += ["--corpus", str(paths["collection"]), "--model", str(backbone), "--depth", "50"]
            rerank += ["--output", str(root / f"rerank-{lines}.trec"), "--device", "cpu"]
            row["rerank"] = measure([sys.executable, *rerank], env)
            print(f"data_memory: {lines:,} lines, rerank: {row['rerank']}", file=sys.stderr)
            results["sizes"][str(lines)] = row
            for path in paths.values():
                path.unlink()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "data-memory.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "data-memory.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| lines | files (MB) | train, 1st run: peak RSS MB / start-up s | train, cached: peak RSS MB / start-up s "
        "| rerank --corpus: peak RSS MB / wall s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, row in results["sizes"].items():
        files = sum(mb for name, mb in row["file_mb"].items() if name in ("collection", "queries", "triples"))
        first, second, rerank = row["train_first"], row["train_second"], row["rerank"]
        lines.append(
            f"| {int(size):,} | {files:,.0f} | {first['peak_rss_mb']:.0f} / {first['startup_s']:.1f} | "
            f"{second['peak_rss_mb']:.0f} / {second['startup_s']:.1f} | "
            f"{rerank['peak_rss_mb']:.0f} / {rerank['wall_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
