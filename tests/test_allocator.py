"""petir.allocator: training processes keep freed memory for the next step, unless the user chose their allocator."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from petir.allocator import OPT_OUT, SETTINGS, keep_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def no_allocator_choice(monkeypatch):
    """An environment with no allocator setting, restored after the test (keep_freed_memory writes to it)."""
    for name in [*(variable for _, variable, _ in SETTINGS.values()), OPT_OUT, "LD_PRELOAD"]:
        monkeypatch.setenv(name, "")  # recorded, so the test's own writes are undone
        monkeypatch.delenv(name)
    for name in [name for name in os.environ if name.startswith("MALLOC_")]:
        monkeypatch.delenv(name)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only: elsewhere keep_freed_memory changes nothing")
def test_the_settings_apply_here_and_reach_the_processes_started(no_allocator_choice):
    assert keep_freed_memory()
    child = [sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_THRESHOLD_'])"]
    assert subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip() == str(32 << 20)
    assert not keep_freed_memory()  # a petir process started by one finds them set, and leaves them


@pytest.mark.parametrize(("name", "value"), [(OPT_OUT, "default"), ("MALLOC_ARENA_MAX", "2"), ("LD_PRELOAD", "x.so")])
def test_a_users_own_allocator_choice_is_left_alone(no_allocator_choice, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert not keep_freed_memory()
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
