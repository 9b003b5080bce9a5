"""glibc malloc settings for petir's training processes: keep the memory a step frees for the next step.

glibc serves every block above its mmap threshold with a fresh ``mmap`` and unmaps it on free, and gives the top of
its heap back to the kernel past a small trim threshold; a training step allocates and frees its activations (one to
tens of MB each on MiniLM) every step, so the kernel page-faults and zeroes them again each time. Measured here on
2 cores, a re-ranker's training process spent up to a sixth of its CPU time in the kernel, and its steps took 9-12 %
longer than with the settings below (``benchmarks/allocator.py``, docs/results/allocator.md). PyTorch's CPU tuning
guide suggests another allocator (jemalloc, tcmalloc) through ``LD_PRELOAD`` for the same reason; these settings
need nothing installed.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's own names: the ``mallopt`` parameter and its environment variable (read when a process starts), and the
#: value petir sets. 32 MiB is the largest mmap threshold glibc takes on 64-bit systems.
SETTINGS = {
    "M_MMAP_THRESHOLD": (-3, "MALLOC_MMAP_THRESHOLD_", 32 << 20),
    "M_TRIM_THRESHOLD": (-1, "MALLOC_TRIM_THRESHOLD_", 1 << 30),
    "M_TOP_PAD": (-2, "MALLOC_TOP_PAD_", 256 << 20),
}
#: ``PETIR_MALLOC=default`` leaves glibc's defaults (to compare, or where memory is tighter than time).
OPT_OUT = "PETIR_MALLOC"


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` to this process (``mallopt``) and to the processes it starts (the environment), so
    freed blocks are reused instead of unmapped. Changes nothing where the user chose: ``PETIR_MALLOC=default``, a
    ``MALLOC_*`` variable, or another allocator through ``LD_PRELOAD``; nor off Linux's glibc. Numbers are unchanged:
    only where blocks come from. Returns whether the settings were applied."""
    chosen = os.environ.get(OPT_OUT) == "default" or "LD_PRELOAD" in os.environ
    if chosen or any(name.startswith("MALLOC_") for name in os.environ) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries: no glibc mallopt
        return False
    if not all(mallopt(parameter, value) == 1 for parameter, _, value in SETTINGS.values()):
        return False
    os.environ.update({variable: str(value) for _, variable, value in SETTINGS.values()})
    return True
