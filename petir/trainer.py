"""The one training loop, for every task and PET method.

It knows nothing about retrieval: a :class:`~petir.models.PetModel` turns sampled groups into a batch
(``collate``) and a batch into a loss (``forward``); an optional ``evaluate`` callable gives dev metrics.

What it guarantees:

- progress on a tqdm bar; loss, learning rate and dev metrics as JSON lines in ``metrics.jsonl``;
- checkpoints written atomically (a crash mid-write keeps the previous one), also on Ctrl-C or SIGTERM, and stored
  as data only (safetensors + JSON): a checkpoint received from someone else cannot run code on ``--resume``;
- a run never replaces what it did not write (:func:`check_run_directory`): a finished run or a foreign directory
  is refused unless ``overwrite=True`` (``--overwrite``) says to start over;
- ``resume=True`` continues exactly: batches depend only on (seed, step) and the optimizer, scheduler and RNG
  states are restored, so an interrupted and resumed run ends with the same weights as an uninterrupted one;
- CPU, one GPU, or several GPUs / CPU processes launched with ``torchrun`` (DistributedDataParallel).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from petir.cli import DEVICES, Bounded, device_flag, option, progress, resolve_device, say
from petir.data import read_json, require_fields
from petir.distributed import barrier, init_distributed
from petir.errors import PetirError
from petir.files import (
    check_output,
    foreign_entries,
    listing,
    output_lock,
    record_written,
    recover_directory,
    remove_written,
    space_checked,
    staged_directory,
    unrecorded,
    write_json_atomic,
    write_lines_atomic,
)
from petir.models import PetModel
from petir.sampling import GroupSampler

CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
BOARD_DIR = "tensorboard"
LADDER_DIR = "ladder"  # the learning-rate ladder's rungs, each a run directory (petir.ladder), while it runs
LADDER_FILE = "ladder.json"  # the ladder's result: each rung's rate and dev check, and the picked rate
TRAINER_STATE = "trainer_state.json"  # the checkpoint's counters, states and RNG states; tensors by reference
TRAINER_TENSORS = "trainer_state.safetensors"  # the tensors TRAINER_STATE refers to
LEGACY_TRAINER_STATE = "trainer_state.pt"  # older petir's pickle: refused, as unpickling can run code
#: What a run writes in its directory, each file recorded as it is written (petir.files.MANIFEST): --overwrite
#: deletes the recorded files, and nothing else, a user's file in model/ or tensorboard/ included.
RUN_OUTPUTS = (MODEL_DIR, CHECKPOINT_DIR, METRICS_FILE, SUMMARY_FILE, BOARD_DIR, LADDER_DIR, LADDER_FILE)
#: The folders a run replaces whole, by rename: one holding a file petir did not write is refused, not replaced.
SWAPPED_DIRS = (MODEL_DIR, CHECKPOINT_DIR)


class DivergedError(PetirError):
    """Training went non-finite (loss, gradient or dev check): the run stops, saving nothing new. ``symptom``:
    what went non-finite, and at which step."""

    def __init__(self, message: str, symptom: str):
        super().__init__(message)
        self.symptom = symptom


TENSORBOARD_MISSING = "tensorboard needs the tensorboard package: pip install tensorboard"


def report_target(text: str) -> str:
    """``--report-to``'s value, refused as the flag is parsed when its package is missing: the writer is opened
    only after data loading and model set-up, a minute and a half into a run on SciFact."""
    if text == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise argparse.ArgumentTypeError(TENSORBOARD_MISSING)
    return text


@dataclass
class TrainConfig:
    """Optimisation settings; each :func:`~petir.cli.option` field is also a ``petir.train`` flag. The sampler's
    batch size is queries per micro-batch and rank; the effective batch is ``batch_size * grad_accumulation *
    world_size``."""

    output_dir: Path
    steps: int = option(300, "optimizer steps (with --patience, the most)", bounds=Bounded(int, minimum=1))
    learning_rate: float | None = option(
        None,
        "learning rate; without it a ladder of rates (the method's default, listed below, times 1/F, 1 and F: "
        "--lr-factor) is tried on dev, highest first, within --lr-search-share of the steps, and the full run trains "
        "at the first not significantly below the untrained start (without a dev set: the method's default)",
        flag="--lr",
        bounds=Bounded(float, above=0),
    )
    #: The study's sweeps (docs/results.md): the dev-picked rate was 3x the default for IAA-L and full fine-tuning.
    lr_factor: float = option(
        3.0,
        "the ladder's rates: the method's default times 1/F, 1 and F",
        bounds=Bounded(float, minimum=1.5, maximum=10),
    )
    lr_search_share: float = option(
        0.3,
        "share of --steps the ladder's three rungs take together: each is a whole short run at its rate (its own "
        "warm-up and decay), tried highest first; the first not significantly below the start on dev is taken",
        bounds=Bounded(float, above=0, maximum=0.9),
    )
    grad_accumulation: int = option(1, "micro-batches per optimizer step", bounds=Bounded(int, minimum=1))
    warmup_ratio: float = option(0.1, "linear warm-up share of the steps", bounds=Bounded(float, 0, 1))
    weight_decay: float = option(0.01, "AdamW weight decay", bounds=Bounded(float, minimum=0))
    max_grad_norm: float = option(1.0, "gradient norm clipping", bounds=Bounded(float, above=0))
    eval_every: int = option(
        50, "dev evaluation interval in steps (0: at the end only)", bounds=Bounded(int, minimum=0)
    )
    #: One BEIR set's 1,300-passage dev pool cost 146 s a check, more than training itself at an interval of 15 steps.
    eval_budget: float = option(
        0.25,
        "most share of training time that dev checks may take; scheduled checks past it are skipped (the first "
        "and final ones always run)",
        bounds=Bounded(float, minimum=0),  # above 1 is fine: dev checks may take longer than the training steps
    )
    keep_best: bool = option(
        True,
        "save the state of the dev check with the highest first dev metric (nDCG@10), not the last step's; the "
        "untrained start (step 0) is a candidate, so the saved model is never worse on dev than the backbone it "
        "started from (ties go to the earlier step); --no-keep-best saves the last step's",
    )
    #: Off by default until runs show it helps (docs/training.md, "Training length"): IAA-L at retrieval kept gaining
    #: on dev up to step 400 of 600 where the default trains 150 (issue 35), so the length is a lever, not a constant.
    patience: int = option(
        0,
        "stop once this many dev checks in a row have not beaten the best one, which --keep-best saves: the training "
        "length picked on dev, with --steps as its cap (the learning-rate schedule decays over the cap); 0: train "
        "all --steps",
        bounds=Bounded(int, minimum=0),
    )
    save_every: int = option(100, "checkpoint interval in steps", bounds=Bounded(int, minimum=1))
    log_every: int = option(10, "loss logging interval in steps", bounds=Bounded(int, minimum=1))
    report_to: str = option(
        "none",
        "also log loss, learning rate and dev metrics for TensorBoard (OUTPUT/tensorboard; pip install tensorboard)",
        ("none", "tensorboard"),
        parse=report_target,
    )
    device: str = option("auto", DEVICES, parse=device_flag)
    bf16: bool = option(False, "bfloat16 autocast (Ampere or newer GPUs, CPUs with bf16 support); the first choice")
    fp16: bool = option(False, "float16 autocast with a gradient scaler, for GPUs without bf16 (V100, T4)")
    gradient_checkpointing: bool = option(
        False,
        "recompute each layer's activations in the backward pass: about a third more compute for far less "
        "activation memory (long passages, big batches)",
    )
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in summary.json (argv, task)


@dataclass
class DevCheck:
    """What a dev check gives: its metrics (the first one, nDCG@10, picks the kept state and the learning rate) and,
    where the evaluator has them, the first metric's value per dev query, in a fixed query order: what its standard
    error and the paired standard error of a gain are computed from."""

    metrics: dict[str, float]
    per_query: list[float] | None = None


def dev_noise(check: DevCheck, start: DevCheck | None) -> dict[str, float]:
    """The noise of ``check``'s first metric: its standard error over the dev queries (``dev_se``) and, against the
    ``start`` check (step 0) of the same queries, the gain and its paired standard error (``gain``, ``gain_se``).
    Empty without per-query values (fewer than two queries have no spread to measure)."""
    values = np.asarray(check.per_query or [], dtype=float)
    if len(values) < 2:
        return {}
    noise = {"dev_se": round(float(values.std(ddof=1) / np.sqrt(len(values))), 4)}
    if start is not None and start.per_query is not None and len(start.per_query) == len(values):
        gains = values - np.asarray(start.per_query, dtype=float)
        noise["gain"] = round(float(gains.mean()), 4)
        noise["gain_se"] = round(float(gains.std(ddof=1) / np.sqrt(len(gains))), 4)
    return noise


def describe_noise(noise: dict[str, float]) -> str:
    """``noise`` (:func:`dev_noise`) for a progress line: ``± 0.0310 SE, gain over step 0 +0.0120 ± 0.0050``."""
    text = f" ± {noise['dev_se']:.4f} SE" if "dev_se" in noise else ""
    if "gain" in noise:
        text += f", gain over step 0 {noise['gain']:+.4f} ± {noise['gain_se']:.4f}"
    return text


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch; call before building the model so PET modules initialise reproducibly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: GPU memory allocated by torch on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class Trainer:
    def __init__(
        self,
        model: PetModel,
        sampler: GroupSampler,
        config: TrainConfig,
        evaluate: Callable[[PetModel], DevCheck | dict[str, float]] | None = None,
        start: DevCheck | None = None,
    ):
        """``start``: the step-0 dev check of this very start, made by an earlier trainer (the learning-rate
        ladder's first rung: every rung starts from the same weights), used instead of checking again."""
        self.config = config
        self.output = Path(config.output_dir)
        self.sampler = sampler
        self.evaluate = evaluate
        self.rank, self.world_size, local_rank = init_distributed(config.device)
        device = resolve_device(config.device)
        if device.startswith("cuda") and self.world_size > 1:
            device = f"cuda:{local_rank}"  # one GPU per process, whichever cuda device was named
            torch.cuda.set_device(device)  # NCCL's object collectives (the gathered batch's ids) use this device
        self.device = torch.device(device)
        if config.bf16 and config.fp16:
            raise PetirError("--bf16 and --fp16 exclude each other; pick one (bf16 where the hardware has it)")
        check_patience(config, evaluate is not None)
        self.model = model.to(self.device)
        if config.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.fp16)  # float16 gradients underflow
        self.trained = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        from transformers import get_linear_schedule_with_warmup  # deferred: transformers is slow to import

        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(config.warmup_ratio * config.steps), config.steps
        )
        self.step = 0
        self.elapsed = 0.0  # training time in seconds: optimizer steps only, dev checks excluded
        self.dev_seconds = 0.0  # time spent in dev checks, over the whole run
        self._last_check_seconds = 0.0
        self._warned_budget = False
        self._dev_step: int | None = None  # the step of the latest dev check
        self._last_record: dict[str, Any] | None = None  # the latest dev check's metrics and noise
        self.best: dict[str, Any] | None = None  # --keep-best: step, dev metrics, their first value, state
        self.start = start  # the step-0 dev check: what a gain is measured against
        self._board: Any = None  # the TensorBoard writer, while training

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- the loop ----------------------------------------------------------------------------------------------
    def train(self, resume: bool = False, overwrite: bool = False, rung: bool = False) -> dict[str, Any]:
        """Train to ``config.steps``; returns the summary also written to ``summary.json``. ``resume`` continues
        from the checkpoint in the output directory; ``overwrite`` deletes the files earlier runs recorded writing
        there and starts over (see :func:`check_run_directory`). ``rung``: the run is a rung of the learning-rate
        ladder (:mod:`petir.ladder`): it ends with a dev check and a checkpoint, and returns that check's record
        (``dev``, its noise, and the step-0 check as ``start``) instead of a summary. Rank 0 holds the output's
        lock (:func:`~petir.files.output_lock`) throughout: a second writer of the directory is refused."""
        with output_lock(self.output, directory=True) if self.is_main else nullcontext():
            return self._train(resume, overwrite, rung)

    def _train(self, resume: bool, overwrite: bool, rung: bool) -> dict[str, Any]:
        check_run_directory(self.output, resume, overwrite)  # every rank sees the same directory: all raise or none
        barrier(self.world_size)  # no rank writes before every rank has looked
        if overwrite and self.is_main:
            remove_written(self.output)
        barrier(self.world_size)
        self.output.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load_checkpoint()
        self._truncate_log()
        self._board = self._open_board()
        if self.step == 0 and (self.config.eval_every or self.config.keep_best or rung):
            self._evaluate()  # the starting point of the dev curve, and a candidate for --keep-best
        self.model.train()
        started = time.perf_counter() - self.elapsed
        dev_before = self.dev_seconds
        desc = f"lr {self.config.learning_rate:g} rung" if rung else "training"
        bar = progress(total=self.config.steps, initial=self.step, desc=desc, disable=not self.is_main)
        window: list[float] = []
        with _StopRequest() as stop:
            try:
                while self.step < self.config.steps:
                    window.append(self._optimizer_step())
                    self.step += 1
                    self.elapsed = time.perf_counter() - started - (self.dev_seconds - dev_before)
                    bar.update(1)
                    bar.set_postfix(loss=f"{window[-1]:.4f}", refresh=False)  # off a terminal: no line per step
                    if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                        self._log(loss=float(np.mean(window)), lr=self.scheduler.get_last_lr()[0])
                        window = []
                    if self._agree(self._check_due()):  # rank 0 times the checks; every rank must join
                        self._evaluate()
                        if self._agree(self._out_of_patience()):
                            break
                    if self._agree(stop.requested):
                        self._save_checkpoint()
                        raise PetirError(
                            f"interrupted at step {self.step}; checkpoint saved in {self.output / CHECKPOINT_DIR}, "
                            "run the same command with --resume to continue"
                        )
                    if self.step % self.config.save_every == 0:
                        self._save_checkpoint()
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, mid-step, without a checkpoint
                raise PetirError(
                    f"stopped during step {self.step + 1} without a checkpoint; --resume continues from the last "
                    f"one in {self.output / CHECKPOINT_DIR}, if any"
                ) from None
            finally:
                bar.close()
        if rung:
            return self._end_rung()
        final_dev = None
        if self.evaluate is not None and self._dev_step != self.step:
            final_dev = self._evaluate()
        return self._finish(final_dev)

    def _end_rung(self) -> dict[str, Any]:
        """End a ladder rung: its dev check, then a checkpoint (an interrupted ladder finds the rung done)."""
        record = self._last_record if self._dev_step == self.step else None
        if record is None:
            self._evaluate(candidate=False)
            record = self._last_record
        self._save_checkpoint()
        start = asdict(self.start) if self.start is not None else None
        cost = {"train_s": round(self.elapsed, 2), "dev_s": round(self.dev_seconds, 2)}  # what the rung took
        return {**(record or {}), **cost, "start": start}

    def _check_due(self) -> bool:
        """A scheduled dev check runs unless it would take dev checks past ``eval_budget`` of the training time
        (estimated from the last check's duration); the final step's check always runs (after the loop)."""
        if not self.config.eval_every or self.step % self.config.eval_every or self.step == self.config.steps:
            return False
        if not self.is_main:
            return False  # rank 0 alone times the checks; its answer reaches every rank through _agree
        if self.dev_seconds + self._last_check_seconds <= self.config.eval_budget * self.elapsed:
            return True
        if not self._warned_budget and self.evaluate is not None:
            self._warned_budget = True
            say(
                f"dev checks so far took {self.dev_seconds:.0f} s, {self._share()} of training time: skipping "
                f"checks that would pass {self.config.eval_budget:.0%} (--eval-budget), the final one still runs"
            )
        return False

    def _out_of_patience(self) -> bool:
        """--patience: the last ``patience`` dev checks (rank 0's, read from the log, so a resumed run counts the
        checks before its checkpoint) have not beaten the best one."""
        if not self.config.patience or self.best is None:
            return False
        since_best = [record for record in self._dev_records() if record["step"] > self.best["step"]]
        if len(since_best) < self.config.patience:
            return False
        say(
            f"dev has not beaten step {self.best['step']}'s check in {len(since_best)} checks (--patience "
            f"{self.config.patience}): stopping at step {self.step} of at most {self.config.steps}"
        )
        return True

    def _share(self) -> str:
        return f"{100 * self.dev_seconds / self.elapsed:.0f} %" if self.elapsed else "all"

    def _optimizer_step(self) -> float:
        accumulation = self.config.grad_accumulation
        losses = []
        for micro in range(accumulation):
            index = (self.step * accumulation + micro) * self.world_size + self.rank
            batch = self.model.collate(self.sampler.groups(index))
            sync = micro == accumulation - 1 or self.world_size == 1
            with _maybe_no_sync(self.trained, sync), self._autocast():
                loss = self.trained(batch) / accumulation
            self.scaler.scale(loss).backward()
            losses.append(loss.item())
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        # fp16: an overflowed gradient is the scaler's to skip; a non-finite loss is divergence in every precision
        finite = math.isfinite(sum(losses)) and (self.config.fp16 or bool(torch.isfinite(norm)))
        if self._agree(not finite):
            raise self._diverged("the loss" if not math.isfinite(sum(losses)) else "the gradient", self.step + 1)
        self.scaler.step(self.optimizer)  # skipped, and the scale lowered, if fp16 gradients overflowed
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(sum(losses))

    def _autocast(self):
        dtype = torch.float16 if self.config.fp16 else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.config.bf16 or self.config.fp16)

    def _agree(self, flag: bool) -> bool:
        """True on every rank if it is true on any (a stop request reaches ranks at different steps)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _evaluate(self, candidate: bool = True) -> dict[str, float] | None:
        """A dev check (rank 0), logged with its noise; ``candidate``: it may become the --keep-best state."""
        metrics = None
        self._dev_step = self.step
        self._last_record = None
        if self.is_main and self.evaluate is not None:
            started = time.perf_counter()
            shared = self.step == 0 and self.start is not None
            if shared:
                check = self.start  # the same start was checked by an earlier trainer: not again
            else:
                self.model.eval()
                result = self.evaluate(self.model)
                self.model.train()
                check = result if isinstance(result, DevCheck) else DevCheck(result)
            if self.step == 0:
                self.start = check
            metrics = check.metrics
            if not all(math.isfinite(value) for value in metrics.values()):
                raise self._diverged(f"the dev check ({metrics})", self.step)
            self._last_check_seconds = time.perf_counter() - started
            self.dev_seconds += self._last_check_seconds
            noise = dev_noise(check, self.start if self.step else None)
            if candidate:
                self._remember_if_best(metrics, noise)
            self._last_record = {"dev": metrics, **noise}
            self._log(**self._last_record, dev_check_s=round(self._last_check_seconds, 2))
            say(
                f"dev at step 0: {metrics}{describe_noise(noise)}, the check shared by every rung"
                if shared
                else f"dev at step {self.step}: {metrics}{describe_noise(noise)} in {self._last_check_seconds:.1f} s; "
                f"dev checks so far {self.dev_seconds:.0f} s ({self._share()} of {self.elapsed:.0f} s training)"
            )
        barrier(self.world_size)
        return metrics

    def _diverged(self, what: str, step: int) -> DivergedError:
        """The error that ends a run gone non-finite: nothing of it is saved, the last checkpoint is kept."""
        kept = self.output / CHECKPOINT_DIR
        symptom = f"{what} at step {step} is not finite"
        return DivergedError(
            f"{symptom}: training diverged, likely because the learning rate {self.config.learning_rate:g} is too "
            "high; nothing of this run was saved"
            + (f" (the last good checkpoint is kept in {kept})" if kept.is_dir() else "")
            + "; rerun with a lower --lr",
            symptom,
        )

    def _remember_if_best(self, metrics: dict[str, float], noise: dict[str, float]) -> None:
        """--keep-best: keep a copy of the trained tensors when the first dev metric beats every earlier check."""
        if not self.config.keep_best or not metrics:
            return
        value = next(iter(metrics.values()))
        if self.best is None or value > self.best["value"]:
            state = {name: tensor.to("cpu", copy=True) for name, tensor in self.model.trainable_state_dict().items()}
            self.best = {"step": self.step, "dev": metrics, "value": value, "state": state, "noise": noise}

    def _finish(self, final_dev: dict[str, float] | None) -> dict[str, Any]:
        dev_records = self._dev_records()
        if self.best is not None:  # rank 0 alone evaluates, keeps and saves
            self.model.load_trainable_state_dict(self.best["state"])
        summary = {
            "steps": self.step,
            "wall_time_s": round(self.elapsed, 2),  # training only: optimizer steps, dev checks excluded
            "dev_time_s": round(self.dev_seconds, 2),
            "dev_checks": len(dev_records),
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "device": str(self.device),
            "world_size": self.world_size,
            "parameters": self.model.parameter_report(),
            "final_dev": final_dev or (dev_records[-1]["dev"] if dev_records else None),
            # --keep-best: the dev check whose state was saved, with its noise (None: the last step's state was)
            "kept": (
                {"step": self.best["step"], "dev": self.best["dev"], **self.best.get("noise", {})}
                if self.best is not None
                else None
            ),
            "final_dev_se": dev_records[-1].get("dev_se") if dev_records else None,
            "improved": None if self.best is None else self.best["step"] > 0 or self.step == 0,
            "stopped_by_patience": self.step < self.config.steps,  # --patience ended the run before the cap
            "lr_ladder": self.config.extra.get("lr_ladder"),
            "config": {
                **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.config).items()},
                "batch_size": self.sampler.batch_size,
                "negatives": self.sampler.negatives,
                "seed": self.sampler.seed,
            },
        }
        if self.is_main:  # a model/ already there is this run's own, saved before a kill (check_run_directory)
            extra = self.config.extra
            training = {**summary, "argv": extra.get("argv", []), "dataset": extra.get("dataset")}
            self.model.save(self.output / MODEL_DIR, training=training, replace=True)
            record_written(self.output, self.output / MODEL_DIR, self.output / SUMMARY_FILE)
            write_json_atomic(self.output / SUMMARY_FILE, summary)
        if self._board is not None:
            self._board.close()
        barrier(self.world_size)
        return summary

    # -- logging -----------------------------------------------------------------------------------------------
    def _log(self, **record: Any) -> None:
        if self.is_main:
            with space_checked(self.output / METRICS_FILE), open(self.output / METRICS_FILE, "a") as log:
                log.write(json.dumps({"step": self.step, "elapsed_s": round(self.elapsed, 2), **record}) + "\n")
        if self._board is not None:
            scalars = {f"train/{k}": v for k, v in record.items() if k in ("loss", "lr")}
            scalars.update({f"dev/{k}": v for k, v in (record.get("dev") or {}).items()})
            for tag, value in scalars.items():
                self._board.add_scalar(tag, value, self.step)
            self._board.flush()

    def _open_board(self) -> Any:
        """A TensorBoard writer (``--report-to tensorboard``) on rank 0; events past the resumed step are purged."""
        if self.config.report_to != "tensorboard" or not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PetirError(f"--report-to {TENSORBOARD_MISSING}") from None
        board = self.output / BOARD_DIR
        before = set(board.iterdir()) if board.is_dir() else set()
        writer = SummaryWriter(str(board), purge_step=self.step)  # creates its event file now
        record_written(self.output, *(set(board.iterdir()) - before))
        return writer

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint we resume from (or all, on a fresh start), rewriting the
        log by rename (a kill meanwhile keeps the old one whole). The final dev check is made after the last
        checkpoint, so a run resumed at its last step makes it again: its earlier record is dropped too."""
        path = self.output / METRICS_FILE
        if not self.is_main:
            return
        record_written(self.output, path)
        if not path.exists():
            return
        final = self.step == self.config.steps
        kept = [
            record
            for record in read_metrics(path)
            if record["step"] < self.step or record["step"] == self.step and not (final and "dev" in record)
        ]
        write_lines_atomic(path, [json.dumps(record) + "\n" for record in kept])

    def _dev_records(self) -> list[dict[str, Any]]:
        path = self.output / METRICS_FILE
        return [record for record in read_metrics(path) if "dev" in record] if path.exists() else []

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        """Called on every rank: each rank's RNG state is gathered, rank 0 writes."""
        rng_states = [_rng_state()]
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            dist.all_gather_object(rng_states, _rng_state())
        if self.is_main:
            self._write_checkpoint(rng_states)
        barrier(self.world_size)

    def _write_checkpoint(self, rng_states: list[dict[str, Any]]) -> None:
        with staged_directory(self.output / CHECKPOINT_DIR, replace=True) as staging:
            self.model.save(staging / MODEL_DIR)
            state = {
                "step": self.step,
                "elapsed": self.elapsed,
                "dev_seconds": self.dev_seconds,
                "last_check_seconds": self._last_check_seconds,
                "start": asdict(self.start) if self.start is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_states,
                "best": self.best,
            }
            write_trainer_state(staging, state)
            files = [path.relative_to(staging) for path in staging.rglob("*") if path.is_file()]
            record_written(self.output, *(self.output / CHECKPOINT_DIR / file for file in files))  # before the swap

    def _load_checkpoint(self) -> None:
        directory = recover_directory(self.output / CHECKPOINT_DIR)
        state = read_trainer_state(directory)
        if state["step"] > self.config.steps:
            raise PetirError(
                f"--resume: the checkpoint in {directory} is at step {state['step']}, past --steps "
                f"{self.config.steps}; resume with the --steps of the run that wrote it, or start over with --overwrite"
            )
        self.model.restore(directory / MODEL_DIR)
        if len(state["rng"]) != self.world_size:
            raise PetirError(
                f"--resume: the checkpoint was written by {len(state['rng'])} processes, this run has "
                f"{self.world_size}; resume with the same number of processes"
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            _check_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"][self.rank])
            self.start = DevCheck(**state["start"]) if state.get("start") else self.start
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            raise PetirError(
                f"{directory / TRAINER_STATE} and {TRAINER_TENSORS}: the checkpoint is damaged or does not fit this "
                f"run ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); resume with the "
                "command that wrote it, or start over with --overwrite"
            ) from None
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.dev_seconds = state.get("dev_seconds", 0.0)
        self._last_check_seconds = state.get("last_check_seconds", 0.0)
        self.best = state.get("best")


def check_patience(config: TrainConfig, has_dev_set: bool | None = None) -> None:
    """Refuse a ``--patience`` that could never stop a run, or would save a state it did not pick. ``has_dev_set``
    None: not known yet (petir.train checks the flags before it loads the data)."""
    if not config.patience:
        return
    if has_dev_set is False:
        raise PetirError("--patience counts dev checks, and this run has no dev set; drop --patience")
    if not config.eval_every:
        raise PetirError(
            "--patience counts dev checks, and --eval-every 0 makes none before the end: give --eval-every"
        )
    if not config.keep_best:
        raise PetirError(
            "--patience stops after the best dev check and --keep-best saves it; with --no-keep-best the saved state "
            "would be the last, --patience checks past the best: drop one of them"
        )


def _check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Raise ValueError unless every per-parameter state tensor is a finite float, of its parameter's shape or a
    scalar (a step count): a damaged checkpoint would otherwise fail mid-step, or go on training on NaN."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.dim() and value.shape != parameter.shape:
                    raise ValueError(f"optimizer {name} of shape {tuple(value.shape)} for {tuple(parameter.shape)}")
                if not value.is_floating_point() or not torch.isfinite(value).all():
                    raise ValueError(f"optimizer {name} is not a finite float tensor")


#: The fields of a metrics.jsonl record, with their JSON types: every record has a step, a training record its
#: loss, a dev check its metrics.
METRICS_FIELDS = {"step": int, "loss": float, "dev": dict}
#: The fields of summary.json that readers use (petir.reproduce's result rows), with their JSON types.
SUMMARY_FIELDS = {"wall_time_s": float, "peak_memory_mb": float, "parameters": dict}


def check_run_directory(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, in one line, a run that would replace what it did not write. ``output`` may be new or empty; with
    ``resume`` it must hold a checkpoint (one a kill left mid-swap is recovered); otherwise anything in it (a finished
    run, an unfinished one, the logs of one stopped before its first checkpoint, foreign files) is refused unless
    ``overwrite``, which starts over: the trainer then deletes the files runs recorded writing there
    (:func:`~petir.files.remove_written`), and refuses, before deleting anything, a file of someone else's in a
    folder it replaces whole (:data:`SWAPPED_DIRS`)."""
    check_output(output, directory=True)
    if resume and overwrite:
        raise PetirError("--resume continues the run in --output and --overwrite starts it over; pass one of them")
    foreign = [name for folder in SWAPPED_DIRS for name in unrecorded(output, folder)] if overwrite else []
    if foreign:
        raise PetirError(
            f"--overwrite: {output / foreign[0]} is not among the files petir recorded writing (yours, or an older "
            "petir's) and its folder is replaced whole; move it out"
            f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}, or pick a new --output"
        )
    recover_directory(output / CHECKPOINT_DIR)
    has_checkpoint = (output / CHECKPOINT_DIR).is_dir() or (output / LADDER_DIR).is_dir()  # a ladder: rungs
    if resume:
        if not has_checkpoint:
            raise PetirError(f"--resume: no checkpoint in {output / CHECKPOINT_DIR}; start without --resume")
        return
    found = foreign_entries(output)
    if not found or overwrite:
        return
    replaced = "--overwrite to start over (it deletes the files petir wrote there, nothing else)"
    if SUMMARY_FILE in found:
        raise PetirError(f"{output} holds a finished run ({SUMMARY_FILE}); pick a new --output, or pass {replaced}")
    if has_checkpoint:
        raise PetirError(
            f"{output} already holds a run; pass --resume to continue it, or {replaced}, or pick a new --output"
        )
    if set(found) <= {METRICS_FILE, BOARD_DIR}:  # what a run writes before its first checkpoint
        raise PetirError(
            f"{output} holds the files of a run stopped before its first checkpoint ({', '.join(found)}); pass "
            f"{replaced}, or pick a new --output"
        )
    raise PetirError(
        f"{output} is not empty ({listing(found)}) and holds no petir run; "
        f"pick a new or empty --output, or pass --overwrite to write the run beside those files (they are kept)"
    )


def resumable(output: Path) -> bool:
    """Whether ``output`` holds a checkpoint that ``--resume`` continues (recovering one a kill left mid-swap), or
    an unfinished learning-rate ladder."""
    return recover_directory(Path(output) / CHECKPOINT_DIR).is_dir() or (Path(output) / LADDER_DIR).is_dir()


# -- checkpoint files: data only, so loading cannot run code ---------------------------------------------------
#: The single-key objects that stand for what JSON has no type for; a dict using one of these keys itself is stored
#: as items, so reading back is unambiguous.
_TENSOR, _ARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"


def write_trainer_state(directory: Path, state: dict[str, Any]) -> None:
    """Write a trainer state (optimizer, scheduler, scaler and RNG states, kept-best tensors: nested dicts, lists,
    tuples, numbers, strings, tensors, NumPy arrays) as JSON plus a safetensors file of its tensors. Everything
    round-trips exactly: floats through their repr, tuples and non-string keys through marker objects."""
    tensors: dict[str, torch.Tensor] = {}
    document = _encode(state, tensors)
    from safetensors.torch import save_file

    save_file(tensors, directory / TRAINER_TENSORS)
    (directory / TRAINER_STATE).write_text(json.dumps(document) + "\n")


def read_trainer_state(directory: Path) -> dict[str, Any]:
    """The trainer state in checkpoint ``directory`` (the one reader of :data:`TRAINER_STATE` and
    :data:`TRAINER_TENSORS`); a damaged or missing file, or an older petir's pickle (never unpickled), is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (directory / TRAINER_STATE).exists() and (directory / LEGACY_TRAINER_STATE).exists():
        raise PetirError(
            f"{directory / LEGACY_TRAINER_STATE}: a checkpoint of an older petir, stored as a pickle, which petir no "
            "longer loads because unpickling can run code; start the run over with --overwrite, or finish it with "
            "the petir version that wrote it"
        )
    path = directory / TRAINER_STATE
    try:
        document = json.loads(path.read_text())
        path = directory / TRAINER_TENSORS
        tensors = load_file(path)
        path = directory / TRAINER_STATE
        state = _decode(document, tensors)
        if not _is_trainer_state(state):
            raise ValueError("not a trainer state")
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError, SafetensorError) as error:
        raise PetirError(
            f"{path}: cannot read the checkpoint ({type(error).__name__}); it is damaged: remove {directory} to start "
            "over"
        ) from None
    return state


def _is_trainer_state(state: Any) -> bool:
    """The shape :meth:`Trainer._load_checkpoint` relies on (the optimizer, scheduler and RNG states are checked
    by their own loaders)."""
    if not isinstance(state, dict) or not {"step", "elapsed", "optimizer", "scheduler", "rng"} <= set(state):
        return False
    best = state.get("best")
    return (
        isinstance(state["step"], int)
        and isinstance(state["elapsed"], int | float)
        and isinstance(state["rng"], list)
        and all(isinstance(rng, dict) for rng in state["rng"])
        and (best is None or isinstance(best, dict) and {"step", "dev", "value", "state"} <= set(best))
    )


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu").contiguous()
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):  # NumPy's RNG state; stored as its raw bytes
        key = str(len(tensors))
        tensors[key] = torch.frombuffer(bytearray(np.ascontiguousarray(value).tobytes()), dtype=torch.uint8)
        return {_ARRAY: key, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and not {_TENSOR, _ARRAY, _TUPLE, _ITEMS} & set(value):
            return {key: _encode(item, tensors) for key, item in value.items()}
        return {_ITEMS: [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a trainer state cannot hold {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {_TENSOR}:
        return tensors[value[_TENSOR]]
    if set(value) == {_ARRAY, "dtype", "shape"}:
        raw = tensors[value[_ARRAY]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if set(value) == {_TUPLE}:
        return tuple(_decode(item, tensors) for item in value[_TUPLE])
    if set(value) == {_ITEMS}:
        return {_decode(key, tensors): _decode(item, tensors) for key, item in value[_ITEMS]}
    return {key: _decode(item, tensors) for key, item in value.items()}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (the one reader of the file the trainer writes). A last line without its
    newline is a record torn by a crash mid-append and is dropped; any other bad line is an error."""
    remedy = "remove it and rerun the training"
    try:
        text = Path(path).read_text()
        lines = text.split("\n")
        if lines[-1].strip():  # no final newline: written up to a crash
            lines = lines[:-1]
        records = [(number, json.loads(line)) for number, line in enumerate(lines, 1) if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PetirError(f"{path}: not a petir metrics log ({error}); {remedy}") from None
    for number, record in records:
        if not isinstance(record, dict):
            raise PetirError(f"{path}:{number}: not a petir metrics log (a record is a JSON object); {remedy}")
        fields = {name: kind for name, kind in METRICS_FIELDS.items() if name == "step" or name in record}
        require_fields(record, fields, f"{path}:{number}: not a petir metrics log:", remedy)
    return [record for _, record in records]


def read_summary(path: Path) -> dict[str, Any]:
    """A finished run's ``summary.json`` (the one reader of the file the trainer writes), with its
    :data:`SUMMARY_FIELDS`."""
    remedy = f"train {Path(path).parent} again, which writes it when the training finishes"
    summary = read_json(path, "training summary", remedy, SUMMARY_FIELDS)
    require_fields(summary["parameters"], {"trainable": int, "percent": float}, f"{path}: parameters", remedy)
    checks = [summary.get("final_dev"), (summary.get("kept") or {}).get("dev")]
    values = [value for check in checks if isinstance(check, dict) for value in check.values()]
    if not all(isinstance(value, int | float) and math.isfinite(value) for value in values):
        raise PetirError(
            f"{path}: its dev check is not finite ({checks[0]}): the run diverged and is no finished run; "
            f"{remedy} with a lower --lr and --overwrite"
        )
    return summary


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current optimizer step, so the checkpoint it then
    writes is consistent; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\npetir: stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)


def _maybe_no_sync(module: torch.nn.Module, sync: bool):
    return nullcontext() if sync else module.no_sync()
