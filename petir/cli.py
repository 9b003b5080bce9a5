"""Shared plumbing for petir's ``python -m petir.<tool>`` commands."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from petir.errors import PetirError


class UsageError(SystemExit):
    """A user error's exit: status 2, as argparse exits on a bad flag; ``message`` is the line printed on stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a CLI ``main`` so that user errors end as one line on stderr with exit status 2 (130 when interrupted,
    as shells report Ctrl-C)."""
    prog = _prog_name()
    try:
        main(argv)
    except PetirError as error:
        message = f"{prog}: error: {error}"
        print(message, file=sys.stderr)
        raise UsageError(message) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _prog_name() -> str:
    import __main__

    spec = getattr(__main__, "__spec__", None)
    return f"python -m {spec.name}" if spec is not None else "petir"


def add_overwrite_flag(parser: argparse.ArgumentParser, replaces: str) -> None:
    """``--overwrite``: the one way to let a CLI replace an existing output; ``replaces`` says exactly what it
    replaces (without it, petir refuses with one line)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {replaces} (without it: refused)")


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) picks CUDA when present, else CPU; anything else is passed through to torch."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PetirError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return device


def flags(**options: object) -> list[str]:
    """``flags(batch_size=8, output=path)`` -> ``["--batch-size", "8", "--output", "path"]``."""
    return [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the hand-wrapped examples in descriptions."""


def default_threads() -> int:
    """Threads for one job: ``$OMP_NUM_THREADS`` where set, else the cores not busy with other work (the CPU count
    less the 1-minute load average, at least 1). On 2 shared cores, 2 threads against another job ran training 3x
    and Faiss search 22x slower than 1 thread did."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - round(os.getloadavg()[0]))


def use_threads(threads: int) -> None:
    """Run this process's torch work on ``threads`` threads, and any child process (Pyserini, Faiss) on as many."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


class _LogLines:
    """A file for tqdm that turns its carriage-return redraws into whole lines, so a log file shows progress as it
    happens instead of one line written when the bar ends."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Any = None, **kwargs: Any):
    """A tqdm bar on a terminal; off a terminal (output in a file), a progress line every 30 seconds."""
    from tqdm.auto import tqdm

    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return tqdm(iterable, file=_LogLines(sys.stderr), mininterval=30, maxinterval=60, ascii=True, **kwargs)


def option(default: Any, help: str, choices: tuple[str, ...] | None = None, flag: str | None = None) -> Any:
    """A dataclass field that is also a CLI flag: its default, ``--help`` text and choices live here alone
    (:func:`add_dataclass_flags`). ``flag`` overrides the flag's name (``--lr`` for ``learning_rate``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


def add_dataclass_flags(group: Any, options_class: type) -> list[str]:
    """One flag per :func:`option` field of ``options_class`` (``--field-name``; a bool is a switch); returns the
    field names, which are the parsed arguments' names."""
    hints = typing.get_type_hints(options_class)
    names = []
    for field in dataclasses.fields(options_class):
        if "help" not in field.metadata:
            continue  # not a CLI option (set by the program)
        flag = field.metadata["flag"] or f"--{field.name.replace('_', '-')}"
        kind = next(t for t in typing.get_args(hints[field.name]) or (hints[field.name],) if t is not type(None))
        common = {"dest": field.name, "default": field.default, "help": field.metadata["help"]}
        if kind is bool:
            group.add_argument(flag, action="store_true", **common)
        else:
            group.add_argument(flag, type=kind, choices=field.metadata["choices"], **common)
        names.append(field.name)
    return names


def dataclass_values(options_class: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of ``options_class``'s :func:`option` fields (the flags :func:`add_dataclass_flags` made)."""
    return {
        field.name: getattr(args, field.name) for field in dataclasses.fields(options_class) if "help" in field.metadata
    }
