"""petir.cli, the plumbing every ``python -m petir.<tool>`` shares: each CLI answers --help and --version, its help
shows defaults as rules, progress off a terminal is plain lines, and the default thread count follows the cores
that are idle."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import types

import pytest

import petir
from conftest import cli_modules, run_cli
from petir import cli
from petir.errors import PetirError

CLIS = cli_modules()


@pytest.mark.slow  # a fresh interpreter per CLI: up to 10 s each where torch is imported
@pytest.mark.parametrize("module", sorted(CLIS))
def test_every_cli_has_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "usage: python -m " + module in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("module", sorted(CLIS))
def test_every_cli_prints_its_version(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        CLIS[module].main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"petir {petir.__version__}\n"


@pytest.mark.parametrize("module", sorted(CLIS))
def test_help_shows_defaults_only_where_they_say_something(module):
    """No ``(default: None)`` on a required or unset flag, no ``(default: False)`` on a switch, and no value after a
    help text that states its default as a rule (``--threads``: the idle cores, not the count of the moment)."""
    for action in CLIS[module].build_parser()._actions:
        text = " ".join(cli.HelpFormatter("prog")._expand_help(action).split()) if action.help else ""
        for shown in ("(default: None)", "(default: [])", "(default: False)"):
            assert shown not in text, f"{module} {action.option_strings}: {text}"
        assert text.count("(default") <= 1, f"{module} {action.option_strings}: {text}"


def test_threads_default_is_the_rule_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli.parse_threads("auto") == 3 and cli.parse_threads("2") == 2
    with pytest.raises(Exception, match="must be an integer >= 1, got 0"):
        cli.parse_threads("0")
    threads = next(a for a in CLIS["petir.train"].build_parser()._actions if a.dest == "threads")
    assert threads.default == "auto"


def test_progress_off_a_terminal_writes_plain_lines(capsys):
    """Nested bars with stderr in a file (capsys: not a terminal): whole lines, no cursor moves (ESC[A), and a redraw
    that shows nothing new writes no second copy of the same line."""
    outer = cli.progress(total=2, desc="outer")
    for _ in range(2):
        inner = cli.progress(total=3, desc="inner", mininterval=0)  # a caller's redraw rate does not apply to logs
        inner.refresh()
        inner.refresh()
        inner.update(3)
        inner.close()
        outer.update(1)
    outer.close()
    lines = capsys.readouterr().err.splitlines()
    assert "\x1b" not in "".join(lines), lines
    assert all(line.strip() == line and line for line in lines), lines
    assert all(first != second for first, second in itertools.pairwise(lines)), lines
    assert lines[-1].startswith("outer: 100%") and sum(line.startswith("inner: 100%") for line in lines) == 2


def test_other_progress_bars_in_a_log_redraw_at_the_log_pace(monkeypatch, capsys, tmp_path):
    """A CLI run with stderr in a file sets $TQDM_MININTERVAL, so a bar of a command it starts (Pyserini's encoder
    under petir.reproduce) writes its first and last state, not one redraw per batch."""
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    cli.run(lambda argv: None, [])
    assert os.environ["TQDM_MININTERVAL"] == str(cli.LOG_BAR["mininterval"])
    bar = "from tqdm import tqdm\nfor _ in tqdm(range(300)): __import__('time').sleep(0.001)"
    child = subprocess.run([sys.executable, "-c", bar], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert child.returncode == 0 and child.stderr.count("\r") <= 3, child.stderr


def proc_stat(*cpus: tuple[int, int, int]) -> str:
    """A /proc/stat text with one ``cpuN`` line per (busy, idle, iowait) tick counts, after the all-CPU line."""
    lines = [f"cpu  {sum(c[0] for c in cpus)} 0 0 {sum(c[1] for c in cpus)} {sum(c[2] for c in cpus)} 0 0 0 0 0"]
    lines += [f"cpu{n} {busy} 0 0 {idle} {iowait} 0 0 0 0 0" for n, (busy, idle, iowait) in enumerate(cpus)]
    return "\n".join([*lines, "intr 1845979 0 0", "ctxt 123", "btime 1700000000", "processes 10"]) + "\n"


BEFORE = proc_stat((1000, 5000, 10), (2000, 4000, 10))


@pytest.mark.parametrize(
    ("after", "cpus", "threads"),
    [
        (proc_stat((1002, 5028, 10), (2001, 4029, 10)), {0, 1}, 2),  # idle: 1-2 busy ticks in 30 per core
        (proc_stat((1030, 5000, 10), (2001, 4029, 10)), {0, 1}, 1),  # a busy loop on core 0
        (proc_stat((1030, 5000, 10), (2030, 4000, 10)), {0, 1}, 1),  # both busy: still 1
        (proc_stat((1015, 5015, 10), (2015, 4015, 10)), {0, 1}, 1),  # two half-busy cores make one busy core
        (proc_stat((1002, 5000, 38), (2001, 4029, 10)), {0, 1}, 2),  # waiting for I/O is idle
        (proc_stat((1030, 5000, 10), (2001, 4029, 10)), {1}, 1),  # confined to core 1, which is idle
        (proc_stat((1030, 5000, 10), (2001, 4029, 10)), {1, 2, 3}, 3),  # cores missing from /proc/stat: idle
    ],
    ids=["idle", "one-busy", "both-busy", "half-busy", "iowait", "affinity", "missing-cpus"],
)
def test_idle_threads_counts_the_cores_busy_between_two_samples(after, cpus, threads):
    assert cli.idle_threads(BEFORE, after, cpus) == threads


@pytest.fixture
def unsampled(monkeypatch):
    """default_threads() with no $OMP_NUM_THREADS, 2 cores of its own and a fresh per-process sample."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1})
    cli._idle_now.cache_clear()
    yield cli
    cli._idle_now.cache_clear()


def test_default_threads_samples_proc_stat_once_per_process(unsampled, tmp_path, monkeypatch):
    stat, sleeps = tmp_path / "stat", []
    stat.write_text(BEFORE)

    def sleep(seconds: float) -> None:  # the other job keeps core 0 busy while we watch
        sleeps.append(seconds)
        stat.write_text(proc_stat((1030, 5000, 10), (2001, 4029, 10)))

    monkeypatch.setattr(unsampled, "PROC_STAT", stat)
    monkeypatch.setattr(unsampled.time, "sleep", sleep)
    assert [unsampled.default_threads() for _ in range(3)] == [1, 1, 1]
    assert sleeps == [unsampled.SAMPLE_SECONDS]
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert unsampled.default_threads() == 5


def test_default_threads_without_proc_stat_uses_the_load_average(unsampled, tmp_path, monkeypatch):
    monkeypatch.setattr(unsampled, "PROC_STAT", tmp_path / "missing")
    monkeypatch.setattr(unsampled.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert unsampled.default_threads() == 1


def test_device_strings_are_checked_as_the_command_line_is_read(capsys, monkeypatch, tmp_path):
    """A device torch would refuse mid-run (or a typo) ends at parse time in one line; auto stays auto."""
    import torch

    from petir.rerank import main as rerank_main
    from petir.train import build_parser as train_parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    paths = [
        item for flag in ("run", "topics", "corpus", "model", "output") for item in (f"--{flag}", str(tmp_path / flag))
    ]
    for argv, message in (
        (["--device", "bogus"], "argument --device: bogus is no device; use auto, cpu, cuda, cuda:N or mps"),
        (["--device", "cuda:1"], "argument --device: cuda:1 asked for CUDA, but torch sees no GPU here"),
    ):
        error = run_cli(rerank_main, [*paths, *argv])
        assert error is not None and message in error and "\n" not in error, error
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--device", "gpu0"])
    assert "gpu0 is no device" in capsys.readouterr().err
    assert cli.resolve_device("cpu") == "cpu" and cli.resolve_device("auto") == "cpu"


@pytest.mark.parametrize(
    ("spec", "script", "prog"),
    [
        ("petir.train", "/x/petir/train.py", "python -m petir.train"),
        (None, "benchmarks/seen_passages.py", "python benchmarks/seen_passages.py"),
        (None, "/venv/bin/petir-train", "petir-train"),
    ],
)
def test_an_error_line_starts_with_the_command_as_typed(spec, script, prog, monkeypatch, capsys):
    """``python -m``, a script and a console script each name themselves, as argparse's own errors do."""
    import __main__

    monkeypatch.setattr(__main__, "__spec__", types.SimpleNamespace(name=spec) if spec else None, raising=False)
    monkeypatch.setattr(sys, "argv", [script])

    def fails(argv):
        raise PetirError("--x is bad")

    with pytest.raises(cli.UsageError):
        cli.run(fails)
    assert capsys.readouterr().err == f"{prog}: error: --x is bad\n"
