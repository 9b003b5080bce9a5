"""The one training loop, for every task and PET method.

It knows nothing about retrieval: a :class:`~petir.models.PetModel` turns sampled groups into a batch
(``collate``) and a batch into a loss (``forward``); an optional ``evaluate`` callable gives dev metrics.

What it guarantees:

- progress on a tqdm bar; loss, learning rate and dev metrics as JSON lines in ``metrics.jsonl``;
- checkpoints written atomically (a crash mid-write keeps the previous one), also on Ctrl-C or SIGTERM, and stored
  as data only (safetensors + JSON, :mod:`petir.checkpoint`): a checkpoint received from someone else cannot run
  code on ``--resume``;
- a run never replaces what it did not write (:func:`~petir.run_directory.check_run_directory`): a finished run or a
  foreign directory is refused unless ``overwrite=True`` (``--overwrite``) says to start over;
- ``resume=True`` continues exactly: batches depend only on (seed, step) and the optimizer, scheduler and RNG
  states are restored, so an interrupted and resumed run ends with the same weights as an uninterrupted one;
- CPU, one GPU, or several GPUs / CPU processes launched with ``torchrun`` (DistributedDataParallel).
"""

from __future__ import annotations

import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from petir.checkpoint import read_trainer_state, restore_states, rng_state, write_checkpoint
from petir.cli import StopRequest, progress, resolve_device, say
from petir.dev_check import DevCheck, describe_noise, dev_noise
from petir.distributed import barrier, init_distributed
from petir.errors import PetirError
from petir.files import (
    output_lock,
    record_written,
    recover_directory,
    remove_written,
    space_checked,
    write_json_atomic,
    write_lines_atomic,
)
from petir.models import PetModel
from petir.run_directory import (
    BOARD_DIR,
    CHECKPOINT_DIR,
    METRICS_FILE,
    MODEL_DIR,
    SUMMARY_FILE,
    check_run_directory,
    environment,
    read_metrics,
)
from petir.sampling import GroupSampler
from petir.train_config import TENSORBOARD_MISSING, TrainConfig, check_patience


class DivergedError(PetirError):
    """Training went non-finite (loss, gradient or dev check): the run stops, saving nothing new. ``symptom``:
    what went non-finite, and at which step."""

    def __init__(self, message: str, symptom: str):
        super().__init__(message)
        self.symptom = symptom


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
    def train(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train to ``config.steps``; returns the summary also written to ``summary.json``. ``resume`` continues
        from the checkpoint in the output directory; ``overwrite`` deletes the files earlier runs recorded writing
        there and starts over (see :func:`~petir.run_directory.check_run_directory`). Rank 0 holds the output's
        lock (:func:`~petir.files.output_lock`) throughout: a second writer of the directory is refused."""
        with output_lock(self.output, directory=True) if self.is_main else nullcontext():
            self._loop(resume, overwrite, rung=False)
            final_dev = None
            if self.evaluate is not None and self._dev_step != self.step:
                final_dev = self._evaluate()
            return self._finish(final_dev)

    def train_rung(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train a rung of the learning-rate ladder (:mod:`petir.ladder`), as :meth:`train` trains a run, but
        ending with a dev check and a checkpoint (an interrupted ladder finds the rung done) instead of a model;
        returns that check's record: ``dev``, its noise, what the rung took (``train_s``, ``dev_s``) and the
        step-0 check as ``start``."""
        with output_lock(self.output, directory=True) if self.is_main else nullcontext():
            self._loop(resume, overwrite, rung=True)
            record = self._last_record if self._dev_step == self.step else None
            if record is None:
                self._evaluate(candidate=False)
                record = self._last_record
            self.save_checkpoint()
            start = asdict(self.start) if self.start is not None else None
            cost = {"train_s": round(self.elapsed, 2), "dev_s": round(self.dev_seconds, 2)}  # what the rung took
            return {**(record or {}), **cost, "start": start}

    def _loop(self, resume: bool, overwrite: bool, rung: bool) -> None:
        """The loop, to ``config.steps`` (or --patience); ``rung``: always check dev at step 0."""
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
        with StopRequest() as stop:
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
                        self.save_checkpoint()
                        raise PetirError(
                            f"interrupted at step {self.step}; checkpoint saved in {self.output / CHECKPOINT_DIR}, "
                            "run the same command with --resume to continue"
                        )
                    if self.step % self.config.save_every == 0:
                        self.save_checkpoint()
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, mid-step, without a checkpoint
                raise PetirError(
                    f"stopped during step {self.step + 1} without a checkpoint; --resume continues from the last "
                    f"one in {self.output / CHECKPOINT_DIR}, if any"
                ) from None
            finally:
                bar.close()

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
            "environment": environment(),
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
    def save_checkpoint(self) -> None:
        """Write a checkpoint of the state now in ``OUTPUT/checkpoint``, which ``resume=True`` continues. Called on
        every rank: each rank's RNG state is gathered, rank 0 writes."""
        rng_states = [rng_state()]
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            dist.all_gather_object(rng_states, rng_state())
        if self.is_main:
            self._write_checkpoint(rng_states)
        barrier(self.world_size)

    def _write_checkpoint(self, rng_states: list[dict[str, Any]]) -> None:
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
        write_checkpoint(self.output, self.model, state)

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
        start = restore_states(state, directory, self.optimizer, self.scheduler, self.scaler, self.rank)
        self.start = start or self.start
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.dev_seconds = state.get("dev_seconds", 0.0)
        self._last_check_seconds = state.get("last_check_seconds", 0.0)
        self.best = state.get("best")


def _maybe_no_sync(module: torch.nn.Module, sync: bool):
    return nullcontext() if sync else module.no_sync()
