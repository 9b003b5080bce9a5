"""Shared plumbing for petir's ``python -m petir.<tool>`` commands."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from petir import __version__
from petir.errors import PetirError

T = TypeVar("T")


class UsageError(SystemExit):
    """A user error's exit: status 2, as argparse exits on a bad flag; ``message`` is the line printed on stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a CLI ``main`` so that user errors end as one line on stderr with exit status 2 (130 when interrupted,
    as shells report Ctrl-C)."""
    prog = _prog_name()
    pace_other_progress_bars()
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
    """The command as the user typed it, which every error line starts with: ``python -m petir.train``, ``python
    benchmarks/seen_passages.py`` or the ``petir-train`` console script."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None:
        return f"python -m {spec.name}"
    script = sys.argv[0] if sys.argv else ""
    return f"python {script}" if script.endswith(".py") else Path(script).name or "petir"


def add_overwrite_flag(parser: argparse.ArgumentParser, replaces: str) -> None:
    """``--overwrite``: the one way to let a CLI replace an existing output; ``replaces`` says exactly what it
    replaces (without it, petir refuses with one line)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {replaces} (without it: refused)")


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) picks CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked
    against what torch sees here, and anything else is refused, in one line, not by torch mid-run."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise PetirError(f"--device {device} is no device; use {DEVICES}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PetirError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
        count = torch.cuda.device_count()
        if int(device.partition(":")[2] or 0) >= count:
            raise PetirError(f"--device {device}: torch sees {count} GPU(s) here, cuda:0 to cuda:{count - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise PetirError("--device mps asked for an Apple GPU, but torch sees none here; use --device cpu")
    return device


def device_flag(text: str) -> str:
    """``--device``'s parser: the device checked (:func:`resolve_device`) as the command line is read, kept as
    written (``auto`` stays ``auto``)."""
    try:
        resolve_device(text)
    except PetirError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--device ")) from None
    return text


def flags(**options: object) -> list[str]:
    """``flags(batch_size=8, output=path)`` -> ``["--batch-size", "8", "--output", "path"]``."""
    return [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Show defaults and declared ranges, and keep the hand-wrapped examples in descriptions.

    A default is shown where it says something: not on a required flag, a switch that is off, a flag that is unset
    unless given (None, an empty list), nor where the help already states the default as a rule (``(default: the
    idle cores)``), which argparse would follow with the value of the moment."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _shows_default(action, text):
            text += " (default: %(default)s)"
        return f"{text} [{action.type.description}]" if isinstance(action.type, Bounded) else text


def _shows_default(action: argparse.Action, text: str) -> bool:
    unset = action.default is None or action.default is False or action.default == []
    said = "%(default)" in text or "(default" in text
    return bool(action.option_strings) and not (action.required or unset or said or action.default == argparse.SUPPRESS)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every petir command: a bad flag or value ends as one line on stderr with exit status 2, as
    petir's other user errors do (:func:`run`), not argparse's usage dump; ``--help`` is unchanged."""

    def __init__(self, *args: Any, formatter_class: type = HelpFormatter, **kwargs: Any):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        self.add_argument("--version", action="version", version=f"petir {__version__}")

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {message} (see --help)"
        print(line, file=sys.stderr)
        raise UsageError(line)


class Bounded:
    """A number type with a declared range: an argparse ``type=`` (a bad value is an ``argument --flag: must be
    an integer >= 1, got 0`` error at parse time) and, in :func:`option` or a PET config field's metadata
    (``bounds``), the check of values from anywhere else (:meth:`parse`).

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones (a learning rate is
    ``Bounded(float, above=0)``); at most one of each side. NaN and infinities are never in range.
    """

    def __init__(
        self,
        kind: type[int] | type[float],
        minimum: float | None = None,
        maximum: float | None = None,
        *,
        above: float | None = None,
        below: float | None = None,
    ):
        if kind not in (int, float) or None not in (minimum, above) or None not in (maximum, below):
            raise ValueError("Bounded needs kind int or float and one bound a side at most (minimum or above...)")
        self.kind, self.minimum, self.maximum, self.above, self.below = kind, minimum, maximum, above, below

    @property
    def description(self) -> str:
        """What a value must be: ``an integer >= 1``, ``a number > 0``, ``an integer from 14 to 20``."""
        what = "an integer" if self.kind is int else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {self._show(self.minimum)} to {self._show(self.maximum)}"
        limits = [
            f"{sign} {self._show(value)}"
            for sign, value in ((">=", self.minimum), (">", self.above), ("<=", self.maximum), ("<", self.below))
            if value is not None
        ]
        return " and ".join([f"{what} {limits[0]}", *limits[1:]]) if limits else what

    def _show(self, bound: float) -> str:
        return str(int(bound)) if self.kind is int else f"{bound:g}"

    def parse(self, value: object) -> int | float:
        """``value`` (a command-line string, or a number from a saved JSON file) as ``kind``, in range; else a
        ValueError ``must be <description>, got <value>``."""
        number = self._convert(value)
        if number is None or not self._in_range(number):
            raise ValueError(f"must be {self.description}, got {value if number is not None else repr(value)}")
        return number

    def __call__(self, text: str) -> int | float:
        try:
            return self.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    def __repr__(self) -> str:  # argparse names the type in some messages; --help never shows it
        return f"Bounded({self.description})"

    def _convert(self, value: object) -> int | float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                return self.kind(value)
            except ValueError:
                return None
        if isinstance(value, int) or (self.kind is float and isinstance(value, float)):
            return self.kind(value)
        return None  # a float for an integer (2.5 would be cut to 2), a list, None...

    def _in_range(self, number: float) -> bool:
        return (
            math.isfinite(number)
            and (self.minimum is None or number >= self.minimum)
            and (self.above is None or number > self.above)
            and (self.maximum is None or number <= self.maximum)
            and (self.below is None or number < self.below)
        )


