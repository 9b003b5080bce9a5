"""GPU check: petir's own training and inference code on one GPU, in a few minutes, with nothing to download.

Meant for a machine that has torch, transformers (and optionally peft/onnxruntime) but no Pyserini, no Java, no
network and no model weights: the backbone is a randomly initialised BERT-base configuration (the paper's size,
110 M parameters) with a synthetic word-piece vocabulary, saved to a temporary directory, and the texts are
synthetic sentences over that vocabulary. Nothing imported here needs Pyserini (checked at the end).

1. **Training**: every registry variant trains a model of ``--task`` (default: a retriever) for ``--steps``
   optimizer steps through petir's ``Trainer`` (bf16 autocast, or fp16 with a gradient scaler where the GPU lacks
   bf16), batch 32 queries x (1 positive + 3 negatives) passages, at the lengths the study trains with (128
   tokens); the loss must be finite. Training queries/s (steps after the first) and peak GPU memory are reported;
   the table in the output compares full fine-tuning, IAA-L and the adapter, the question a GPU user asks first.
2. **CUDA against CPU**: an IAA-L model of every task (trained modules perturbed off zero) computes the same outputs
   (a bi-encoder's vectors, a cross-encoder's scores) on the GPU and on the CPU (fp32, max abs difference <= 1e-3).
3. **Inference throughput**: ``--passages`` items through every task's inference function (256 tokens, batch
   128; a bi-encoder encodes passages, a cross-encoder scores query-passage pairs), fp32 and under bf16 autocast:
   items/s per task, IAA-L against the plain backbone.

Writes a JSON report (``--output``) and prints a Markdown table::

    python benchmarks/gpu_check.py --output docs/results/gpu-check.json     # < 5 minutes on one H100
    python benchmarks/gpu_check.py --tiny --device cpu                        # the CPU smoke test CI runs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petir.backbone import random_backbone
from petir.data import Document
from petir.pet import VARIANTS, get_method, resolve
from petir.run_directory import SUMMARY_FILE
from petir.sampling import GroupSampler, TrainingQuery
from petir.study import STAGES, stage_training
from petir.tasks import DEFAULT_TASK, TASKS, Task
from petir.train_config import TrainConfig
from petir.trainer import Trainer, peak_memory_mb, set_seed

COMPARED = ("full", "adapter", "iaa-l")  # the table's rows: full fine-tuning, the scattered adapter, IAA-L
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_backbone(directory: Path, tiny: bool) -> Path:
    """A random BERT-base (or a 2-layer toy with ``tiny``) and a synthetic vocabulary, saved as a HF directory with a
    masked-LM head (the sparse task's; the other tasks load the encoder alone, the same weights as without)."""
    words = SPECIAL + [f"w{i}" for i in range((1000 if tiny else 30522) - len(SPECIAL))]
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    return random_backbone(directory, words, masked_lm=True, **(shape if tiny else {}))


class Texts:
    """Synthetic sentences over the vocabulary (word pieces ``w0``..): queries ~10 words, passages ~200."""

    def __init__(self, vocabulary: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.vocabulary = vocabulary - len(SPECIAL)

    def __call__(self, words: int) -> str:
        return " ".join(f"w{i}" for i in self.rng.integers(0, self.vocabulary, words))


def training_data(texts: Texts, queries: int) -> tuple[list[TrainingQuery], dict[str, Document]]:
    corpus = {f"d{i}": Document(f"d{i}", "", texts(200)) for i in range(queries * 4)}
    training = [
        TrainingQuery(f"q{i}", texts(10), (f"d{i}",), tuple(f"d{queries + 3 * i + k}" for k in range(3)))
        for i in range(queries)
    ]
    return training, corpus


def precision(device: torch.device) -> dict[str, bool]:
    """bf16 where the GPU (or CPU) has it, else fp16 with a gradient scaler."""
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def study_options(task: Task) -> dict[str, Any]:
    """The model options the study trains ``task`` with; a task the study has no stage for trains with its own
    defaults (the report's ``options`` says which)."""
    return stage_training(task.name)[0] if task.name in STAGES else {}


def train_variant(
    task: Task, backbone: Path, variant: str, data: tuple, steps: int, batch: int, device: torch.device, work: Path
) -> dict[str, Any]:
    method, options = resolve(variant)
    set_seed(1)
    model = task.model(str(backbone), method, options, **study_options(task))
    sampler = GroupSampler(data[0], data[1], batch_size=batch, negatives=3, seed=1)
    config = TrainConfig(
        output_dir=work / variant,
        steps=steps,
        learning_rate=get_method(method).learning_rate,
        eval_every=0,
        save_every=10**9,
        log_every=1,
        device=str(device),
        **precision(device),
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(model, sampler, config)
    started = time.perf_counter()
    times: list[float] = []
    original = trainer._optimizer_step

    def timed_step() -> float:  # per-step wall time, synchronised, so the first (warm-up) step can be left out
        begin = time.perf_counter()
        loss = original()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - begin)
        return loss

    trainer._optimizer_step = timed_step
    summary = trainer.train()
    losses = [json.loads(line).get("loss") for line in (work / variant / "metrics.jsonl").read_text().splitlines()]
    losses = [loss for loss in losses if loss is not None]
    steady = times[1:] or times
    report = json.loads((work / variant / SUMMARY_FILE).read_text())
    result = {
        "trainable": report["parameters"]["trainable"],
        "percent": round(report["parameters"]["percent"], 3),
        "queries_per_s": round(batch * len(steady) / sum(steady), 1),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "final_loss": round(losses[-1], 4),
        "finite": all(math.isfinite(loss) for loss in losses),
        "wall_s": round(time.perf_counter() - started, 1),
        "steps": summary["steps"],
    }
    del trainer, model
    return result


def cuda_matches_cpu(backbone: Path, texts: Texts, device: torch.device) -> dict[str, float]:
    """Max abs difference of every task's IAA-L outputs (a bi-encoder's vectors, a cross-encoder's scores) between
    ``device`` and the CPU (fp32)."""
    method, options = resolve("iaa-l")
    queries, passages = [texts(10) for _ in range(16)], [texts(120) for _ in range(16)]
    differences = {}
    for task in TASKS.values():
        set_seed(2)
        model = task.model(str(backbone), method, options).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter) * 0.02)
        on_cpu = model.to("cpu").outputs(queries, passages, batch_size=8)
        on_device = model.to(device).outputs(queries, passages, batch_size=8)
        differences[task.name] = float(np.abs(on_cpu - on_device).max())
    return differences


