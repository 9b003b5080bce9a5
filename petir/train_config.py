"""The trainer's settings (:class:`TrainConfig`, each field also a ``petir.train`` flag) and the checks on them that
run before any data is loaded."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petir.cli import DEVICES, Bounded, device_flag, option
from petir.errors import PetirError

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
