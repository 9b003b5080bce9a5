"""CPU throughput of petir models, torch vs onnxruntime fp32 vs onnxruntime int8: encoding and re-ranking.

For the default backbone (all-MiniLM-L6-v2) with a PET method (iaa, the paper's IAA-L, and full as the plain-backbone
reference), each model is saved, exported with :func:`petir.onnx.export`, and timed end to end through the same
call a user makes (``encode``/``score``: tokenisation included), torch first, then its ONNX twin (fp32), then the
int8 twin (``model.int8.onnx``: onnxruntime's dynamic quantisation, int8 weights, activations quantised on the fly):

- query encoding, queries/s: SciFact test queries (synthetic sentences where the data is absent), batch 1 and 32;
- passage encoding, passages/s: SciFact passages at max_length 256, batch 32;
- re-ranking, pairs/s: (SciFact test query, SciFact passage) pairs at max_length 256, batch 32.

With ``--retriever`` and ``--reranker`` (trained model directories), the quality cost of int8 is measured on the
SciFact test split too: nDCG@10 of dense retrieval over the whole corpus (exact inner-product search, as a flat
Faiss index) and of re-ranking the ``--run``'s top ``--depth``, torch fp32 against onnxruntime int8, with the
corpus encoding and re-ranking times.

Each measurement is the median of ``--repeats`` timed passes after a warm-up pass. The PET modules get random
non-zero weights (as if trained), so the graphs compute what a trained model's would.

Thread pools wait passively (``OMP_WAIT_POLICY=PASSIVE`` for torch's OpenMP, no spinning for onnxruntime) unless
``OMP_WAIT_POLICY`` is set: on a machine whose cores are shared with another job, busy-waiting OpenMP threads
make torch 10-40x slower at 2 threads (measured here: 0.48 s instead of 0.016 s per MiniLM query), which would
measure the contention, not the backends. ``OMP_WAIT_POLICY=ACTIVE`` gives both backends their busy-waiting
defaults, the right setting on an otherwise idle machine. Writes
``docs/results/onnx-throughput.{json,md,png}``::

    python benchmarks/onnx_throughput.py            # ~5 minutes on 2 cores
    python benchmarks/onnx_throughput.py --quick    # ~1 minute, fewer items and repeats
    python benchmarks/onnx_throughput.py --retriever R/model --reranker C/model --run bm25.trec   # + quality, ~15 min
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
from typing import Any

import numpy as np
import torch

from petir import tasks
from petir.backbone import DEFAULT_BACKBONE
from petir.cli import HelpFormatter
from petir.datasets import load_beir
from petir.models import PetModel
from petir.onnx import export
from petir.run_directory import package_versions
from petir.tasks import TASKS, Task

REPO = Path(__file__).resolve().parents[1]
SPINNING = "0" if os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE" else "1"
RESULTS = REPO / "docs" / "results"
STEM = "onnx-throughput"
ONNX_BACKENDS = ("onnx", "onnx-int8")

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
    """Time ``call(model, n, batch_size)`` for each backend; throughput in ``unit``/s, and each ONNX backend's
    speed-up over torch and max abs diff from torch's outputs."""
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
    for backend in ONNX_BACKENDS:
        row[f"{backend}_speedup"] = row[f"{backend}_per_second"] / row["torch_per_second"]
        row[f"{backend}_max_abs_diff"] = float(np.abs(outputs[backend] - outputs["torch"]).max())
    print(
        f"  {name:<34} {method:<6} torch {row['torch_per_second']:7.1f} {unit}/s   "
        + "   ".join(
            f"{b} x{row[f'{b}_speedup']:.2f} (max|diff| {row[f'{b}_max_abs_diff']:.1e})" for b in ONNX_BACKENDS
        ),
        flush=True,
    )
    return row