#: ``--threads``' word for :func:`default_threads`, the flag's default.
AUTO_THREADS = "auto"


def parse_threads(text: str) -> int:
    """``--threads``' value: an integer >= 1, or ``auto`` (:data:`AUTO_THREADS`): :func:`default_threads`. The
    default is the word, so argparse computes it only when a run parses it, never for ``--help``, which shows the
    rule rather than a sample of the moment."""
    return default_threads() if text == AUTO_THREADS else THREADS(text)


def threads_option(what: str) -> Any:
    """The ``--threads`` field of an options dataclass, ``what`` saying what the threads run: one rule, one help."""
    return option(
        AUTO_THREADS, f"{what}: a number >= 1, or auto: $OMP_NUM_THREADS, else the idle cores", parse=parse_threads
    )


#: Seeds of Python, NumPy and torch (:func:`petir.trainer.set_seed`): NumPy takes 0 to 2**32 - 1.
SEED = Bounded(int, minimum=0, maximum=2**32 - 1)
#: A thread count given as a number (:func:`parse_threads`).
THREADS = Bounded(int, minimum=1)


#: Where Linux counts each CPU's busy and idle time; :func:`default_threads` samples it twice.
PROC_STAT = Path("/proc/stat")
#: How long :func:`default_threads` watches the CPUs: many scheduler ticks (10 ms each), yet short at start-up.
SAMPLE_SECONDS = 0.3


