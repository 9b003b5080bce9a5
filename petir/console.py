"""The ``petir-<tool>`` console scripts (setup.cfg's entry points): each runs ``python -m petir.<tool>``.

One entry function for all of them: the script's own name says which CLI it is, so a new CLI needs one line in
setup.cfg (tests/test_packaging.py checks that every CLI has its script).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from petir import cli

#: What every console script's name starts with: ``petir-train`` runs ``petir.train``.
PREFIX = "petir-"


def script_name(module: str) -> str:
    """``petir.train`` -> ``petir-train`` (a CLI in a subpackage, ``petir.study.x``, is ``petir-study-x``)."""
    return PREFIX + module.removeprefix("petir.").replace(".", "-")


def module_name(script: str) -> str:
    """``petir-train`` (or its path, or ``petir-train.exe`` on Windows) -> ``petir.train``."""
    name = Path(script).name.removesuffix(".exe").removesuffix("-script.py")
    return "petir." + name.removeprefix(PREFIX).replace("-", ".")


def console_script() -> None:
    """The entry point of every ``petir-<tool>`` script: that CLI's ``main`` as ``python -m`` runs it (one line and
    exit status 2 on a user error, 130 when interrupted)."""
    cli.run(importlib.import_module(module_name(sys.argv[0])).main)