def inference_throughput(backbone: Path, texts: Texts, count: int, device: torch.device) -> dict[str, Any]:
    passages, queries = [texts(220) for _ in range(count)], [texts(10) for _ in range(count)]
    results: dict[str, Any] = {}
    for variant in ("full", "iaa-l"):  # full = the plain backbone's arithmetic
        method, options = resolve(variant)
        for task in TASKS.values():
            model = task.model(str(backbone), method, options).to(device).eval()  # 256 tokens: the tasks' default
            for label in ("fp32", "bf16"):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=label == "bf16"):
                    model.outputs(queries[:256], passages[:256], batch_size=128)  # warm-up
                    begin = time.perf_counter()
                    model.outputs(queries, passages, batch_size=128)
                    _sync(device)
                    results.setdefault(f"{variant}/{label}", {})[task.name] = round(
                        count / (time.perf_counter() - begin), 1
                    )
            del model
    return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"GPU check on {report['device_name']} (torch {report['torch']}, {report['precision']}, {report['task']}, "
        f"batch {report['batch']} queries x 4 passages, 128 tokens, {report['steps']} steps)",
        "",
        "| method (**compared**) | trainable % | training queries/s | peak memory (MB; GPU: allocated, CPU: RSS) "
        "| final loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, row in report["training"].items():
        name = f"**{variant}**" if variant in COMPARED else variant
        lines.append(
            f"| {name} | {row['percent']} | {row['queries_per_s']} | {row['peak_memory_mb']} | {row['final_loss']} |"
        )
    header = " | ".join(f"{task} ({TASKS[task].model.graph_output.name})/s" for task in TASKS)
    lines += ["", f"| model / precision | {header} (256 tokens) |", "| --- |" + " ---: |" * len(TASKS)]
    for name, row in report["inference"].items():
        lines.append(f"| {name} | {' | '.join(str(row[task]) for task in TASKS)} |")
    lines += ["", f"CUDA vs CPU max abs difference (IAA-L, fp32): {report['cuda_vs_cpu']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a smoke test)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy backbone instead of BERT-base")
    parser.add_argument("--task", choices=TASKS, default=DEFAULT_TASK, help="the task every variant trains")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated registry variants")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per variant (the first is warm-up)")
    parser.add_argument("--batch-size", type=int, default=32, help="training queries per step")
    parser.add_argument("--passages", type=int, default=4096, help="passages encoded and pairs scored")
    parser.add_argument("--output", type=Path, help="write the JSON report here (and the table beside it, .md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "gpu_check: no GPU visible to torch; use --device cpu for a smoke test\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        backbone = make_backbone(work / "backbone", args.tiny)
        texts = Texts(1000 if args.tiny else 30522)
        data = training_data(texts, max(args.batch_size * 2, 64))
        training = {}
        for variant in args.variants.split(","):
            task = TASKS[args.task]
            training[variant] = train_variant(task, backbone, variant, data, args.steps, args.batch_size, device, work)
            print(f"gpu_check: trained {variant}: {training[variant]}", file=sys.stderr)
        report = {
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            "torch": torch.__version__,
            "precision": "bf16" if precision(device)["bf16"] else "fp16 + grad scaler",
            "backbone": "random 2-layer toy" if args.tiny else "random BERT-base (110 M)",
            "task": args.task,
            "task_options": "the study's" if args.task in STAGES else "the task's defaults (the study has no stage)",
            "batch": args.batch_size,
            "steps": args.steps,
            "training": training,
            "cuda_vs_cpu": cuda_matches_cpu(backbone, texts, device),
            "inference": inference_throughput(backbone, texts, args.passages, device),
            "pyserini_imported": "pyserini" in sys.modules,
        }
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["ok"] = (
        all(row["finite"] for row in training.values())
        and max(report["cuda_vs_cpu"].values()) <= 1e-3
        and not report["pyserini_imported"]
    )
    print(markdown(report))
    print(f"gpu_check: {'OK' if report['ok'] else 'FAILED'} in {report['wall_s']} s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown(report) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
