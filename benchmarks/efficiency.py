"""Efficiency of the study's methods on CPU: Pyserini encoding throughput, training step time and training memory.

For the default backbone (all-MiniLM-L6-v2) and every named variant of :data:`petir.pet.VARIANTS` (at its 0.5 % preset):

1. **Encoding through Pyserini** (passages/s). Each method's bi-encoder is saved and loaded with Pyserini's
   ``AutoDocumentEncoder``, the class stock ``python -m pyserini.encode`` uses for a petir directory (the plug-in
   registers petir with ``transformers.AutoModel``); it encodes the same passages (SciFact corpus, synthetic
   sentences where absent) in batches, as ``pyserini.encode`` does. The references are the plain frozen backbone
   through the same class (pooling mean, l2-norm: the all-MiniLM-L6-v2 recipe), timed twice: as Pyserini runs it
   (autograd on: Pyserini calls the model without ``torch.no_grad``) and under ``torch.inference_mode``, which is
   how petir's ``PetirAutoModel`` always runs. Overheads are given against both; the inference-mode one is the
   like-for-like comparison. The models are untrained: a forward pass does the same arithmetic whatever the
   weights' values (dense kernels, no sparsity shortcuts), so throughput does not depend on training.
2. **Training** per method, for every task of the study at its settings (``petir.reproduce``'s defaults, from each
   task's stage: retrieval: 16 queries x (1 positive + 1 negative) passages, 128 passage tokens; rerank: 8 queries x
   4 pairs, 128 tokens): the median time of
   one optimizer step (forward, backward, gradient clipping, AdamW; the batch is tokenised once, outside the
   timing), and the training memory beyond the frozen weights, counted exactly rather than read from the
   process's RSS (which holds everything loaded before): (a) activations, the bytes of the tensors autograd saves
   for backward in one step (``torch.autograd.graph.saved_tensors_hooks``; each storage once, weights excluded),
   and (b) trainable parameters + their gradients + AdamW's two moments. For full fine-tuning (b) holds the whole
   backbone, which is then trainable, not frozen.

Variants are measured interleaved, in rotating order (each batch by every encoder in turn; each training step
by every method in turn), so a change in background load during the run hits every variant alike instead of
whichever ran at that moment; encoding overheads are medians of per-batch paired time ratios.

Thread pools wait passively (``OMP_WAIT_POLICY=PASSIVE``) unless ``OMP_WAIT_POLICY`` is set: on a machine whose
cores are shared with another job, busy-waiting OpenMP threads make torch 10-40x slower (see
``benchmarks/onnx_throughput.py``). The 1-minute load average is recorded at start, between the two parts and at
the end; above the thread count, other jobs shared the cores and absolute numbers are lower bounds (ratios
between variants, measured interleaved, hold better). Writes ``docs/results/efficiency.{json,md}``,
``efficiency-throughput.png`` and ``efficiency-training.png``::

    python benchmarks/efficiency.py            # ~9 minutes on 2 busy cores
    python benchmarks/efficiency.py --quick    # ~3 minutes: one batch of passages, 2 passes, 1 timed step
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP reads it once, when the runtime starts (see the module docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from petir.backbone import DEFAULT_BACKBONE, resolve_backbone
from petir.cli import HelpFormatter
from petir.data import read_corpus
from petir.datasets import load_beir
from petir.models import PetModel
from petir.pet import REFERENCE_METHOD, VARIANTS, get_method, resolve
from petir.sampling import Group
from petir.study import STAGES, stage_training
from petir.tasks import DEFAULT_TASK, TASKS
from petir.train_config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts are not a package
from onnx_throughput import SYNTHETIC_WORDS, machine, scifact_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
STEM = "efficiency"
REFERENCE = "backbone (Pyserini as is)"
REFERENCE_INFERENCE = "backbone (inference_mode)"

Encode = Callable[[list[str]], np.ndarray]


# -- inputs ------------------------------------------------------------------------------------------------------
def synthetic(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(SYNTHETIC_WORDS, words))


def passages(count: int) -> tuple[list[str], str]:
    """(the first ``count`` SciFact passages as "title text", where they came from); synthetic ~220-word
    passages (longer than 256 tokens, as most SciFact abstracts) where SciFact is absent."""
    directory = scifact_dir()
    if directory is None:
        rng = np.random.default_rng(0)
        return [synthetic(rng, 220) for _ in range(count)], "synthetic sentences (SciFact not found)"
    corpus = read_corpus(directory)
    return [document.contents for document in itertools.islice(corpus.values(), count)], "SciFact corpus"


def training_groups(queries: int, group_size: int) -> tuple[list[Group], str]:
    """``queries`` groups (query, [judged passage, group_size - 1 other passages]) as the trainer samples them;
    SciFact test queries and passages (synthetic where absent)."""
    directory = scifact_dir()
    if directory is None:
        rng = np.random.default_rng(1)
        groups = [
            Group(synthetic(rng, int(rng.integers(6, 20))), [synthetic(rng, 220) for _ in range(group_size)])
            for _ in range(queries)
        ]
        return groups, "synthetic sentences (SciFact not found)"
    data = load_beir(directory, "test")
    others = itertools.cycle(data.corpus.values())
    groups = []
    for qid in list(data.qrels)[:queries]:
        positive = data.corpus[next(iter(data.qrels[qid]))]
        negatives = [next(others) for _ in range(group_size - 1)]
        groups.append(Group(data.queries[qid], [document.contents for document in (positive, *negatives)]))
    return groups, "SciFact test queries and passages"


def variant_model(task_class: type[PetModel], backbone: str, variant: str, **options: Any) -> PetModel:
    method, pet_options = resolve(variant)
    return task_class(backbone, method, pet_options, **options)


# -- 1. encoding throughput through Pyserini -----------------------------------------------------------------------
def pyserini_encoder(directory: str | os.PathLike, max_length: int, inference_mode: bool = False) -> Encode:
    """Pyserini's ``AutoDocumentEncoder`` on ``directory`` (a petir directory or a plain backbone), called as
    ``python -m pyserini.encode`` calls it; ``inference_mode`` wraps each call in ``torch.inference_mode``."""
    import pyserini.encode  # noqa: F401  (the petir plug-in registers with transformers on this import)
    from pyserini.encode import AutoDocumentEncoder

    encoder = AutoDocumentEncoder(str(directory), device="cpu", pooling="mean", l2_norm=True)
    context = torch.inference_mode if inference_mode else contextlib.nullcontext

    def encode(texts: list[str]) -> np.ndarray:
        with context():
            return encoder.encode(texts, titles=None, max_length=max_length)

    return encode


def rotations(names: Sequence[str], rounds: int):
    """``rounds`` orderings of ``names``, each rotated one further, so that no name always runs first or after
    the same neighbour: with a background load that changes during the run, position effects would otherwise
    show up as differences between the measured models."""
    for index in range(rounds):
        shift = index % len(names)
        yield index, [*names[shift:], *names[:shift]]


def encoding_throughput(
    encoders: dict[str, Encode], texts: Sequence[str], batch_size: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Passages/s of each encoder over ``repeats`` passes through ``texts`` in batches, after a warm-up batch each.

    Interleaved at the batch level: each batch is encoded by every encoder in turn (order rotating), so the same
    batch by different encoders is timed seconds apart. Returns: {name: {"seconds": median seconds per pass,
    "passages_per_second", "batch_seconds": [repeat][batch] seconds, "dimension"}}."""
    batches = [list(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    dimension = {name: encode(batches[0]).shape[1] for name, encode in encoders.items()}  # warm-up
    seconds = {name: np.zeros((repeats, len(batches))) for name in encoders}
    for slot, order in rotations(list(encoders), repeats * len(batches)):
        repeat, index = divmod(slot, len(batches))
        for name in order:
            start = time.perf_counter()
            encoders[name](batches[index])
            seconds[name][repeat, index] = time.perf_counter() - start
    rows = {}
    for name, table in seconds.items():
        per_pass = float(np.median(table.sum(axis=1)))
        rows[name] = {
            "seconds": per_pass,
            "passages_per_second": len(texts) / per_pass,
            "batch_seconds": table.tolist(),
            "dimension": dimension[name],
        }
    return rows


def overhead_pct(row: dict[str, Any], reference: dict[str, Any]) -> float:
    """Extra time per passage of ``row`` over ``reference``, in percent: the median over batches of the paired
    time ratio (the same batch, timed seconds apart), which cancels most of a slowly changing background load."""
    ratios = np.asarray(row["batch_seconds"]) / np.asarray(reference["batch_seconds"])
    return float(100 * (np.median(ratios) - 1))


# -- 2. training step time and memory ------------------------------------------------------------------------------
def make_optimizer(model: PetModel) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with the trainer's settings and the method's learning rate."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        parameters, lr=get_method(model.method).learning_rate, weight_decay=TrainConfig.weight_decay
    )


def training_step(model: PetModel, optimizer: torch.optim.Optimizer, batch: dict[str, Any]) -> float:
    """One optimizer step as :class:`petir.trainer.Trainer` takes it; returns the loss."""
    loss = model(batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], TrainConfig.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def training_memory(model: PetModel, optimizer: torch.optim.Optimizer, batch: dict[str, Any]) -> dict[str, int]:
    """One training step, counting the memory it needs beyond the frozen weights, in bytes:

    - ``activation_bytes``: storages autograd saved for backward (each once; parameters and buffers excluded);
    - ``parameter_bytes``, ``gradient_bytes``, ``optimizer_bytes``: trainable parameters, their gradients, and
      the AdamW state after the step;
    - ``total_bytes``: their sum.
    """
    model.train()
    weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        # Saved tensors stay alive until backward, so no two of them can share an address by reuse.
        if storage.data_ptr() not in weights and storage.data_ptr() != 0:
            saved.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(batch)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    gradient_bytes = sum(p.grad.nbytes for p in trainable if p.grad is not None)
    torch.nn.utils.clip_grad_norm_(trainable, TrainConfig.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    report = {
        "activation_bytes": sum(saved.values()),
        "parameter_bytes": sum(p.nbytes for p in trainable),
        "gradient_bytes": gradient_bytes,
        "optimizer_bytes": sum(
            t.nbytes for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)
        ),
    }
    report["total_bytes"] = sum(report.values())
    return report


def training_costs(models: dict[str, PetModel], groups: Sequence[Group], steps: int) -> dict[str, dict[str, Any]]:
    """Per model: the memory of one (untimed, warm-up) step, then the median seconds of ``steps`` timed steps,
    taken round-robin across the models (order rotating). The batch is collated once per model and reused.

    Returns: {name: {"step_seconds", "steps": [seconds...], "trainable_parameters", **training_memory}}."""
    optimizers = {name: make_optimizer(model) for name, model in models.items()}
    batches = {name: model.collate(groups) for name, model in models.items()}
    results = {
        name: {
            **training_memory(model, optimizers[name], batches[name]),
            "trainable_parameters": model.parameter_report()["trainable"],
            "steps": [],
        }
        for name, model in models.items()
    }
    for _, order in rotations(list(models), steps):
        for name in order:
            start = time.perf_counter()
            training_step(models[name], optimizers[name], batches[name])
            results[name]["steps"].append(time.perf_counter() - start)
    for row in results.values():
        row["step_seconds"] = statistics.median(row["steps"])
    return results


def study_training() -> dict[str, tuple[type[PetModel], dict[str, Any], int, int]]:
    """Per task of the study: (model class, model options, queries per batch, passages per query), as
    ``petir.reproduce`` trains it by default."""
    settings = {}
    for name in STAGES:
        options, queries, negatives = stage_training(name)
        settings[name] = (TASKS[name].model, options, queries, 1 + negatives)
    return settings


# -- report ------------------------------------------------------------------------------------------------------
def load_average() -> float:
    return os.getloadavg()[0]


def mb(count: float) -> float:
    return count / 2**20


def write_markdown(results: dict, path: Path) -> None:
    m, loads = results["machine"], results["load_average_1min"]
    enc = results["encoding"]
    lines = [
        "# Efficiency: Pyserini encoding throughput, training step time and training memory (CPU)",
        "",
        f"`{results['command']}`",
        "",
        f"Backbone {results['backbone']}. {m['cpu']}, {m['threads']} threads of {m['logical_cpus']} logical CPUs; "
        f"torch {m['torch']}, transformers {m['transformers']}, Pyserini {m['pyserini']}; "
        f"OMP_WAIT_POLICY={m['omp_wait_policy']}. 1-minute load average: "
        + ", ".join(f"{value:.2f} {when}" for when, value in loads.items())
        + ".",
        "",
    ]
    if max(loads.values()) > m["threads"]:
        lines += [
            f"> **Warning: contended run.** The load average exceeded the {m['threads']} threads used: other jobs "
            "shared the cores, so absolute times are pessimistic and noisy. Variants were measured interleaved "
            "(rotating order), so their ratios are more trustworthy than the absolute numbers.",
            "",
        ]
    lines += [
        "## Encoding through Pyserini",
        "",
        f"{enc['passages']} passages ({enc['data']}), batch {enc['batch_size']}, max_length {enc['max_length']}, "
        f"median of {enc['repeats']} passes after a warm-up batch, batches interleaved across models. Each method's "
        "(untrained: throughput does not depend on weight values) bi-encoder directory is loaded by Pyserini's "
        "`AutoDocumentEncoder`, as stock `python -m pyserini.encode` loads it; petir's `PetirAutoModel` runs "
        "under `torch.inference_mode`. "
        f"*{REFERENCE}*: the plain backbone through the same class with autograd on, as Pyserini runs any model; "
        f"*{REFERENCE_INFERENCE}*: the same under `torch.inference_mode`, the like-for-like reference. Overhead = "
        "extra time per passage: the median over batches of the time ratio to the reference on the same batch "
        "(timed seconds apart). Target: PET overhead under 5 %.",
        "",
        "| model | passages/s | overhead vs inference_mode backbone | overhead vs Pyserini-as-is backbone |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in enc["rows"].items():
        cells = [
            f"{row[key]:+.1f} %" if name != reference else "reference"
            for key, reference in (
                ("overhead_vs_inference_mode_pct", REFERENCE_INFERENCE),
                ("overhead_vs_pyserini_pct", REFERENCE),
            )
        ]
        lines.append(f"| {name} | {row['passages_per_second']:.1f} | {' | '.join(cells)} |")
    train = results["training"]
    lines += [
        "",
        "## Training step time and memory",
        "",
        f"Median of {train['steps']} timed optimizer steps (forward, backward, clipping, AdamW; tokenisation "
        f"excluded) after one warm-up step, interleaved across methods; data: {train['data']}. Memory beyond the "
        "frozen weights, counted exactly: *activations* = bytes autograd saved for backward in one step (each "
        "storage once, weights excluded); *params+grads+AdamW* = trainable parameters, their gradients and AdamW's "
        "two moments (for full fine-tuning: the whole backbone). Relative columns are vs full fine-tuning.",
    ]
    for task, spec in train["tasks"].items():
        lines += [
            "",
            f"### {task}: {spec['setting']}",
            "",
            "| method | trainable params | step (s) | vs full | activations (MB) | params+grads+AdamW (MB) "
            "| total (MB) | vs full |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, row in spec["rows"].items():
            optimizer_side = row["parameter_bytes"] + row["gradient_bytes"] + row["optimizer_bytes"]
            lines.append(
                f"| {name} | {row['trainable_parameters']:,} | {row['step_seconds']:.2f} | "
                f"{100 * row['step_time_vs_full']:.0f} % | {mb(row['activation_bytes']):.1f} | "
                f"{mb(optimizer_side):.1f} | {mb(row['total_bytes']):.1f} | {100 * row['memory_vs_full']:.0f} % |"
            )
    lines += [
        "",
        "Not measured: process RSS. On CPU it holds everything loaded before the step (Python, torch, the data, "
        "the frozen weights); the counts above isolate what training adds. Allocator overhead and transient "
        "buffers freed inside the step (e.g. attention scratch) are not in them.",
    ]
    path.write_text("\n".join(lines) + "\n")


def plot_throughput(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["encoding"]["rows"]
    names = [name for name in rows if name not in (REFERENCE, REFERENCE_INFERENCE)]
    figure, axis = plt.subplots(figsize=(8.5, 4.2))
    values = [rows[name]["passages_per_second"] for name in names]
    axis.bar(names, values, color="tab:blue")
    for i, name in enumerate(names):
        axis.annotate(
            f"{rows[name]['overhead_vs_inference_mode_pct']:+.1f}%",
            (i, values[i]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    for reference, style in ((REFERENCE_INFERENCE, "-"), (REFERENCE, "--")):
        axis.axhline(
            rows[reference]["passages_per_second"],
            color="black",
            linestyle=style,
            linewidth=1,
            label=f"{reference}: {rows[reference]['passages_per_second']:.1f}/s",
        )
    axis.axhline(
        rows[REFERENCE_INFERENCE]["passages_per_second"] / 1.05,
        color="tab:red",
        linestyle=":",
        linewidth=1,
        label="5 % overhead (target bound)",
    )
    axis.set_ylabel("passages per second")
    axis.tick_params(axis="x", labelrotation=30)
    axis.legend(fontsize=8, loc="lower right")
    axis.margins(y=0.12)
    m, enc = results["machine"], results["encoding"]
    axis.set_title(
        f"Pyserini AutoDocumentEncoder, {enc['max_length']} tokens, batch {enc['batch_size']}, CPU "
        f"({m['threads']} threads); labels: overhead vs inference_mode backbone",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_training(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["training"]["tasks"]
    figure, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), squeeze=False)
    for (axis_time, axis_memory), (task, spec) in zip(axes, tasks.items(), strict=True):
        names = list(spec["rows"])
        rows = [spec["rows"][name] for name in names]
        x = np.arange(len(names))
        axis_time.bar(x, [row["step_seconds"] for row in rows], color="tab:blue")
        for i, row in enumerate(rows):
            axis_time.annotate(
                f"{100 * row['step_time_vs_full']:.0f}%", (i, row["step_seconds"]), ha="center", va="bottom", fontsize=8
            )
        axis_time.set_ylabel("seconds per step")
        axis_time.set_title(f"{task}: step time (label: % of full)", fontsize=10)
        activations = np.array([mb(row["activation_bytes"]) for row in rows])
        optimizer_side = np.array(
            [mb(row["parameter_bytes"] + row["gradient_bytes"] + row["optimizer_bytes"]) for row in rows]
        )
        axis_memory.bar(x, activations, color="tab:orange", label="activations saved for backward")
        axis_memory.bar(
            x, optimizer_side, bottom=activations, color="tab:green", label="trainable params + grads + AdamW"
        )
        for i, row in enumerate(rows):
            axis_memory.annotate(
                f"{100 * row['memory_vs_full']:.0f}%",
                (i, activations[i] + optimizer_side[i]),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        axis_memory.set_ylabel("MB beyond frozen weights")
        axis_memory.set_title(f"{task}: training memory (label: % of full)", fontsize=10)
        axis_memory.legend(fontsize=8)
        for axis in (axis_time, axis_memory):
            axis.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
            axis.margins(y=0.12)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- main --------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/efficiency.py", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one batch of passages, 2 passes, 1 step (~3 min)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="BERT-family model name or directory")
    parser.add_argument(
        "--task", choices=TASKS, default=DEFAULT_TASK, help="the task whose models pyserini.encode encodes (part 1)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--passages", type=int, default=128, help="passages encoded per timed pass")
    parser.add_argument("--batch-size", type=int, default=32, help="encoding batch size (pyserini.encode's flag)")
    parser.add_argument("--max-length", type=int, default=256, help="passage tokens (pyserini.encode's flag)")
    parser.add_argument("--repeats", type=int, default=2, help="timed encoding passes (median reported)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per method (median reported)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the .json, .md and .png files")
    args = parser.parse_args(argv)
    if args.quick:
        args.passages, args.repeats, args.steps = min(args.passages, args.batch_size), min(args.repeats, 2), 1
    variants = args.variants.split(",")
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not TASKS[args.task].pyserini:  # Task.pyserini: its encode gives the one vector per text Faiss indexes
        encoders = ", ".join(name for name, task in TASKS.items() if task.pyserini)
        parser.error(f"--task {args.task}: pyserini.encode cannot index its models in Faiss; choose {encoders}")

    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()  # one "Loading weights" bar per model otherwise
    loads = {"at start": load_average()}
    texts, source = passages(args.passages)
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/efficiency.py", *(argv if argv is not None else sys.argv[1:])]),
        "backbone": args.backbone,
        "machine": machine(args.threads, ("torch", "transformers", "pyserini")),
        "load_average_1min": loads,
    }
    print(
        f"encoding: {len(texts)} passages ({source}), batch {args.batch_size}, max_length {args.max_length}; "
        f"{args.threads} threads, load average {loads['at start']:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="efficiency-") as scratch:
        backbone_dir = resolve_backbone(args.backbone)
        encoders = {
            REFERENCE: pyserini_encoder(backbone_dir, args.max_length),
            REFERENCE_INFERENCE: pyserini_encoder(backbone_dir, args.max_length, inference_mode=True),
        }
        for variant in variants:
            directory = variant_model(TASKS[args.task].model, args.backbone, variant).save(Path(scratch) / variant)
            encoders[variant] = pyserini_encoder(directory, args.max_length)
        rows = encoding_throughput(encoders, texts, args.batch_size, args.repeats)
        del encoders
    for name, row in rows.items():
        row["overhead_vs_inference_mode_pct"] = overhead_pct(row, rows[REFERENCE_INFERENCE])
        row["overhead_vs_pyserini_pct"] = overhead_pct(row, rows[REFERENCE])
        print(
            f"  {name:<28} {row['passages_per_second']:7.1f} passages/s   "
            f"{row['overhead_vs_inference_mode_pct']:+6.1f} % vs inference_mode backbone   "
            f"{row['overhead_vs_pyserini_pct']:+6.1f} % vs Pyserini-as-is backbone",
            flush=True,
        )
    results["encoding"] = {
        "data": source,
        "passages": len(texts),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "rows": rows,
    }
    loads["after encoding"] = load_average()

    results["training"] = {"steps": args.steps, "tasks": {}}
    for task, (task_class, options, queries, group_size) in study_training().items():
        groups, source = training_groups(queries, group_size)
        results["training"]["data"] = source
        print(f"training {task}: {queries} queries x {group_size} passages ({source})", flush=True)
        models = {variant: variant_model(task_class, args.backbone, variant, **options) for variant in variants}
        rows = training_costs(models, groups, args.steps)
        del models
        full = rows.get(REFERENCE_METHOD)
        for name, row in rows.items():
            row["step_time_vs_full"] = row["step_seconds"] / full["step_seconds"] if full else float("nan")
            row["memory_vs_full"] = row["total_bytes"] / full["total_bytes"] if full else float("nan")
            print(
                f"  {name:<22} {row['step_seconds']:6.2f} s/step   activations {mb(row['activation_bytes']):7.1f} MB"
                f"   params+grads+AdamW {mb(row['total_bytes'] - row['activation_bytes']):7.1f} MB   "
                f"total {100 * row['memory_vs_full']:5.1f} % of full",
                flush=True,
            )
        shown = ", ".join(f"{name} {value}" for name, value in options.items())
        setting = f"{queries} queries x (1 positive + {group_size - 1} negatives) passages, {shown}"
        results["training"]["tasks"][task] = {
            "queries": queries,
            "group_size": group_size,
            "setting": setting,
            "rows": rows,
        }
    loads["at end"] = load_average()

    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{STEM}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.output / f"{STEM}.md")
    plot_throughput(results, args.output / f"{STEM}-throughput.png")
    plot_training(results, args.output / f"{STEM}-training.png")
    print(f"wrote {args.output / STEM}.{{json,md}}, {STEM}-throughput.png, {STEM}-training.png")


if __name__ == "__main__":
    main()