def machine(threads: int, packages: Sequence[str], **settings: Any) -> dict[str, Any]:
    """The machine a benchmark ran on (every benchmark's, in its results): the CPU, the threads, OpenMP's wait
    policy, the benchmark's own ``settings``, Python and the installed versions of ``packages``."""
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
        **settings,
        "python": platform.python_version(),
        **package_versions(packages),
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
        "| workload | method | items | torch fp32 /s | onnxruntime fp32 /s | onnxruntime int8 /s | fp32 speed-up "
        "| int8 speed-up | int8 max abs diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        unit = row["unit"]
        lines.append(
            f"| {row['workload']} | {row['method']} | {row['items']} | {row['torch_per_second']:.1f} {unit}/s | "
            f"{row['onnx_per_second']:.1f} | {row['onnx-int8_per_second']:.1f} | x{row['onnx_speedup']:.2f} | "
            f"**x{row['onnx-int8_speedup']:.2f}** | {row['onnx-int8_max_abs_diff']:.1e} |"
        )
    if results.get("quality"):
        q = results["quality"]
        lines += [
            "",
            f"Quality on SciFact test ({q['queries']} queries), torch fp32 vs onnxruntime int8, same models:",
            "",
            "| stage | model | torch fp32 nDCG@10 | int8 nDCG@10 | difference | torch fp32 time (s) | int8 time (s) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for stage in ("dense retrieval", "re-ranking"):
            row = q[stage]
            lines.append(
                f"| {stage} ({row['what']}) | {row['model']} | {row['torch']['ndcg@10']:.4f} | "
                f"{row['onnx-int8']['ndcg@10']:.4f} | {row['onnx-int8']['ndcg@10'] - row['torch']['ndcg@10']:+.4f} | "
                f"{row['torch']['seconds']:.0f} | {row['onnx-int8']['seconds']:.0f} |"
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
    width = 0.27
    for axis, name in zip(axes[0], workloads, strict=True):
        subset = {row["method"]: row for row in rows if row["workload"] == name}
        x = np.arange(len(methods))
        for offset, backend, label in (
            (-width, "torch", "torch fp32"),
            (0, "onnx", "onnxruntime fp32"),
            (width, "onnx-int8", "onnxruntime int8"),
        ):
            values = [subset[m][f"{backend}_per_second"] if m in subset else 0 for m in methods]
            axis.bar(x + offset, values, width, label=label)
        for i, m in enumerate(methods):
            if m in subset:
                top = max(subset[m][f"{b}_per_second"] for b in ("torch", *ONNX_BACKENDS))
                axis.annotate(
                    f"int8 x{subset[m]['onnx-int8_speedup']:.2f}", (i, top), ha="center", va="bottom", fontsize=8
                )
        axis.set_xticks(x, methods)
        axis.set_title(name, fontsize=10)
        axis.set_ylabel(f"{next(iter(subset.values()))['unit']} per second")
        axis.margins(y=0.15)
    m = results["machine"]
    figure.suptitle(
        f"torch vs onnxruntime fp32 and int8, CPU ({m['threads']} threads), {results['backbone'].split('/')[-1]}",
        fontsize=11,
        x=0.02,
        ha="left",
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", ncol=3, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def load(directory: Path, backend: str) -> object:
    """A saved model through petir's own loader for ``backend`` (onnxruntime sessions without spinning threads when
    OMP_WAIT_POLICY is passive)."""
    if backend == "torch":
        return tasks.load(directory)
    config = {"session.intra_op.allow_spinning": SPINNING}
    return tasks.load_onnx(directory, session_config=config, int8=backend == "onnx-int8")


def quality(retriever: Path, reranker: Path, run_path: Path, depth: int, scratch: Path) -> dict:
    """nDCG@10 on SciFact test of dense retrieval and of re-ranking, torch fp32 vs onnxruntime int8 (copies of the
    model directories are exported, the originals are left as they are)."""
    import shutil

    from petir.data import read_run
    from petir.evaluate import evaluate_run

    directory = scifact_dir()
    if directory is None:
        raise SystemExit("onnx_throughput: --retriever/--reranker need SciFact (set PETIR_DATA)")
    data = load_beir(directory, "test")
    qids = [qid for qid in data.qrels if qid in data.queries]
    docids = list(data.corpus)
    texts = [data.corpus[docid].contents for docid in docids]
    first_stage = read_run(run_path)
    candidates = {qid: [docid for docid, _ in first_stage.get(qid, [])[:depth]] for qid in qids}
    models = {}
    for name, source in (("retriever", retriever), ("reranker", reranker)):
        models[name] = shutil.copytree(source, scratch / f"quality-{name}")
        export(models[name])
    result: dict = {"queries": len(qids)}
    dense: dict = {"what": f"whole corpus, {len(docids)} passages", "model": str(retriever)}
    rerank: dict = {"what": f"{run_path.name} top {depth}", "model": str(reranker)}
    for backend in ("torch", "onnx-int8"):
        encoder = load(models["retriever"], backend)
        start = time.perf_counter()
        vectors = encoder.encode(texts, "passage", 32, progress=True)
        query_vectors = encoder.encode([data.queries[qid] for qid in qids], "query", 32)
        scores = query_vectors @ vectors.T
        seconds = time.perf_counter() - start
        top = np.argsort(-scores, axis=1)[:, :100]
        run = {qid: [(docids[j], float(scores[i, j])) for j in top[i]] for i, qid in enumerate(qids)}
        dense[backend] = {"ndcg@10": evaluate_run(data.qrels, run)["ndcg@10"], "seconds": seconds}
        scorer = load(models["reranker"], backend)
        pairs = [(qid, docid) for qid in qids for docid in candidates[qid]]
        start = time.perf_counter()
        values = scorer.score(
            [data.queries[q] for q, _ in pairs], [data.corpus[d].contents for _, d in pairs], 32, progress=True
        )
        seconds = time.perf_counter() - start
        reranked: dict = {}
        for (qid, docid), value in zip(pairs, values, strict=True):
            reranked.setdefault(qid, []).append((docid, float(value)))
        rerank[backend] = {"ndcg@10": evaluate_run(data.qrels, reranked)["ndcg@10"], "seconds": seconds}
        print(f"  quality {backend}: dense {dense[backend]}, re-ranking {rerank[backend]}", flush=True)
    result["dense retrieval"], result["re-ranking"] = dense, rerank
    return result


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
    parser.add_argument("--passages", type=int, default=128, help="passages encoded per timed pass")
    parser.add_argument("--retriever", type=Path, help="a trained retriever: measure int8's quality cost (SciFact)")
    parser.add_argument("--reranker", type=Path, help="a trained re-ranker: measure int8's quality cost (SciFact)")
    parser.add_argument("--run", type=Path, help="first-stage run of the SciFact test queries, for --reranker")
    parser.add_argument("--depth", type=int, default=20, help="--reranker re-ranks this many of --run per query")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the .json, .md and .png")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.pairs, args.repeats = min(args.queries, 64), min(args.pairs, 64), min(args.repeats, 2)
        args.passages = min(args.passages, 64)

    torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's thread count (petir.onnx)
    queries, pairs, source = workload(args.queries, args.pairs)

    def encode_queries(model, n: int, batch_size: int) -> np.ndarray:
        return model.encode(queries[:n], "query", batch_size)

    passages = [passage for _, passage in pairs] * (args.passages // max(len(pairs), 1) + 1)

    def encode_passages(model, n: int, batch_size: int) -> np.ndarray:
        return model.encode(passages[:n], "passage", batch_size, max_length=256)

    def score_pairs(model, n: int, batch_size: int) -> np.ndarray:
        return model.pair_scorer(batch_size)([q for q, _ in pairs[:n]], [p for _, p in pairs[:n]])

    def workloads(task: Task) -> list[tuple]:
        """A dense encoder (its vectors index in Pyserini) encodes queries and passages, and re-ranking with it is
        that same encoding; any other task scores (query, passage) pairs."""
        if task.pyserini:
            return [
                ("query encoding, batch 1", encode_queries, len(queries), "queries", 1),
                ("query encoding, batch 32", encode_queries, len(queries), "queries", 32),
                ("passage encoding (256 tokens), batch 32", encode_passages, args.passages, "passages", 32),
            ]
        return [("re-ranking (256 tokens), batch 32", score_pairs, len(pairs), "pairs", 32)]

    results = {
        "command": " ".join(["python benchmarks/onnx_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "backbone": DEFAULT_BACKBONE,
        "data": source,
        "repeats": args.repeats,
        "machine": machine(
            args.threads,
            ("torch", "onnxruntime", "transformers"),
            onnxruntime_allow_spinning=SPINNING,
            load_average_1min_at_start=os.getloadavg()[0],
        ),
        "rows": [],
    }
    print(f"{source}: {len(queries)} queries, {len(pairs)} pairs; {args.threads} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="petir-onnx-bench-") as scratch:
        for method in args.methods.split(","):
            for task in TASKS.values():
                directory = as_if_trained(task.model(DEFAULT_BACKBONE, method)).save(
                    Path(scratch) / f"{task.name}-{method}"
                )
                start = time.perf_counter()
                export(directory)
                print(f"{task.name} {method}: exported in {time.perf_counter() - start:.0f} s", flush=True)
                models = {backend: load(directory, backend) for backend in ("torch", *ONNX_BACKENDS)}
                for name, call, n_items, unit, batch_size in workloads(task):
                    results["rows"].append(measure(name, method, unit, n_items, batch_size, args.repeats, call, models))
                del models
        if args.retriever and args.reranker and args.run:
            results["quality"] = quality(args.retriever, args.reranker, args.run, args.depth, Path(scratch))
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{STEM}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.output / f"{STEM}.md")
    plot(results, args.output / f"{STEM}.png")
    print(f"wrote {args.output / STEM}.{{json,md,png}}")


if __name__ == "__main__":
    main()