def default_threads() -> int:
    """Threads for one job: ``$OMP_NUM_THREADS`` where set, else the cores idle now (:func:`idle_threads` over a
    :data:`SAMPLE_SECONDS` sample of ``/proc/stat``, taken once per process). The 1-minute load average this replaced
    lags: a job started just after another ended took 1 thread on 2 idle cores for its whole run. Too many threads
    cost more than too few: on 2 cores shared with another job, 2 threads ran training 3x and Faiss search 22x
    slower than 1 thread did."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return _idle_now()


@functools.cache  # every parser build calls default_threads(); one sample per process is enough
def _idle_now() -> int:
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        before = PROC_STAT.read_text()
        time.sleep(SAMPLE_SECONDS)
        after = PROC_STAT.read_text()
    except OSError:  # not Linux: the load average where the system keeps one, else every core
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(1, len(cpus) - round(load))
    return idle_threads(before, after, cpus)


def idle_threads(before: str, after: str, cpus: Collection[int]) -> int:
    """The cores of ``cpus`` (this process's, by number) not busy between two ``/proc/stat`` texts: ``len(cpus)``
    less the busy share of each CPU between the samples, summed and rounded half up; at least 1. Waiting for I/O
    counts as idle; a CPU missing from the samples counts as idle."""
    first, second = _cpu_ticks(before), _cpu_ticks(after)
    busy = 0.0
    for cpu in set(cpus) & first.keys() & second.keys():
        idle, total = (now - then for now, then in zip(second[cpu], first[cpu], strict=True))
        busy += 1 - idle / total if total > 0 else 0.0
    return max(1, len(cpus) - math.floor(busy + 0.5))


def _cpu_ticks(stat: str) -> dict[int, tuple[int, int]]:
    """``cpuN user nice system idle iowait irq softirq steal guest guest_nice`` lines -> N: (idle + iowait ticks,
    ticks of the first eight fields; guest time is already inside user)."""
    ticks = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            counts = [int(value) for value in fields[:8]]
            ticks[int(name[3:])] = (counts[3] + counts[4], sum(counts))
    return ticks


def use_threads(threads: int | None = None) -> int:
    """Run this process's torch work on ``threads`` threads (None: :func:`default_threads`), and any child process
    (Pyserini, Faiss) on as many; returns the number used."""
    import torch

    threads = threads if threads is not None else default_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


#: Terminal control sequences (a cursor move up, ESC[A, is how tqdm redraws nested bars): never in a log.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _LogLines:
    """A file for one tqdm bar off a terminal: each redraw becomes one whole line, so a log file shows progress as it
    happens instead of one line written when the bar ends; cursor moves are dropped, and a redraw that shows
    nothing new (the bar redrawn after a message, or refreshed while idle) writes nothing."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = _ESCAPES.sub("", text.replace("\r", "")).strip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


#: tqdm's settings off a terminal: a line every 30 seconds at most, plain characters, and every bar on its own line
#: (position 0: a nested bar on a terminal is drawn by moving the cursor, which a log file would keep as ESC[A).
LOG_BAR = {"mininterval": 30, "maxinterval": 60, "ascii": True, "position": 0}


def pace_other_progress_bars() -> None:
    """Off a terminal, make the tqdm bars that petir does not draw (Pyserini's encoders and searches, in this process
    or the commands it starts, as petir.reproduce does) redraw at :data:`LOG_BAR`'s pace too, not ten times a
    second into a log; tqdm takes ``$TQDM_MININTERVAL`` as its default, and a value already set is kept."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_BAR["mininterval"]))


def progress(iterable: Any = None, **kwargs: Any):
    """Every progress bar of petir (tqdm's arguments): a tqdm bar on a terminal; off a terminal (stderr in a file),
    a progress line every 30 seconds (:data:`LOG_BAR`), whatever the caller asked for its redraws."""
    from tqdm.auto import tqdm

    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return tqdm(iterable, file=_LogLines(sys.stderr), **{**kwargs, **LOG_BAR})


def say(message: str) -> None:
    """A ``petir: message`` line on stderr that does not break a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(f"petir: {message}", file=sys.stderr)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks a training loop (:mod:`petir.trainer`) to stop after the current optimizer
    step, so the checkpoint it then writes is consistent; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
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


@dataclasses.dataclass(frozen=True)
class Computed:
    """An option's choices computed when a parser is built, not at import: the PET methods registered by then."""

    compute: Callable[[], Any]


def option(
    default: Any,
    help: str,
    choices: Collection[str] | Computed | None = None,
    flag: str | None = None,
    bounds: Bounded | None = None,
    *,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field that is also a CLI flag: its default, ``--help`` text, choices and range (``bounds``, for a
    number) live here alone (:func:`add_dataclass_flags`). ``flag`` overrides the flag's name (``--lr`` for
    ``learning_rate``); ``parse`` turns the flag's text into the value where the field's type cannot (a
    comma-separated list), and then a text default is the flag's as written (``--help`` shows it) and parsed for the
    field's (``--threads``: ``auto``, :func:`parse_threads`). A list default makes a repeatable flag (each use
    appends)."""
    metadata = {"help": help, "choices": choices, "flag": flag, "bounds": bounds, "metavar": metavar, "parse": parse}
    if parse is not None and isinstance(default, str):
        return dataclasses.field(default_factory=lambda: parse(default), metadata={**metadata, "text": default})
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_dataclass_flags(group: Any, options_class: type) -> list[str]:
    """One flag per :func:`option` field of ``options_class`` (``--field-name``; a bool is a switch, with
    ``--no-field-name`` where it is on by default; a list a repeatable flag); returns the field names, which are
    the parsed arguments' names."""
    hints = typing.get_type_hints(options_class)
    names = []
    for field in dataclasses.fields(options_class):
        if "help" not in field.metadata:
            continue  # not a CLI option (set by the program)
        metadata = field.metadata
        flag = metadata["flag"] or f"--{field.name.replace('_', '-')}"
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        default = metadata.get("text", default)  # argparse parses a text default as it parses the flag
        common = {"dest": field.name, "default": default, "help": metadata["help"]}
        if metadata["metavar"] is not None:
            common["metavar"] = metadata["metavar"]
        hint = hints[field.name]
        kind = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
        choices = metadata["choices"]
        choices = choices.compute() if isinstance(choices, Computed) else choices
        if kind is bool:  # a switch; one on by default also gets its --no-FLAG
            group.add_argument(flag, action=argparse.BooleanOptionalAction if default else "store_true", **common)
        elif typing.get_origin(hint) is list and metadata["parse"] is None:
            group.add_argument(flag, action="append", type=kind, choices=choices, **common)
        else:
            kind = metadata["parse"] or metadata["bounds"] or kind
            group.add_argument(flag, type=kind, choices=choices, **common)
        names.append(field.name)
    return names


def dataclass_values(options_class: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of ``options_class``'s :func:`option` fields (the flags :func:`add_dataclass_flags` made)."""
    return {
        field.name: getattr(args, field.name) for field in dataclasses.fields(options_class) if "help" in field.metadata
    }


def from_args(options_class: type[T], args: argparse.Namespace, **others: Any) -> T:
    """``options_class`` made from its parsed flags (:func:`add_dataclass_flags`), plus ``others``: the fields that
    are no flag (set by the program)."""
    return options_class(**dataclass_values(options_class, args), **others)
