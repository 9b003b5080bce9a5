"""Training step time and CPU time with glibc's default malloc settings and with petir's (petir/allocator.py).

Each run is a fresh ``petir.train`` process: the study's re-ranking recipe (IAA-L at its 0.5 % preset on the default
backbone, 8 queries x 4 passages of 128 tokens a step, one thread), ``--steps`` steps, no dev check. The two settings
alternate (default, petir's, default, ...), so a change in other load hits both alike. Per run: the training loop's
seconds a step (the trainer's own clock, loading excluded), and the process's user and kernel CPU seconds and peak
resident memory (``wait4``'s rusage, loading included). Kernel time is what the settings remove: glibc unmapping and
the kernel zeroing again the blocks each step frees. Where other jobs take the run's core, wall times are upper bounds;
CPU seconds hold better. Writes ``docs/results/allocator.{json,md}``::

    python benchmarks/allocator.py                      # 2 x 2 runs of 40 steps: ~12 minutes on 2 cores
    python benchmarks/allocator.py --steps 10 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
SETTINGS = {"glibc default": {"PETIR_MALLOC": "default"}, "petir": {}}
#: The study's re-ranking recipe (petir.reproduce rerank's training flags), without dev checks.
RECIPE = ["--task", "rerank", "--method", "iaa-l", "--batch-size", "8", "--negatives", "3", "--max-length", "128"]
RECIPE += ["--eval-every", "0", "--dev-queries", "0", "--threads", "1", "--save-every", "100000"]


def run(argv: list[str], env: dict[str, str], output: Path) -> dict[str, float]:
    """One training process: its seconds a step (summary.json) and its rusage."""
    process = subprocess.Popen([*argv, "--output", str(output)], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"allocator: petir.train failed (exit {os.waitstatus_to_exitcode(status)})")
    summary = json.loads((output / "summary.json").read_text())
    return {
        "step_s": summary["wall_time_s"] / summary["steps"],
        "user_s": usage.ru_utime,
        "kernel_s": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| malloc settings | runs | s/step (median) | user CPU s | kernel CPU s | kernel share | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results["runs"].items():
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        share = median["kernel_s"] / (median["user_s"] + median["kernel_s"])
        lines.append(
            f"| {name} | {len(runs)} | {median['step_s']:.2f} | {median['user_s']:.0f} | {median['kernel_s']:.0f} "
            f"| {share:.0%} | {median['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="scifact", help="BEIR dataset with train qrels (petir.train's --data)")
    parser.add_argument("--backbone", help="petir.train's --backbone (default: its default)")
    parser.add_argument("--steps", type=int, default=40, help="training steps a run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for allocator.{json,md}")
    args = parser.parse_args(argv)
    train = [sys.executable, "-m", "petir.train", "--data", args.data, "--steps", str(args.steps), *RECIPE]
    train += ["--backbone", args.backbone] if args.backbone else []
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PETIR_MALLOC"}
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.libc_ver()[0]} {platform.libc_ver()[1]}",
        "steps": args.steps,
        "load_average_start": os.getloadavg()[0],
        "runs": {name: [] for name in SETTINGS},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name, extra in SETTINGS.items():
                began = time.perf_counter()
                row = run(train, {**inherited, "OMP_NUM_THREADS": "1", **extra}, Path(scratch) / f"{name}-{repeat}")
                results["runs"][name].append(row)
                took = time.perf_counter() - began
                print(f"allocator: {name}, run {repeat + 1}: {row} ({took:.0f} s)", file=sys.stderr)
    results["load_average_end"] = os.getloadavg()[0]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "allocator.json").write_text(json.dumps(results, indent=2) + "\n")
    note = (
        f"petir.train, the study's re-ranking recipe (IAA-L 0.5 %, one thread), {args.steps} steps a run, settings "
        f"alternating; {results['machine']}; 1-minute load average {results['load_average_start']:.1f} at start, "
        f"{results['load_average_end']:.1f} at end (above {os.cpu_count()}, other jobs took this run's core at times: "
        "wall times are upper bounds). CPU seconds and peak RSS are the whole process's, loading included."
    )
    (args.output / "allocator.md").write_text(note + "\n\n" + table(results) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
