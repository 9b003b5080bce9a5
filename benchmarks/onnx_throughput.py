"""CPU throughput of petir models, torch vs onnxruntime: query encoding and re-ranking.

For the default backbone (all-MiniLM-L6-v2) with a PET method (iaa, the paper's IAA-L, and full as the plain-backbone
reference), each model is saved, exported with :func:`petir.onnx.export`, and timed end to end through the same
call a user makes (``encode``/``score``: tokenisation included), torch first, then its ONNX twin:

- query encoding, queries/s: SciFact test queries (synthetic sentences where the data is absent), batch 1 and 32;
- re-ranking, pairs/s: (SciFact test query, SciFact passage) pairs at max_length 256, batch 32.

Each measurement is the median of ``--repeats`` timed passes after a warm-up pass. The PET modules get random
non-zero weights (as if trained), so the graphs compute what a trained model's would.

Thread pools wait passively (``OMP_WAIT_POLICY=PASSIVE`` for torch's OpenMP, no spinning for onnxruntime) unless
``OMP_WAIT_POLICY`` is set: on a machine whose cores are shared with another job, busy-waiting OpenMP threads
make torch 10-40x slower at 2 threads (measured here: 0.48 s instead of 0.016 s per MiniLM query), which would
measure the contention, not the backends. ``OMP_WAIT_POLICY=ACTIVE`` gives both backends their busy-waiting
defaults, the right setting on an otherwise idle machine. Writes
``docs/results/onnx-throughput.{json,md,png}``::

    python benchmarks/onnx_throughput.py            # ~3-5 minutes on 2 cores
    python benchmarks/onnx_throughput.py --quick    # ~1 minute, fewer items and repeats
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP reads it once, when the runtime starts (see the module docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from petir.backbone import DEFAULT_BACKBONE
from petir.cli import HelpFormatter
from petir.datasets import load_beir
from petir.models import BiEncoder, CrossEncoder, PetModel
from petir.onnx import OnnxModel, export

REPO = Path(__file__).resolve().parents[1]
SPINNING = "0" if os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE" else "1"
RESULTS = REPO / "docs" / "results"
STEM = "onnx-throughput"

SYNTHETIC_WORDS = (
    "protein cell gene cancer risk increase study patients treatment effect expression mutation tumour "
    "response therapy clinical trial mice receptor pathway immune infection vaccine dose level blood brain"
).split()


def scifact_dir() -> Path | None:
    """SciFact from ``$PETIR_DATA`` or ``<repo>/../shared/data``; None where absent (nothing is downloaded)."""
    root = Path(os.environ.get("PETIR_DATA", REPO.parent / "shared" / "data"))
    return root / "scifact" if (root / "scifact" / "queries.jsonl").is_file() else None


def workload(n_queries: int, n_pairs: int) -> tuple[list[str], list[tuple[str, str]], str]:
    """(queries, (query, passage) pairs, where they came from). Each query is paired with its judged passages
    first, then with other passages, as a re-ranker sees a candidate pool."""
    directory = scifact_dir()
    if directory is None:
        rng = np.random.default_rng(0)
        sentence = lambda n: " ".join(rng.choice(SYNTHETIC_WORDS, n))  # noqa: E731
        queries = [sentence(int(rng.integers(6, 20))) for _ in range(n_queries)]
        pairs = [(queries[i % len(queries)], sentence(220)) for i in range(n_pairs)]
        return queries, pairs, "synthetic sentences (SciFact not found)"
    data = load_beir(directory, "test")
    qids = list(data.queries)[:n_queries]
    queries = [data.queries[qid] for qid in qids]
    others = iter(itertools.cycle(data.corpus.values()))
    pairs = []
    for qid in itertools.cycle(qids):
        if len(pairs) >= n_pairs:
            break
        judged = [data.corpus[docid] for docid in data.qrels[qid]]
        for document in [*judged, next(others), next(others)]:
            pairs.append((data.queries[qid], f"{document.title} {document.text}".strip()))
    return queries, pairs[:n_pairs], "SciFact test split"


def as_if_trained(model: PetModel) -> PetModel:
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def timed(run: Callable[[], np.ndarray], warmup: Callable[[], object], repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeats`` calls of ``run`` after one ``warmup`` call; and run's output."""
    warmup()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), output


def measure(
    name: str,
    method: str,
    unit: str,
    n_items: int,
    batch_size: int,
    repeats: int,
    call: Callable[[object, int, int], np.ndarray],
    models: dict[str, object],
) -> dict:
    """Time ``call(model, n, batch_size)`` for each backend; throughput in ``unit``/s and the outputs' max abs diff."""
    row = {"workload": name, "method": method, "unit": unit, "items": n_items, "batch_size": batch_size}
    outputs = {}
    for backend, model in models.items():
        seconds, outputs[backend] = timed(
            lambda model=model: call(model, n_items, batch_size),
            lambda model=model: call(model, min(n_items, batch_size), batch_size),
            repeats,
        )
        row[f"{backend}_seconds"] = seconds
        row[f"{backend}_per_second"] = n_items / seconds
    row["speedup"] = row["onnx_per_second"] / row["torch_per_second"]
    row["max_abs_diff"] = float(np.abs(outputs["onnx"] - outputs["torch"]).max())
    print(
        f"  {name:<28} {method:<10} torch {row['torch_per_second']:8.1f} {unit}/s   onnxruntime "
        f"{row['onnx_per_second']:8.1f} {unit}/s   x{row['speedup']:.2f}   max|diff| {row['max_abs_diff']:.1e}",
        flush=True,
    )
    return row


