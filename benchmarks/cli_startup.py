"""How long every petir CLI takes to print its ``--help``: the start-up a user waits for before anything runs.

Each CLI (the console scripts of setup.cfg, one per ``python -m petir.<tool>``) runs ``--help`` ``--repeats`` times,
each in a fresh interpreter, beside two floors on the same machine: an empty interpreter, and one that imports
torch (which every CLI that trains or encodes needs). ``--source`` times another checkout (``--label`` names it),
so that a change can be measured against main in one session; the target is under 2 s. Writes
``docs/results/cli-startup.{json,md}`` (the runs of every label measured so far, one column each)::

    python benchmarks/cli_startup.py --source ../main --label before     # about a minute on 2 cores
    python benchmarks/cli_startup.py --label after

Start-up time is wall time, so it moves with whatever else runs on the machine: the table gives the median and the
fastest of the repeats, the load average around the measurement, and the median CPU time (user + system) of the
command, which moves far less with load and is about the wall time on idle cores (start-up is one thread).
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
#: What every CLI is timed against: nothing but Python, then Python importing torch.
FLOORS = {"python -c pass": ["-c", "pass"], "python -c 'import torch'": ["-c", "import torch"]}


def cli_modules() -> list[str]:
    """The CLIs: the modules setup.cfg's console scripts run (tests/test_packaging.py keeps that list whole)."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = [line.split("=")[0].strip() for line in lines]
    return sorted("petir." + name.removeprefix("petir-").replace("-", ".") for name in scripts)


def timings(arguments: list[str], source: Path, repeats: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of ``python ARGUMENTS`` in a fresh interpreter, ``repeats`` times, with
    ``source`` (and its Pyserini plug-in) first on the path and the output discarded; a failing command is an
    error, not a time."""
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{source / 'integrations' / 'pyserini'}"}
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, *arguments], env=env, cwd=source, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return walls, cpus


def measure(source: Path, repeats: int) -> dict[str, dict[str, float]]:
    """``{command: {"median": s, "min": s, "cpu": s}}`` for the floors and every CLI's ``--help``."""
    commands = {**FLOORS, **{f"{module} --help": ["-m", module, "--help"] for module in cli_modules()}}
    rows = {}
    for command, arguments in commands.items():
        walls, cpus = timings(arguments, source, repeats)
        row = {"median": statistics.median(walls), "min": min(walls), "cpu": statistics.median(cpus)}
        rows[command] = {key: round(value, 2) for key, value in row.items()}
        print(f"{command}: wall median {row['median']:.2f} s, fastest {row['min']:.2f} s, cpu {row['cpu']:.2f} s")
    return rows


def write_results(results: dict[str, dict]) -> None:
    """``cli-startup.json`` (every label measured) and its table, ``cli-startup.md``."""
    (RESULTS / "cli-startup.json").write_text(json.dumps(results, indent=1) + "\n")
    labels = list(results)
    lines = [
        "`--help` in a fresh interpreter (`python benchmarks/cli_startup.py`), seconds: wall time, median and fastest "
        "of the repeats, and the median CPU time (user + system; about the wall time on idle cores); target under 2 s.",
        "",
        "| command | " + " | ".join(f"{label}: wall median / fastest / CPU" for label in labels) + " |",
        "| --- |" + " ---: |" * len(labels),
    ]
    commands = dict.fromkeys(command for label in labels for command in results[label]["times"])
    for command in commands:
        cells = [results[label]["times"].get(command) for label in labels]
        shown = [f"{cell['median']:.2f} / {cell['min']:.2f} / {cell['cpu']:.2f}" if cell else "-" for cell in cells]
        lines.append(f"| `{command}` | " + " | ".join(shown) + " |")
    lines += ["", "Where each was measured:", ""]
    lines += [
        f"- {label}: {run['source']}, {run['when']}, {run['repeats']} repeats, {run['cores']} cores, load average "
        f"{run['load_before']} before and {run['load_after']} after"
        for label, run in results.items()
    ]
    (RESULTS / "cli-startup.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout to time (default: this one)")
    parser.add_argument("--label", default="this checkout", help="its column in the table")
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per command")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    times = measure(args.source.resolve(), args.repeats)
    run = {
        "source": str(args.source),
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "repeats": args.repeats,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "times": times,
    }
    path = RESULTS / "cli-startup.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    write_results({**results, args.label: run})


if __name__ == "__main__":
    main()
