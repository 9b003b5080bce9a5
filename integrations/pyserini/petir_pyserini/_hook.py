"""The start-up hook behind ``petir_pyserini.pth``: act when Pyserini is imported, and not before.

A meta-path finder wraps the loaders of two modules:

- ``pyserini`` (before it runs): choose a JDK >= 21, because Pyserini starts its JVM while being imported, and,
  under ``python -m pyserini...``, end a petir error in one line (exit status 2) as petir's own commands do;
- ``pyserini.encode`` (after it runs): register petir's encoders (:func:`petir_pyserini.register`);
- ``pyserini.search.lucene._impact_searcher`` (after it runs): let impact search encode queries with a petir
  sparse retriever (:func:`petir_pyserini._encoders.register_impact_searcher`).

Nothing heavier than ``importlib`` is imported at interpreter start.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable
from types import ModuleType


def _before_pyserini(module: ModuleType) -> None:
    _choose_java()
    command = _pyserini_command()
    if command is not None:
        _petir_errors_in_one_line(command)


def _choose_java() -> None:
    from petir.errors import PetirError
    from petir.java import ensure_java

    try:
        ensure_java()
    except PetirError as error:  # Pyserini will fail with its own error next; say why first
        print(f"petir: {error}", file=sys.stderr)


def _pyserini_command() -> str | None:
    """``python -m pyserini.X``'s module, when that is how this interpreter was started (else None: a program that
    imports Pyserini keeps its own error handling)."""
    argv = getattr(sys, "orig_argv", [])
    if "-m" not in argv[:-1]:
        return None
    module = argv[argv.index("-m") + 1]  # the interpreter's own -m comes first (trec_eval's -m options after it)
    return module if module.split(".")[0] == "pyserini" else None


def _petir_errors_in_one_line(command: str) -> None:
    """Under a stock Pyserini command, a petir error (a damaged model directory, a retriever of the wrong task)
    ends as under petir's own commands: one line on stderr, exit status 2. Any other error keeps its traceback."""
    previous = sys.excepthook

    def excepthook(kind, error, traceback) -> None:
        from petir.errors import PetirError

        if not issubclass(kind, PetirError):
            previous(kind, error, traceback)
            return
        print(f"python -m {command}: error: {error}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)  # an uncaught exception would exit 1; what is left to shut down is Pyserini's JVM

    sys.excepthook = excepthook


def _register(module: ModuleType) -> None:
    from petir_pyserini import register

    register()


def _register_impact(module: ModuleType) -> None:
    from petir_pyserini._encoders import register_impact_searcher

    register_impact_searcher(module.LuceneImpactSearcher)


#: module name -> (run before the module's code, run after it)
_ACTIONS: dict[str, tuple[Callable[[ModuleType], None] | None, Callable[[ModuleType], None] | None]] = {
    "pyserini": (_before_pyserini, None),
    "pyserini.encode": (None, _register),
    "pyserini.search.lucene._impact_searcher": (None, _register_impact),
}


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, name: str):
        self._loader = loader
        self._before, self._after = _ACTIONS[name]

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if self._before:
            self._before(module)
        self._loader.exec_module(module)
        if self._after:
            self._after(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _ACTIONS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


_enabled = os.environ.get("PETIR_PYSERINI_HOOK", "1") != "0"
if _enabled and not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