def machine(threads: int) -> dict:
    import onnxruntime
    import transformers

    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    return {
        "cpu": names[0] if names else platform.processor(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "onnxruntime_allow_spinning": SPINNING,
        "load_average_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
    }


def write_markdown(results: dict, path: Path) -> None:
    m = results["machine"]
    lines = [
        "# ONNX throughput: torch vs onnxruntime on CPU",
        "",
        f"`{results['command']}`",
        "",
        f"Backbone {results['backbone']}; data: {results['data']}. {m['cpu']}, {m['threads']} threads "
        f"(load average {m['load_average_1min_at_start']:.2f} at start, {results['load_average_1min_at_end']:.2f} "
        f"at end); torch {m['torch']}, onnxruntime {m['onnxruntime']}. End-to-end `encode`/`score` calls "
        f"(tokenisation included), median of {results['repeats']} timed passes after a warm-up; thread pools wait "
        f"{'passively' if m['onnxruntime_allow_spinning'] == '0' else 'actively (spinning)'} "
        f"(OMP_WAIT_POLICY={m['omp_wait_policy']}; see the script's docstring). A load average above the "
        f"{m['logical_cpus']} logical CPUs means other jobs shared them: the numbers are then lower bounds.",
        "",
        "| workload | method | items | torch /s | onnxruntime /s | speed-up | max abs diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['workload']} | {row['method']} | {row['items']} | {row['torch_per_second']:.1f} "
            f"{row['unit']}/s | {row['onnx_per_second']:.1f} {row['unit']}/s | x{row['speedup']:.2f} | "
            f"{row['max_abs_diff']:.1e} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    figure, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.8), squeeze=False)
    width = 0.38
    for axis, name in zip(axes[0], workloads, strict=True):
        subset = {row["method"]: row for row in rows if row["workload"] == name}
        x = np.arange(len(methods))
        for offset, backend, label in ((-width / 2, "torch", "torch"), (width / 2, "onnx", "onnxruntime")):
            values = [subset[m][f"{backend}_per_second"] if m in subset else 0 for m in methods]
            axis.bar(x + offset, values, width, label=label)
        for i, m in enumerate(methods):
            if m in subset:
                top = max(subset[m]["torch_per_second"], subset[m]["onnx_per_second"])
                axis.annotate(f"x{subset[m]['speedup']:.2f}", (i, top), ha="center", va="bottom", fontsize=9)
        axis.set_xticks(x, methods)
        axis.set_title(name, fontsize=10)
        axis.set_ylabel(f"{next(iter(subset.values()))['unit']} per second")
        axis.margins(y=0.15)
    m = results["machine"]
    figure.suptitle(
        f"torch vs onnxruntime, CPU ({m['threads']} threads), {results['backbone'].split('/')[-1]}",
        fontsize=11,
        x=0.02,
        ha="left",
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", ncol=2, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/onnx_throughput.py", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats (about a minute)")
    parser.add_argument("--methods", default="iaa,full", help="comma-separated PET methods")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--queries", type=int, default=300, help="queries encoded per timed pass")
    parser.add_argument("--pairs", type=int, default=128, help="(query, passage) pairs scored per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (median reported)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the .json, .md and .png")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.pairs, args.repeats = min(args.queries, 64), min(args.pairs, 64), min(args.repeats, 2)

    torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's thread count (petir.onnx)
    queries, pairs, source = workload(args.queries, args.pairs)

    def encode_queries(model, n: int, batch_size: int) -> np.ndarray:
        return model.encode(queries[:n], "query", batch_size)

    def score_pairs(model, n: int, batch_size: int) -> np.ndarray:
        return model.score([q for q, _ in pairs[:n]], [p for _, p in pairs[:n]], batch_size)

    results = {
        "command": " ".join(["python benchmarks/onnx_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "backbone": DEFAULT_BACKBONE,
        "data": source,
        "repeats": args.repeats,
        "machine": machine(args.threads),
        "rows": [],
    }
    print(f"{source}: {len(queries)} queries, {len(pairs)} pairs; {args.threads} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="petir-onnx-bench-") as scratch:
        for method in args.methods.split(","):
            for task_class, call, n_items, unit, tests in (
                (
                    BiEncoder,
                    encode_queries,
                    len(queries),
                    "queries",
                    [("query encoding, batch 1", 1), ("query encoding, batch 32", 32)],
                ),
                (CrossEncoder, score_pairs, len(pairs), "pairs", [("re-ranking (256 tokens), batch 32", 32)]),
            ):
                directory = as_if_trained(task_class(DEFAULT_BACKBONE, method)).save(
                    Path(scratch) / f"{task_class.task}-{method}"
                )
                start = time.perf_counter()
                export(directory)
                print(f"{task_class.task} {method}: exported in {time.perf_counter() - start:.0f} s", flush=True)
                models = {
                    "torch": PetModel.load(directory),
                    "onnx": OnnxModel.load(directory, session_config={"session.intra_op.allow_spinning": SPINNING}),
                }
                for name, batch_size in tests:
                    results["rows"].append(measure(name, method, unit, n_items, batch_size, args.repeats, call, models))
                del models
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{STEM}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.output / f"{STEM}.md")
    plot(results, args.output / f"{STEM}.png")
    print(f"wrote {args.output / STEM}.{{json,md,png}}")


if __name__ == "__main__":
    main()
