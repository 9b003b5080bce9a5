"""A run directory: its layout, what may start a run in it, the readers of the files the trainer writes there, and
the environment its summary.json records.

``OUTPUT/`` holds ``model/`` (the trained model), ``checkpoint/`` (the state ``--resume`` continues), ``metrics.jsonl``
(loss, learning rate and dev checks), ``summary.json`` (written when the run finishes), ``tensorboard/`` and, while
the learning-rate ladder runs, ``ladder/`` and ``ladder.json``. The trainer (:mod:`petir.trainer`), the ladder
(:mod:`petir.ladder`), the CLIs and the readers above them all take the names from here.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petir import __version__
from petir.data import read_json, require_fields
from petir.errors import PetirError
from petir.files import check_output, foreign_entries, listing, recover_directory, unrecorded

CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
BOARD_DIR = "tensorboard"
LADDER_DIR = "ladder"  # the learning-rate ladder's rungs, each a run directory (petir.ladder), while it runs
LADDER_FILE = "ladder.json"  # the ladder's result: each rung's rate and dev check, and the picked rate
#: What a run writes in its directory, each file recorded as it is written (petir.files.MANIFEST): --overwrite
#: deletes the recorded files, and nothing else, a user's file in model/ or tensorboard/ included.
RUN_OUTPUTS = (MODEL_DIR, CHECKPOINT_DIR, METRICS_FILE, SUMMARY_FILE, BOARD_DIR, LADDER_DIR, LADDER_FILE)
#: The folders a run replaces whole, by rename: one holding a file petir did not write is refused, not replaced.
SWAPPED_DIRS = (MODEL_DIR, CHECKPOINT_DIR)

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


#: The libraries whose versions a run's numbers depend on (kernels, tokenization, module init), recorded in
#: summary.json: the same seed on other versions, or on a CPU whose kernels differ, can take another path.
RECORDED_LIBRARIES = ("torch", "transformers", "tokenizers", "peft")


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """The installed versions of distributions ``names`` (``None``: not installed): what a run or a benchmark
    records beside its numbers."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, str | None]:
    """What a run ran with: petir's and :data:`RECORDED_LIBRARIES`' versions (``None``: not installed) and the
    vector instructions torch's CPU kernels use (``AVX2``, ``AVX512``; they choose the kernels, so the rounding)."""
    import torch  # here, not at the top: the readers above (petir.reproduce's tables) never load torch for this

    return {
        "petir": __version__,
        **package_versions(RECORDED_LIBRARIES),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
