"""petir against sentence-transformers on the same data, steps, batch and backbone (issue 27).

Four systems, all on one backbone (default all-MiniLM-L6-v2, petir's default):

* ``st-full``: sentence-transformers full fine-tuning with its trainer's defaults (MultipleNegativesRankingLoss,
  scale 20 = temperature 0.05 on cosine, lr 5e-5, linear decay, no warm-up, no weight decay);
* ``st-lora``: the same plus PEFT LoRA (r 16, alpha 32, dropout 0.1 on ``query`` and ``value``, applied with
  ``peft.get_peft_model`` to ST's transformer module), lr 1e-3;
* ``petir-full`` and ``petir-iaa-l``: ``python -m petir.train --method full|iaa-l`` with petir's defaults: no
  ``--lr`` is passed, so each method's default rate at run time applies.

**Same training data.** Every system trains on the SciFact train split with petir's dev queries held out (100,
seed 0, as ``petir.train`` does), on the very groups petir's sampler draws for the seed: micro-batch ``i`` is
``GroupSampler.groups(i)`` (16 queries, each with 1 positive and 1 BM25 hard negative from petir's mining). petir
draws them itself; sentence-transformers gets them as (anchor, positive, negative) rows read in that order (no
shuffling), so both see the same batches and the same in-batch negatives. One difference is kept, as each library
does it: petir's loss masks a batch passage that the qrels judge relevant to another query (a false negative);
MultipleNegativesRankingLoss does not. Training passages are 256 tokens for all (``--passage-length``; ST's
``max_seq_length``, petir's ``--passage-max-length``); queries 64 tokens for petir, 256 for ST (SciFact queries are
far shorter than either).

**Measured.** Each (system, seed) runs in its own subprocess. Time per step is the training loop only: petir's
``summary.json`` ``wall_time_s`` (optimizer steps, dev checks excluded) over its steps; ST's ``trainer.train()``
call over its steps (that call also builds the data loader, a fraction of a second). Peak memory is the child's
``ru_maxrss`` read right after training (data loading and BM25 mining included, the same for every system).
Then the child encodes the test corpus and queries with the trained model's own encoder (ST: ``model.encode``,
normalised; petir: ``BiEncoder.encode``, cosine) and hands the vectors to one shared evaluation path
(:func:`evaluate_vectors`: exact cosine search in numpy, per-query nDCG@10 by ``petir.evaluate``). Each finished
run's result is saved at once under ``--work`` (``runs/peers`` by default, git-ignored); a re-run skips the runs
already there. The summary compares petir full with ST full and petir IAA-L with ST+LoRA by two-tailed paired
t-tests over the test queries (per-query nDCG@10 averaged over seeds), Holm-adjusted over the two. Writes
``docs/results/peers.{json,md,png}``::

    python benchmarks/peers.py                  # 4 systems x 3 seeds, 150 steps, CPU: about 8 hours (see below)
    python benchmarks/peers.py --device cuda    # the same on a GPU (same device for every system)
    python benchmarks/peers.py --quick          # a small SciFact sample, 3 steps of 4 queries, 1 seed: 4 minutes

Run time: not measured in full. ``--quick`` with the default backbone took 4 minutes on 1 busy CPU thread, at 2.8-4.4
s per 4-query step (256 tokens); a 16-query step is about 4x that, so each CPU run is roughly 25-40 minutes of
training plus a few minutes encoding the 5,183 test passages, and the 12 runs 6-10 hours on 2 busy cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
from petir.cli import HelpFormatter
from petir.data import read_json
from petir.datasets import load_beir, resolve_beir
from petir.evaluate import evaluate_queries
from petir.files import write_json_atomic, write_lines_atomic
from petir.run_directory import package_versions

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
STEM = "peers"
DEV_QUERIES = 100  # petir.train's default --dev-queries, held out of every system's training data


@dataclasses.dataclass(frozen=True)
class System:
    label: str
    library: str  # "petir" or "sentence-transformers"
    method: str | None = None  # petir's --method
    learning_rate: float | None = None  # sentence-transformers' rate (petir: its method's default)
    lora: bool = False


SYSTEMS = {
    "st-full": System("sentence-transformers full", "sentence-transformers", learning_rate=5e-5),
    "st-lora": System("sentence-transformers + LoRA r16", "sentence-transformers", learning_rate=1e-3, lora=True),
    "petir-full": System("petir full", "petir", method="full"),
    "petir-iaa-l": System("petir IAA-L", "petir", method="iaa-l"),
}
#: (system, reference) pairs tested for a difference in per-query test nDCG@10.
COMPARISONS = (("petir-full", "st-full"), ("petir-iaa-l", "st-lora"))
#: Idle OpenMP threads wait passively in every run (unless set): on cores shared with other jobs, spinning threads make
#: torch 10-40x slower (benchmarks/onnx_throughput.py), which would make timings depend on the neighbours.
CHILD_ENV = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["query", "value"]}


# -- the shared inputs and evaluation --------------------------------------------------------------------------------
def sample_beir(source: Path, target: Path, train_queries: int, test_queries: int, others: int) -> Path:
    """A small BEIR directory (``--quick``): the first ``train_queries``/``test_queries`` judged queries of the
    train/test splits, their judged passages and ``others`` further passages (the first ones of the corpus)."""
    import itertools

    train, test = load_beir(source, "train"), load_beir(source, "test")
    qrels = {
        "train": {qid: train.qrels[qid] for qid in sorted(train.qrels)[:train_queries]},
        "test": {qid: test.qrels[qid] for qid in sorted(test.qrels)[:test_queries]},
    }
    keep = {docid for split in qrels.values() for judged in split.values() for docid in judged}
    keep |= set(itertools.islice(train.corpus, others))
    queries = {**train.queries, **test.queries}
    write_lines_atomic(
        target / "corpus.jsonl",
        (json.dumps({"_id": d, "title": train.corpus[d].title, "text": train.corpus[d].text}) + "\n" for d in keep),
    )
    write_lines_atomic(
        target / "queries.jsonl",
        (json.dumps({"_id": qid, "text": queries[qid]}) + "\n" for split in qrels.values() for qid in split),
    )
    for split, judged in qrels.items():
        lines = [f"{qid}\t{docid}\t{rel}\n" for qid, docs in judged.items() for docid, rel in docs.items()]
        write_lines_atomic(target / "qrels" / f"{split}.tsv", ["query-id\tcorpus-id\tscore\n", *lines])
    return target


def evaluate_vectors(
    queries: np.ndarray, passages: np.ndarray, qids: Sequence[str], docids: Sequence[str], qrels: dict, depth: int = 100
) -> dict[str, float]:
    """Per-query nDCG@10 of exact search: ``queries`` [n_queries, dim] and ``passages`` [n_passages, dim],
    L2-normalised (dot = cosine), the top ``depth`` passages of each query ranked by ``petir.evaluate``.

    Returns: {qid: nDCG@10} for every query of ``qrels``."""
    scores = queries @ passages.T
    depth = min(depth, len(docids))
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    run = {qid: [(docids[j], float(scores[i, j])) for j in top[i]] for i, qid in enumerate(qids)}
    per_query = evaluate_queries(qrels, run, k_recall=())
    return {qid: values["ndcg@10"] for qid, values in per_query.items()}


def peak_memory_mb(device: str) -> dict[str, float]:
    """The process's peak resident memory (MB), and on a GPU the peak memory torch allocated there."""
    peaks = {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: kilobytes
    if device.startswith("cuda"):
        import torch

        peaks["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


# -- one run, in its own process ---------------------------------------------------------------------------------
def train_petir(spec: dict[str, Any], system: System, scratch: Path):
    """Train with ``petir.train``'s own entry point; returns (encode(texts, kind), measurements)."""
    from petir import train
    from petir.tasks.retrieval import BiEncoder

    output = scratch / "petir"
    argv = [
        *("--data", spec["data"], "--backbone", spec["backbone"], "--method", system.method),
        *("--seed", str(spec["seed"]), "--steps", str(spec["steps"]), "--batch-size", str(spec["batch_size"])),
        *("--negatives", "1", "--dev-queries", str(spec["dev_queries"]), "--threads", str(spec["threads"])),
        *("--passage-max-length", str(spec["passage_length"]), "--device", spec["device"], "--output", str(output)),
        *spec["petir_flags"],
    ]
    summary = train.main(argv)
    measured = {
        "seconds_per_step": summary["wall_time_s"] / summary["steps"],
        **peak_memory_mb(spec["device"]),
        "trainable_parameters": summary["parameters"]["trainable"],
        "learning_rate": summary["config"]["learning_rate"],
        "petir_argv": argv,
    }
    model = BiEncoder.load(output / "model", device=spec["device"])
    length = spec["passage_length"]

    def encode(texts: list[str], kind: str) -> np.ndarray:
        return model.encode(texts, kind, progress=True, max_length=length if kind == "passage" else None)

    return encode, measured


def petir_groups(spec: dict[str, Any]) -> list:
    """The groups petir's sampler draws for the run's seed, micro-batch after micro-batch (what petir.train trains
    on with the same data flags)."""
    from petir.sampling import SamplingOptions
    from petir.tasks import get_task
    from petir.tasks.retrieval import RetrievalDataOptions
    from petir.training_data import TrainingDataOptions, load_training_data

    options = TrainingDataOptions(data=spec["data"], dev_queries=spec["dev_queries"])
    data = load_training_data(
        options, SamplingOptions.negative_depth, get_task("retrieval"), RetrievalDataOptions(), spec["threads"]
    )
    sampler = data.sampler(SamplingOptions(batch_size=spec["batch_size"], negatives=1, seed=spec["seed"]))
    return [group for index in range(spec["steps"]) for group in sampler.groups(index)]


def in_order(dataset, batch_size: int, drop_last: bool, **_: Any):
    """sentence-transformers' batch sampler, without shuffling: the rows are petir's batches in petir's order."""
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from torch.utils.data import SequentialSampler

    return DefaultBatchSampler(SequentialSampler(dataset), batch_size=batch_size, drop_last=drop_last)


def train_sentence_transformers(spec: dict[str, Any], system: System, scratch: Path):
    """Train with sentence-transformers' trainer at its defaults; returns (encode(texts, kind), measurements)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.set_num_threads(spec["threads"])
    groups = petir_groups(spec)
    rows = {"anchor": [g.query for g in groups], "positive": [g.passages[0] for g in groups]}
    rows["negative"] = [g.passages[1] for g in groups]
    torch.manual_seed(spec["seed"])
    model = SentenceTransformer(resolve_backbone(spec["backbone"]), device=spec["device"])
    model.max_seq_length = spec["passage_length"]
    if system.lora:
        from peft import LoraConfig, get_peft_model

        # peft directly: transformers' add_adapter (behind ST's) asks for peft >= 0.22, newer than petir's.
        model[0].model = get_peft_model(model[0].model, LoraConfig(**LORA))
    arguments = Arguments(
        output_dir=str(scratch / "st"),
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=system.learning_rate,
        seed=spec["seed"],
        batch_sampler=in_order,
        save_strategy="no",
        report_to="none",
        logging_steps=max(1, spec["steps"] // 10),
        use_cpu=spec["device"] == "cpu",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=arguments,
        train_dataset=Dataset.from_dict(rows),
        loss=MultipleNegativesRankingLoss(model),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    measured = {
        "seconds_per_step": seconds / spec["steps"],
        **peak_memory_mb(spec["device"]),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "learning_rate": system.learning_rate,
    }
    model.eval()

    def encode(texts: list[str], kind: str) -> np.ndarray:
        return model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=True)

    return encode, measured


TRAINERS = {"petir": train_petir, "sentence-transformers": train_sentence_transformers}


def child(spec: dict[str, Any]) -> None:
    """Train one (system, seed), test it, write its result JSON."""
    system = SYSTEMS[spec["system"]]
    with tempfile.TemporaryDirectory(prefix="peers-", dir=spec["work"]) as scratch:
        encode, measured = TRAINERS[system.library](spec, system, Path(scratch))
        test = load_beir(spec["data"], "test")
        docids = list(test.corpus)
        qids = list(test.queries)
        passages = encode([test.corpus[d].contents for d in docids], "passage")
        queries = encode([test.queries[q] for q in qids], "query")
    per_query = evaluate_vectors(np.asarray(queries), np.asarray(passages), qids, docids, test.qrels)
    result = {
        "system": spec["system"],
        "seed": spec["seed"],
        **measured,
        "ndcg@10": statistics.fmean(per_query.values()),
        "per_query_ndcg@10": per_query,
        "test_passages": len(docids),
    }
    write_lines_atomic(spec["result"], [json.dumps(result, indent=1) + "\n"])


def run_path(work: Path, system: str, seed: int) -> Path:
    return work / "results" / f"{system}-seed{seed}.json"


def read_result(path: Path) -> dict[str, Any]:
    fields = {"ndcg@10": float, "per_query_ndcg@10": dict, "seconds_per_step": float, "peak_memory_mb": float}
    return read_json(path, "peer benchmark result", "delete it to run that system and seed again", fields)


# -- the summary -------------------------------------------------------------------------------------------------
def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per system: mean and sd over seeds of test nDCG@10, time per step and peak memory; and the paired t-tests
    of :data:`COMPARISONS` over the test queries (each query's nDCG@10 averaged over seeds), Holm-adjusted."""
    from scipy.stats import ttest_rel

    from petir.study.report import holm

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    systems, per_query = {}, {}
    for name, runs in results.items():
        qids = sorted(runs[0]["per_query_ndcg@10"])
        per_query[name] = {q: statistics.fmean(run["per_query_ndcg@10"][q] for run in runs) for q in qids}
        systems[name] = {
            "label": SYSTEMS[name].label,
            "seeds": [run["seed"] for run in runs],
            **{key: spread([run[key] for run in runs]) for key in ("ndcg@10", "seconds_per_step", "peak_memory_mb")},
            "trainable_parameters": runs[0]["trainable_parameters"],
            "learning_rate": runs[0]["learning_rate"],
        }
    tests = []
    for name, reference in COMPARISONS:
        if name in per_query and reference in per_query:
            qids = sorted(per_query[name])
            a, b = [per_query[name][q] for q in qids], [per_query[reference][q] for q in qids]
            p = float(ttest_rel(a, b).pvalue) if a != b else 1.0
            tests.append(
                {
                    "system": name,
                    "reference": reference,
                    "difference": statistics.fmean(a) - statistics.fmean(b),
                    "p": p,
                }
            )
    for test, adjusted in zip(tests, holm([t["p"] for t in tests]), strict=True):
        test["p_holm"] = adjusted
    return {"systems": systems, "tests": tests}


def write_markdown(report: dict[str, Any], path: Path) -> None:
    setting = report["setting"]
    lines = [
        "# petir vs sentence-transformers (benchmarks/peers.py)",
        "",
        f"`{report['command']}`",
        "",
        f"Backbone {setting['backbone']}; SciFact train split less {setting['dev_queries']} dev queries; "
        f"{setting['steps']} steps of {setting['batch_size']} queries x (1 positive + 1 BM25 hard negative), the "
        f"same groups for every system (petir's sampler); {setting['passage_length']}-token passages; "
        f"device {setting['device']}, threads: {setting['threads']}; "
        f"test: {setting['test_passages']} passages, exact cosine search. "
        "Mean ± sd over seeds. Trainable parameters as each library counts them (sentence-transformers counts "
        "BERT's pooler, which its mean pooling never uses; petir drops it). Versions: "
        + ", ".join(f"{name} {v}" for name, v in setting["versions"].items())
        + ".",
        "",
        "| system | lr | trainable params | test nDCG@10 | s / step | peak memory (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["systems"].values():
        cells = [
            f"{row['label']} (seeds {', '.join(map(str, row['seeds']))})",
            f"{row['learning_rate']:g}" if row["learning_rate"] else "petir default",
            f"{row['trainable_parameters']:,}",
            *(f"{row[k]['mean']:.4f} ± {row[k]['sd']:.4f}" for k in ("ndcg@10",)),
            f"{row['seconds_per_step']['mean']:.2f} ± {row['seconds_per_step']['sd']:.2f}",
            f"{row['peak_memory_mb']['mean']:.0f} ± {row['peak_memory_mb']['sd']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired two-tailed t-tests over test queries (per-query nDCG@10 averaged over seeds), Holm-adjusted:",
        "",
    ]
    for test in report["tests"]:
        lines.append(
            f"- {test['system']} − {test['reference']}: {test['difference']:+.4f} nDCG@10, "
            f"p = {test['p']:.3g} (Holm {test['p_holm']:.3g})"
        )
    write_lines_atomic(path, [line + "\n" for line in lines])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report["systems"].values())
    figure, axis = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(rows))
    axis.bar(
        x,
        [row["ndcg@10"]["mean"] for row in rows],
        yerr=[row["ndcg@10"]["sd"] for row in rows],
        capsize=4,
        color=["tab:green" if SYSTEMS[name].library == "petir" else "tab:gray" for name in report["systems"]],
    )
    axis.set_xticks(x, [row["label"] for row in rows], rotation=15, ha="right", fontsize=8)
    axis.set_ylabel("SciFact test nDCG@10 (mean ± sd over seeds)")
    axis.set_title(f"{report['setting']['steps']} steps, batch {report['setting']['batch_size']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- main --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/peers.py", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small SciFact sample, 3 steps, batch 4, seed 1")
    parser.add_argument("--data", default="scifact", help="SciFact: a BEIR directory or name (as petir.train --data)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="BERT-family model name or directory")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from: {', '.join(SYSTEMS)}")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16, help="queries per step")
    parser.add_argument("--passage-length", type=int, default=256, help="passage tokens, training and test")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N: every run's (on a GPU the run JSONs also hold torch's peak GPU memory)",
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs" / STEM, help="finished runs' results (resumable)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for peers.{json,md,png}")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one run's spec (JSON), in its own process
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return {}
    systems, seeds = args.systems.split(","), [int(seed) for seed in args.seeds.split(",")]
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if min(args.steps, args.batch_size, args.passage_length, args.threads) < 1:
        parser.error("--steps, --batch-size, --passage-length and --threads must be at least 1")
    args.work.mkdir(parents=True, exist_ok=True)
    data = resolve_beir(args.data)
    dev_queries, petir_flags = DEV_QUERIES, []
    if args.quick:
        seeds, args.steps, args.batch_size = seeds[:1], min(args.steps, 3), min(args.batch_size, 4)
        data = sample_beir(data, args.work / "data", train_queries=40, test_queries=20, others=100)
        dev_queries, petir_flags = 8, ["--eval-every", "0", "--dev-depth", "20"]
    results: dict[str, list[dict[str, Any]]] = {}
    for name in systems:
        for seed in seeds:
            path = run_path(args.work, name, seed)
            if not path.is_file():
                spec = {
                    **{"system": name, "seed": seed, "data": str(data), "backbone": args.backbone},
                    **{"steps": args.steps, "batch_size": args.batch_size, "passage_length": args.passage_length},
                    **{"threads": args.threads, "device": args.device, "dev_queries": dev_queries},
                    "petir_flags": petir_flags,
                    **{"work": str(args.work), "result": str(path)},
                }
                print(f"peers: {name} seed {seed}", flush=True)
                subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True, env=CHILD_ENV)
            result = read_result(path)
            results.setdefault(name, []).append(result)
            print(
                f"peers: {name} seed {seed}: nDCG@10 {result['ndcg@10']:.4f}, "
                f"{result['seconds_per_step']:.2f} s/step, peak {result['peak_memory_mb']:.0f} MB",
                flush=True,
            )
    report = {
        "command": " ".join(["python benchmarks/peers.py", *(argv if argv is not None else sys.argv[1:])]),
        "setting": {
            "backbone": args.backbone,
            "data": Path(data).name,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "passage_length": args.passage_length,
            "threads": args.threads,
            "device": args.device,
            "dev_queries": dev_queries,
            "seeds": seeds,
            "test_passages": results[systems[0]][0]["test_passages"],
            "lora": LORA,
            "versions": package_versions(("petir", "sentence-transformers", "transformers", "peft", "torch")),
        },
        **summarize(results),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output / f"{STEM}.json", report)
    write_markdown(report, args.output / f"{STEM}.md")
    plot(report, args.output / f"{STEM}.png")
    print(f"peers: wrote {args.output / STEM}.{{json,md,png}}")
    return report


if __name__ == "__main__":
    main()
